"""The price table: what tokens would cost per 1M input and output tokens, by model id of
this server or by a reference name (OpenAI's Batch API prices ship in ``prices.toml``),
with the table's date and source. It gives every batch its ``cost`` ("what this would have
cost") and every comparison the cost of each model's run.

The table a process uses is set once at start (:func:`use`, from
:meth:`~batch_server.app_context.AppContext.build`): ``Batch.from_row`` is called from the
API, the dashboard, history and webhook payloads, none of which hold the settings, and the
status path must stay a single SELECT with no work beyond it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from batch_server.config import Settings

DEFAULT_REFERENCE = "gpt-4o-mini"


@dataclass(frozen=True)
class Price:
    """A price per 1M input and output tokens."""

    input_per_1m: float
    output_per_1m: float
    currency: str = "USD"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return round(
            (input_tokens * self.input_per_1m + output_tokens * self.output_per_1m) / 1e6, 10
        )


@dataclass(frozen=True)
class PriceTable:
    """Prices by name, the reference a batch's estimate uses, and where they come from."""

    prices: dict[str, Price]
    reference: str
    date: str
    source: str

    def get(self, name: str | None) -> Price | None:
        return self.prices.get(name) if name else None

    def estimate(
        self, input_tokens: int, output_tokens: int, name: str | None = None
    ) -> dict[str, Any] | None:
        """The cost of these tokens at ``name``'s price (default: the reference); None
        when the table has no such price."""
        name = name or self.reference
        price = self.get(name)
        if price is None:
            return None
        return {
            "reference": name,
            "input_per_1m": price.input_per_1m,
            "output_per_1m": price.output_per_1m,
            "currency": price.currency,
            "estimated": price.cost(input_tokens, output_tokens),
            "table_date": self.date,
        }


def shipped() -> dict[str, Any]:
    """The table that ships with the package (``prices.toml``)."""
    text = resources.files("batch_server.models").joinpath("prices.toml").read_text("utf-8")
    return tomllib.loads(text)


def build(
    overrides: dict[str, Price] | None = None, reference: str = DEFAULT_REFERENCE
) -> PriceTable:
    """The shipped table with ``overrides`` (new names or changed prices) on top. Raises
    ValueError when ``reference`` has no price, so a typo fails at start."""
    data = shipped()
    currency = data.get("currency", "USD")
    prices = {
        name: Price(float(p["input_per_1m"]), float(p["output_per_1m"]), currency)
        for name, p in data["prices"].items()
    }
    prices.update(overrides or {})
    if reference not in prices:
        raise ValueError(
            f"price_reference {reference!r} is not in the price table "
            f"({', '.join(sorted(prices))}); add it to `prices`"
        )
    source = str(data["source"])
    if overrides:
        source += f"; overridden in the configuration for {', '.join(sorted(overrides))}"
    return PriceTable(prices, reference, str(data["date"]), source)


def from_settings(settings: Settings) -> PriceTable:
    overrides = {
        name: Price(p.input_per_1m, p.output_per_1m, p.currency)
        for name, p in settings.prices.items()
    }
    return build(overrides, settings.price_reference)


_active: PriceTable | None = None


def use(table: PriceTable) -> None:
    """Make ``table`` the one this process prices batches with."""
    global _active
    _active = table


def active() -> PriceTable:
    """The table set by :func:`use`, else the shipped one."""
    global _active
    if _active is None:
        _active = build()
    return _active
