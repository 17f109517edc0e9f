"""Feeding a run: a unit's unfinished requests read and numbered into the run, and each
finished request stored at once (its unit completed with its last one)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from batch_server.engines.base import EngineRequest, EngineResult
from batch_server.estimates import SampleRecorder
from batch_server.jobs.manager import JobManager
from batch_server.jobs.queue import Claim, LeaseLost, Result
from batch_server.storage import FileStore
from batch_server.worker.convert import read_requests, to_result, unstorable
from batch_server.worker.leases import Leases, Run

log = logging.getLogger(__name__)


class Feed:
    def __init__(
        self,
        jobs: JobManager,
        store: FileStore,
        leases: Leases,
        worker_id: str,
        stored: Callable[[str, str], None] = lambda batch_id, model: None,
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.leases = leases
        self.worker_id = worker_id
        self.stored = stored  # told (batch id, model) of each result stored

    def take_result(self, run: Run, result: EngineResult, stop: threading.Event) -> bool:
        """Store a finished request and complete its unit when it was the unit's last;
        ``False`` when the run must stop (a lease lost, or the database refusing)."""
        unit, result = run.finish(result)
        stored = to_result(result, unit.custom_ids[result.index])
        try:
            self._store(unit.claim, stored)
            run.samples[unit.claim.batch_id].add(stored.input_tokens, stored.output_tokens)
            self.stored(unit.claim.batch_id, unit.claim.model)
            if unit.left == 0:
                # out of the run first: its renewals fail once it is complete
                run.units.pop(unit.claim.unit_id)
                self.jobs.complete_unit(unit.claim)
        except LeaseLost:
            run.units.pop(unit.claim.unit_id, None)
            self.leases.fenced(unit.claim)
            stop.set()  # the run's other units go back to the queue
            return False
        except Exception as exc:  # the database, not the engine: stop, retry later
            log.exception("could not store a result of unit %s", unit.claim.index)
            run.units.setdefault(unit.claim.unit_id, unit)  # released after the run
            run.store_error = f"could not store a result: {type(exc).__name__}: {exc}"
            stop.set()
            return False
        return True

    def _store(self, claim: Claim, result: Result) -> None:
        """Store one result. One the database refuses (it should not happen: odd input is
        refused at the door) is replaced by an error line for that request alone, so one
        odd result never sends its unit back to the queue for ever; if that is refused too,
        the database itself is failing and the error propagates."""
        try:
            self.jobs.record(claim, [result], self.worker_id)
        except LeaseLost:
            raise
        except Exception as exc:
            log.exception(
                "result %s of %s refused; stored as an error", result.request_index, claim.batch_id
            )
            self.jobs.record(claim, [unstorable(result, exc)], self.worker_id)

    def add_unit(self, run: Run, claim: Claim) -> list[EngineRequest]:
        """The unit's unfinished requests, numbered for this run (a unit with none left is
        completed at once; one whose input cannot be read goes back as a failed attempt)."""
        done = self.jobs.done_indexes(claim)
        try:
            requests = [r for r in read_requests(self.store, claim) if r.index not in done]
        except Exception as exc:  # the storage, not the engine; counted all the same
            log.exception("could not read the input of unit %s", claim.index)
            error = f"could not read its input: {type(exc).__name__}: {exc}"
            self.leases.release_unit(claim, error)
            return []
        # joining a run: the engine had these requests (of earlier units) still in hand
        joined = f"; joins {len(run.slots)} still running" if run.slots else ""
        self.jobs.log(
            claim.batch_id,
            "unit",
            f"unit {claim.index} on {self.worker_id}: {len(requests)} to run, "
            f"{len(done)} already finished{joined}",
        )
        if not requests:
            try:
                self.jobs.complete_unit(claim)
            except LeaseLost:
                self.leases.fenced(claim)
            return []
        if claim.batch_id not in run.samples:
            run.samples[claim.batch_id] = SampleRecorder(
                self.jobs.db, claim.batch_id, claim.model, self.worker_id
            )
        return run.add(claim, requests)
