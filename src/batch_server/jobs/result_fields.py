"""What plugins made of a batch's results (``results.fields``, ``plugin_error``,
``ratings``; kept after finalization, unlike the result lines), read in request order, and
the field filters of ``GET /v1/batches/{id}/requests?field=…``.

A filter is ``NAME:VALUE`` (the field equals VALUE: a string field as it is, any other
value as its JSON text, so ``verdict:hire``, ``score:8``, ``passed:true``) or ``NAME>=N``,
``NAME<=N``, ``NAME>N``, ``NAME<N`` (a number field compared with the number N)."""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select

from batch_server.db.session import Database
from batch_server.db.tables import ResultRow

CHUNK = 500

PluginData = tuple[int, dict[str, Any] | None, str | None, dict[str, Any] | None]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_FILTER = re.compile(r"^([^:<>=]+?)\s*(>=|<=|>|<|:)(.*)$", re.DOTALL)


def plugin_data(
    db: Database, batch_id: str, start: int = 0, end: int | None = None
) -> Iterator[PluginData]:
    """``(request index, fields, plugin error, ratings)`` of the batch's results that have
    any, from index ``start`` to before ``end``, in request order."""
    after = start - 1
    while True:
        query = (
            select(
                ResultRow.request_index, ResultRow.fields, ResultRow.plugin_error, ResultRow.ratings
            )
            .where(
                ResultRow.batch_id == batch_id,
                ResultRow.request_index > after,
                or_(
                    ResultRow.fields.is_not(None),
                    ResultRow.plugin_error.is_not(None),
                    ResultRow.ratings.is_not(None),
                ),
            )
            .order_by(ResultRow.request_index)
            .limit(CHUNK)
        )
        if end is not None:
            query = query.where(ResultRow.request_index < end)
        with db.read() as s:
            rows = s.execute(query).all()
        for index, fields, error, ratings in rows:
            yield index, fields, error, ratings
            after = index
        if len(rows) < CHUNK:
            return


@dataclass(frozen=True)
class FieldFilter:
    name: str
    op: str  # ":" (equals) or a comparison
    value: str

    def matches(self, fields: dict[str, Any] | None) -> bool:
        if not fields or self.name not in fields:
            return False
        found = fields[self.name]
        if self.op == ":":
            return (found if isinstance(found, str) else json.dumps(found)) == self.value
        if isinstance(found, bool) or not isinstance(found, int | float):
            return False
        return _COMPARE[self.op](found, float(self.value))


def parse_filter(text: str) -> FieldFilter:
    """A filter from its text; ``ValueError`` with the reason when it is not one."""
    match = _FILTER.match(text)
    if match is None:
        raise ValueError(f"{text[:100]!r} is not NAME:VALUE, NAME>=N, NAME<=N, NAME>N or NAME<N")
    name, op, value = match.group(1).strip(), match.group(2), match.group(3).strip()
    if op != ":":
        try:
            float(value)
        except ValueError:
            raise ValueError(f"{text[:100]!r}: {value[:50]!r} is not a number") from None
    return FieldFilter(name, op, value)


def matching_indexes(db: Database, batch_id: str, filters: list[FieldFilter]) -> Iterator[int]:
    """The request indexes whose fields pass every filter, in order."""
    for index, fields, _error, _ratings in plugin_data(db, batch_id):
        if all(f.matches(fields) for f in filters):
            yield index
