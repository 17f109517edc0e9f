"""The engine interface: turn OpenAI request bodies into OpenAI response bodies.

An engine is created for one model and kept loaded between jobs of that model. ``run``
yields each request's outcome as soon as it finishes, in any order, so the worker can
store it durably at once.
"""

from __future__ import annotations

import threading
from collections import deque
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


def request_failed(index: int, exc: Exception) -> EngineResult:
    """The result of a request the engine could not serve: a rejection as it was raised,
    anything else (an engine library's error on an odd input) as that request's 500, so one
    request never takes down the run or the engine process."""
    if isinstance(exc, RequestRejected):
        return exc.result(index)
    return RequestRejected(
        f"The engine failed on this request: {type(exc).__name__}: {exc}"[:2000],
        code="engine_error",
        status_code=500,
    ).result(index)


class Interrupted(Exception):
    """Generation was stopped because the worker asked it to (cancel, lease lost)."""


StopCheck = Callable[[], bool]


class RequestFeed:
    """The requests of one run, which may keep arriving while it runs.

    The worker adds the next work unit while the engine still has the last one's requests
    in flight, so the engine does not drain between units. The engine says it could take
    more with :meth:`ask`; the answer is :meth:`add` or :meth:`end`. Engines that schedule
    requests themselves (vLLM) :meth:`take` what has arrived; iterating a feed instead
    blocks until the next request arrives and asks for more once it runs dry.
    """

    def __init__(
        self,
        requests: Iterable[EngineRequest] = (),
        *,
        ended: bool = True,
        on_ask: Callable[[], None] | None = None,
    ) -> None:
        self._items: deque[EngineRequest] = deque(requests)
        self._ended = ended
        self._stopped = False
        self._asked = False
        self._on_ask = on_ask
        self._changed = threading.Condition()

    def add(self, requests: Iterable[EngineRequest]) -> None:
        with self._changed:
            self._items.extend(requests)
            self._asked = False
            self._changed.notify_all()

    def end(self) -> None:
        """No more requests will come."""
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def stop(self) -> None:
        """The run is stopped: wake anything waiting for requests."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    @property
    def ended(self) -> bool:
        """Every request has been taken and no more will come."""
        with self._changed:
            return (self._ended and not self._items) or self._stopped

    def take(self) -> list[EngineRequest]:
        """Every request that has arrived since the last take (never blocks)."""
        with self._changed:
            items = list(self._items)
            self._items.clear()
            return items

    def ask(self) -> None:
        """Say the engine could take more now (once, until more arrive or the feed ends)."""
        with self._changed:
            if self._asked or self._ended or self._stopped or self._on_ask is None:
                return
            self._asked = True
        self._on_ask()

    def wait(self, timeout: float) -> None:
        """Wait until requests arrive, the feed ends or is stopped, or ``timeout``."""
        with self._changed:
            if not self._items and not self._ended and not self._stopped:
                self._changed.wait(timeout)

    def __iter__(self) -> Iterator[EngineRequest]:
        while True:
            with self._changed:
                if self._items:
                    request: EngineRequest | None = self._items.popleft()
                    dry = not self._items
                elif self._ended or self._stopped:
                    return
                else:
                    request, dry = None, True
            if dry:
                self.ask()  # the next unit arrives while this request runs
            if request is None:
                self.wait(0.1)
                continue
            yield request


class Engine(Protocol):
    model_id: str

    def run(
        self, requests: Iterable[EngineRequest], should_stop: StopCheck
    ) -> Iterator[EngineResult]:
        """Yield one result per request as each finishes; stop early (without yielding
        the unfinished ones) once ``should_stop()`` is true. ``requests`` may be a
        :class:`RequestFeed` that grows while the run goes on."""
        ...

    def close(self) -> None:
        """Release the model and its memory."""
        ...
