"""What tokens would have cost at a price of the price table (an extension on batches and
comparisons; see :mod:`batch_server.models.prices`)."""

from __future__ import annotations

from pydantic import Field

from batch_server.models import prices
from batch_server.openai_types.common import APIObject


class CostEstimate(APIObject):
    reference: str = Field(description="The price table entry used (a model or reference)")
    input_per_1m: float
    output_per_1m: float
    currency: str
    estimated: float = Field(description="input and output tokens at these prices")
    table_date: str = Field(description="The date of the price table's figures")


def estimate(input_tokens: int, output_tokens: int, name: str | None = None) -> CostEstimate | None:
    """The tokens at ``name``'s price (default: the table's reference), or None."""
    found = prices.active().estimate(input_tokens, output_tokens, name)
    return CostEstimate.model_validate(found) if found else None
