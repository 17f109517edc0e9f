"""The engine interface: turn OpenAI request bodies into OpenAI response bodies.

An engine is created for one model and kept loaded between jobs of that model. ``run``
yields each request's outcome as soon as it finishes, in any order, so the worker can
store it durably at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from batch_server.errors import error_body


@dataclass(frozen=True)
class EngineRequest:
    index: int
    custom_id: str
    endpoint: str
    body: dict[str, Any]


@dataclass
class EngineResult:
    index: int
    status_code: int
    body: dict[str, Any]  # a completion object, or an OpenAI error body

    @property
    def ok(self) -> bool:
        return self.status_code == 200


class EngineFailure(RuntimeError):
    """The engine itself failed (could not load, crashed, ran out of memory): the work
    goes back to the queue. Distinct from a request the engine rejects."""


class RequestRejected(ValueError):
    """One request cannot be served (bad parameter, prompt too long): it fails alone."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int = 400,
    ) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
        self.status_code = status_code

    def result(self, index: int) -> EngineResult:
        return EngineResult(
            index, self.status_code, error_body(str(self), param=self.param, code=self.code)
        )


class Interrupted(Exception):
    """Generation was stopped because the worker asked it to (cancel, lease lost)."""


StopCheck = Callable[[], bool]


class Engine(Protocol):
    model_id: str

    def run(
        self, requests: Iterable[EngineRequest], should_stop: StopCheck
    ) -> Iterator[EngineResult]:
        """Yield one result per request as each finishes; stop early (without yielding
        the unfinished ones) once ``should_stop()`` is true."""
        ...

    def close(self) -> None:
        """Release the model and its memory."""
        ...
