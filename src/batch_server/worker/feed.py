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
from batch_server.plugins.manager import Plugins
from batch_server.plugins.results import annotate
from batch_server.storage import FileStore
from batch_server.worker.convert import (
    Prepared,
    read_requests,
    template_failed,
    to_result,
    unstorable,
)
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
        plugins: Plugins | None = None,
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.leases = leases
        self.worker_id = worker_id
        self.stored = stored  # told (batch id, model) of each result stored
        self.plugins = plugins
        self.templates: dict[tuple[int, int], str] = {}  # (unit id, index) → template

    def take_result(self, run: Run, result: EngineResult, stop: threading.Event) -> bool:
        """Store a finished request and complete its unit when it was the unit's last;
        ``False`` when the run must stop (a lease lost, or the database refusing)."""
        unit, result = run.finish(result)
        stored = to_result(result, unit.custom_ids[result.index])
        template = self.templates.pop((unit.claim.unit_id, result.index), None)
        if template is not None and result.ok and self.plugins is not None:
            outcome = annotate(self.plugins, template, result.body)  # never raises
            stored.fields, stored.plugin_error = outcome.fields, outcome.plugin_error
            stored.ratings = outcome.ratings
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
            prepared = [
                p
                for p in read_requests(self.store, claim, self.plugins)
                if p.request.index not in done
            ]
            requests = self._templated(claim, prepared)
        except LeaseLost:
            self.leases.fenced(claim)
            return []
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

    def _templated(self, claim: Claim, prepared: list[Prepared]) -> list[EngineRequest]:
        """The requests for the engine; a templated one whose template failed is stored
        as its error line now (it fails alone), the others' templates remembered."""
        failed = [
            to_result(template_failed(p.request.index, p.failure), p.request.custom_id)
            for p in prepared
            if p.failure is not None
        ]
        if failed:
            self.jobs.record(claim, failed, self.worker_id)
        for p in prepared:
            if p.template is not None:
                self.templates[(claim.unit_id, p.request.index)] = p.template
        return [p.request for p in prepared if p.failure is None]
