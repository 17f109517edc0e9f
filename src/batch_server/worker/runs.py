"""Engine runs: a claimed unit on its model's engine, fed further units of that model
while the engine still has requests in hand, results stored as they finish.

A run that must stop (a cancel, a lost lease) gives its other units back to run again at
once. A unit whose engine failed in every earlier attempt runs isolated, one request
per engine run, so a request that kills the engine fails alone.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from batch_server.config import Settings
from batch_server.engines.base import EngineRequest
from batch_server.engines.process import EngineProcess
from batch_server.jobs.manager import JobManager
from batch_server.jobs.queue import Claim
from batch_server.logs import bind
from batch_server.models.provenance import RunLog
from batch_server.plugins.manager import Plugins
from batch_server.statuses import WorkerState
from batch_server.storage import FileStore
from batch_server.worker.convert import crashed, engine_error
from batch_server.worker.engine_slot import EngineSlot
from batch_server.worker.feed import Feed
from batch_server.worker.leases import Leases, Run
from batch_server.worker.presence import Presence

log = logging.getLogger(__name__)

# Requests in a row that kill the engine in an isolated run before the engine is blamed.
ISOLATION_CRASH_LIMIT = 3


class Runner:
    def __init__(
        self,
        settings: Settings,
        jobs: JobManager,
        store: FileStore,
        slot: EngineSlot,
        presence: Presence,
        may_take_more: Callable[[], bool],
        plugins: Plugins | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.store = store
        self.slot = slot
        self.presence = presence
        self.leases = Leases(jobs, presence.id, settings.lease_seconds)
        self.runlog = RunLog(jobs.db, presence.id)  # provenance, see models.provenance
        self.feed = Feed(jobs, store, self.leases, presence.id, self.runlog.first_result, plugins)
        # False when the worker stops or is held: the run takes no further unit
        self.may_take_more = may_take_more

    def isolate(self, claim: Claim) -> bool:
        """Whether the unit's last attempt is due: after its engine failed in every earlier
        one (a crash may be chance, an engine killed from outside; twice, a request is
        suspect), it runs isolated."""
        return claim.engine_failures >= max(1, self.settings.engine_max_attempts - 1)

    def run(self, claim: Claim) -> Claim | None:
        """Run a claimed unit, together with the further units of its model the engine asks
        for while it still has requests in flight: the engine never drains between units.
        Returns a unit claimed during the run that must run next (another model's)."""
        if self.isolate(claim):
            self._run_isolated(claim)
            return None
        run = Run()
        requests = self.feed.add_unit(run, claim)
        if not requests:
            return None
        failure: Exception | None = None
        with self.leases.held(run) as stop:
            warm = self.slot.engine
            try:
                engine = self.slot.engine_for(claim.model)
            except Exception as exc:
                log.error("engine for %s failed to start: %s", claim.model, exc)
                self.leases.release(run, engine_error(exc))
                return run.next_claim
            self._started(claim, loaded=engine is not warm)
            results = engine.run(requests, stop.is_set, more=lambda: self._more(run, engine, stop))
            try:
                with contextlib.closing(results):
                    for result in results:
                        if not self.feed.take_result(run, result, stop):
                            break
            except Exception as exc:  # the engine itself broke: retry elsewhere/later
                log.exception("engine for %s failed during unit %s", claim.model, claim.unit_id)
                failure = exc
            self.runlog.memory(list(run.samples), claim.model, engine.memory_bytes())
        if failure is not None:
            self.slot.close()
            self.leases.release(run, engine_error(failure))
        else:
            # units left after a stop: their unfinished requests (a failed attempt if their
            # results could not be stored)
            self.leases.release(run, run.store_error)
            self.slot.restart_if_grown(self.presence.engine_batch or claim.batch_id, run.restart)
        return run.next_claim

    def _started(self, claim: Claim, loaded: bool) -> None:
        """Record the batch's provenance (``loaded``: the engine was loaded for it)."""
        load_seconds = self.slot.load_seconds if loaded else None
        self.runlog.started(claim.batch_id, claim.model, self.slot.provenance, load_seconds)

    def _run_isolated(self, claim: Claim) -> None:
        """Run a unit whose earlier runs ended with its engine failing, one request per
        engine run, so a request that kills the engine is known: it fails alone
        (``engine_crashed``), the engine is restarted and the unit goes on. Only when
        :data:`ISOLATION_CRASH_LIMIT` requests in a row kill it is the engine to blame: the
        unit goes back with the engine's error, as after any engine failure."""
        run = Run()
        requests = self.feed.add_unit(run, claim)
        if not requests:
            return
        self.jobs.log(
            claim.batch_id,
            "unit",
            f"unit {claim.index}: its last run ended with the engine failing; its requests "
            "run one at a time, so one that kills the engine fails alone",
        )
        failure: str | None = None
        in_a_row = 0
        with self.leases.held(run) as stop:
            for req in requests:
                if stop.is_set():
                    break
                try:
                    engine = self.slot.engine_for(claim.model)
                except Exception as exc:  # it cannot start: the engine's own failure
                    failure = engine_error(exc)
                    break
                try:
                    results = list(engine.run([req], stop.is_set))
                except Exception as exc:  # it failed on this very request
                    self.slot.close()
                    in_a_row += 1
                    if in_a_row >= ISOLATION_CRASH_LIMIT:
                        failure = engine_error(exc)
                        break
                    self.jobs.log(
                        claim.batch_id,
                        "engine_error",
                        f"request {req.custom_id[:200]!r} failed alone: the engine failed "
                        f"while running it ({engine_error(exc)[:1000]}); it is restarted",
                    )
                    results = [crashed(req.index, exc)]
                else:
                    in_a_row = 0 if results else in_a_row
                if not all(self.feed.take_result(run, r, stop) for r in results):
                    break
        self.leases.release(run, failure or run.store_error)

    def _more(self, run: Run, engine: EngineProcess, stop: threading.Event) -> list[EngineRequest]:
        """The next unit of the engine's model, for an engine that could take more now; none
        when the worker is stopping or held, the engine needs a restart, or the next unit
        in line is of another model (the run drains, and that unit runs next).

        A failure here (the database, an input file) only ends the run's feeding: it is not
        the engine's, and a unit claimed but not yet added goes back to the queue.
        """
        claim: Claim | None = None
        try:
            while not (stop.is_set() or run.next_claim) and self.may_take_more():
                run.restart = self.slot.restart_reason(engine)
                if run.restart:
                    return []
                self.runlog.memory(list(run.samples), engine.model_id, engine.memory_bytes())
                claim = self.jobs.claim_unit(self.presence.id, prefer_model=engine.model_id)
                if claim is None:
                    return []
                if claim.unit_id in run.units:  # its lease lapsed while it ran here
                    self.leases.give_back(claim)
                    claim = None
                    stop.set()
                    return []
                if claim.model != engine.model_id or self.isolate(claim):
                    # runs after this run (isolated, if its engine failed): the run's
                    # heartbeat keeps its lease alive meanwhile
                    run.next_claim = claim
                    return []
                self.presence.engine(WorkerState.RUNNING, claim.batch_id)
                with bind(batch_id=claim.batch_id):
                    requests = self.feed.add_unit(run, claim)
                if requests:
                    self._started(claim, loaded=False)
                    return requests
        except Exception:
            log.exception("could not add the next unit to the running engine")
            if claim is not None and claim.unit_id not in run.units:
                self.leases.give_back(claim)
        return []
