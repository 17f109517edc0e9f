"""The leases of a run's work units: renewed while the run goes on, given back when it
ends; a unit found fenced (taken over, cancelled) is logged and left alone."""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from batch_server.engines.base import EngineRequest, EngineResult
from batch_server.estimates import SampleRecorder
from batch_server.jobs.manager import JobManager
from batch_server.jobs.queue import Claim, LeaseLost

log = logging.getLogger(__name__)


@dataclass
class RunUnit:
    claim: Claim
    custom_ids: dict[int, str]  # request index → custom_id
    left: int  # requests not finished yet


@dataclass
class Run:
    """The work units one engine run serves. Requests are numbered across the run (units of
    different batches share request indexes) and mapped back as they finish."""

    units: dict[int, RunUnit] = field(default_factory=dict)  # by unit id
    slots: dict[int, tuple[RunUnit, int]] = field(default_factory=dict)  # number → unit, index
    samples: dict[str, SampleRecorder] = field(default_factory=dict)  # by batch id
    next_claim: Claim | None = None  # a unit to run after this run (another model, or isolated)
    restart: str | None = None  # why the engine must restart once this run has drained
    store_error: str | None = None  # why results could not be stored (a failed attempt)
    _numbers: Iterator[int] = field(default_factory=itertools.count)

    def add(self, claim: Claim, requests: list[EngineRequest]) -> list[EngineRequest]:
        unit = RunUnit(claim, {r.index: r.custom_id for r in requests}, len(requests))
        self.units[claim.unit_id] = unit
        numbered = []
        for r in requests:
            number = next(self._numbers)
            self.slots[number] = (unit, r.index)
            numbered.append(EngineRequest(number, r.custom_id, r.endpoint, r.body))
        return numbered

    def finish(self, result: EngineResult) -> tuple[RunUnit, EngineResult]:
        """The unit a finished request belongs to, and its result under its own index."""
        unit, index = self.slots.pop(result.index)
        unit.left -= 1
        return unit, EngineResult(index, result.status_code, result.body)


class Leases:
    def __init__(self, jobs: JobManager, worker_id: str, lease_seconds: float) -> None:
        self.jobs = jobs
        self.worker_id = worker_id
        self.interval = min(1.0, lease_seconds / 3)

    @contextlib.contextmanager
    def held(self, run: Run) -> Iterator[threading.Event]:
        """Renew the run's leases while the body runs; yields the run's stop flag. The
        leases are renewed while the engine loads too (vLLM takes tens of seconds), and
        after a stop until the run has ended (the engine may take a while to stop)."""
        stop, ended = threading.Event(), threading.Event()
        beat = threading.Thread(
            target=self._renew, args=(run, stop, ended), name="unit-heartbeat", daemon=True
        )
        beat.start()
        try:
            yield stop
        finally:
            stop.set()
            ended.set()
            beat.join()
            for samples in run.samples.values():
                samples.flush()

    def _renew(self, run: Run, stop: threading.Event, ended: threading.Event) -> None:
        """Renew the leases of the run's units; stop the run when one must stop (lease
        lost, batch cancelled or expiring): the others are given back and run again."""
        while not ended.wait(self.interval):
            try:
                waiting = run.next_claim
                if waiting and not self.jobs.heartbeat(waiting):
                    run.next_claim = None  # cancelled while it waited: never started here
                    self.give_back(waiting)
                for unit_id, unit in list(run.units.items()):
                    # a unit completed meanwhile is no longer leased: not a reason to stop
                    if not self.jobs.heartbeat(unit.claim) and unit_id in run.units:
                        stop.set()  # the others are still renewed until the run ends
            except Exception:
                log.exception("renewing the run's leases failed")  # tried again next beat

    def release(self, run: Run, error: str | None) -> None:
        """Give the run's unfinished units back to the queue: after a failure with its
        error (logged once per batch), else to be run again at once."""
        logged: set[str] = set()
        for unit in list(run.units.values()):
            self.release_unit(unit.claim, error, log=unit.claim.batch_id not in logged)
            logged.add(unit.claim.batch_id)
        run.units.clear()

    def release_unit(self, claim: Claim, error: str | None, log: bool = True) -> None:
        """Give one unit back: after a failure as a counted attempt with backoff (the batch
        fails after ``engine_max_attempts``), else to be run again at once."""
        try:
            released = self.jobs.release_unit(claim, engine_error=error, log=log)
        except LeaseLost:
            released = False
        if not released:
            self.fenced(claim)

    def give_back(self, claim: Claim) -> None:
        """Release a unit claimed but never started (no attempt counted)."""
        try:
            self.jobs.give_back(claim)
        except Exception:
            log.exception("could not release unit %s of %s", claim.index, claim.batch_id)

    def fenced(self, claim: Claim) -> None:
        log.warning("unit %s of %s is no longer ours", claim.index, claim.batch_id)
        self.jobs.log(
            claim.batch_id,
            "unit",
            f"unit {claim.index}: {self.worker_id} was fenced (lease lost or unit closed); "
            "its further writes were refused",
        )
