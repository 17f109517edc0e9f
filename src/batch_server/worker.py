"""The worker loop: validate new batches, run work units on an engine, finalize.

A worker owns at most one engine (one loaded model) and keeps it loaded between jobs of
that model. It only touches the database through :class:`~batch_server.jobs.queue.Queue`
and the job modules, so any number of workers may share one database.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from batch_server import ids, metrics
from batch_server.config import Settings
from batch_server.db.session import Database
from batch_server.db.tables import WorkerRow
from batch_server.engines import start_engine
from batch_server.engines.base import EngineFailure, EngineRequest, EngineResult
from batch_server.engines.process import EngineProcess
from batch_server.errors import error_body
from batch_server.estimates import SampleRecorder
from batch_server.gpu import GpuMonitor, host_hold_reason
from batch_server.jobs import housekeeping
from batch_server.jobs.finalize import finalize
from batch_server.jobs.queue import Claim, LeaseLost, Queue, Result
from batch_server.jobs.validation import iter_lines, validate_batch
from batch_server.logs import bind
from batch_server.openai_types import output_line
from batch_server.storage import FileStore
from batch_server.wakeup import Wakeup

log = logging.getLogger(__name__)

WARM_REQUESTS = 256  # finished requests after which an engine's memory is its baseline
# Requests in a row that kill the engine in an isolated run before the engine is blamed.
ISOLATION_CRASH_LIMIT = 3


@dataclass
class _Unit:
    claim: Claim
    custom_ids: dict[int, str]  # request index → custom_id
    left: int  # requests not finished yet


@dataclass
class _Run:
    """The work units one engine run serves. Requests are numbered across the run (units of
    different batches share request indexes) and mapped back as they finish."""

    units: dict[int, _Unit] = field(default_factory=dict)  # by unit id
    slots: dict[int, tuple[_Unit, int]] = field(default_factory=dict)  # run number → unit, index
    samples: dict[str, SampleRecorder] = field(default_factory=dict)  # by batch id
    next_claim: Claim | None = None  # a unit to run after this run (another model, or isolated)
    restart: str | None = None  # why the engine must restart once this run has drained
    store_error: str | None = None  # why results could not be stored (a failed attempt)
    _numbers: itertools.count = field(default_factory=itertools.count)

    def add(self, claim: Claim, requests: list[EngineRequest]) -> list[EngineRequest]:
        unit = _Unit(claim, {r.index: r.custom_id for r in requests}, len(requests))
        self.units[claim.unit_id] = unit
        numbered = []
        for r in requests:
            number = next(self._numbers)
            self.slots[number] = (unit, r.index)
            numbered.append(EngineRequest(number, r.custom_id, r.endpoint, r.body))
        return numbered

    def finish(self, result: EngineResult) -> tuple[_Unit, EngineResult]:
        """The unit a finished request belongs to, and its result under its own index."""
        unit, index = self.slots.pop(result.index)
        unit.left -= 1
        return unit, EngineResult(index, result.status_code, result.body)


class Worker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: FileStore,
        wake: Wakeup | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.queue = Queue(db, settings.lease_seconds, settings.webhook_progress_seconds)
        self.wake = wake or Wakeup(db)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{ids.token()[:6]}"
        self.engine: EngineProcess | None = None
        self.state = "idle"
        self.current_batch: str | None = None
        self._stopping = threading.Event()
        self._last_expiry_check = 0.0
        self._last_housekeeping = time.monotonic()  # the first pass after one interval
        self.gpu = GpuMonitor(settings)
        self._held: str | None = None
        self._next_claim: Claim | None = None

    # -- lifecycle --------------------------------------------------------------------

    def run_forever(self) -> None:
        self._register()
        beat = threading.Thread(target=self._beat_loop, name="worker-heartbeat", daemon=True)
        beat.start()
        self.wake.listen()
        log.info("worker %s started", self.id)
        try:
            while not self._stopping.is_set():
                self.wake.clear()
                try:
                    busy = self.step()
                except Exception:
                    log.exception("worker step failed")
                    busy = False
                if not busy:
                    self.wake.wait(self.settings.poll_seconds)
        finally:
            if self._next_claim:  # claimed but never started: back to the queue
                self._give_back(self._next_claim)
            self.wake.close()
            self._close_engine()
            self._unregister()
            log.info("worker %s stopped", self.id)

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    def step(self) -> bool:
        """Do one piece of work; ``False`` when there was nothing to do."""
        with bind(request_id=f"step_{ids.token()[:12]}"):
            return self._step()

    def _step(self) -> bool:
        # A unit of another model claimed at the end of the last run goes first: it is
        # ours already, and nothing renews its lease until it runs.
        claim, self._next_claim = self._next_claim, None
        if claim is not None and not self.queue.heartbeat(claim):
            self._give_back(claim)  # cancelled (or lost) while the last run drained
            claim = None
        if claim is None:
            if self._batch_work():
                return True
            if self._check_hold():
                self._set_state("held", None)
                return False
            loaded = self.engine.model_id if self.engine else None
            claim = self.queue.claim_unit(self.id, prefer_model=loaded)
            if claim is None:
                return False
        self._set_state("running", claim.batch_id)
        try:
            with bind(batch_id=claim.batch_id):
                self.run_unit(claim)
        finally:
            self._set_state("idle", None)
        return True

    def _batch_work(self) -> bool:
        """Expire overdue batches, keep the tables tidy, and do one batch-level step
        (validation or finalization) if one is waiting; ``True`` if a step was done.

        Also done between the units of a run, so batches are validated and finalized
        while the engine keeps working on other units.
        """
        now = time.monotonic()
        if now - self._last_expiry_check > 1.0:
            self._last_expiry_check = now
            self.queue.mark_expired()
        if now - self._last_housekeeping > self.settings.housekeeping_seconds:
            self._last_housekeeping = now
            housekeeping.run(self.db, self.settings)
        step = self.queue.claim_batch_step(self.id)
        if step is None:
            return False
        batch_id, kind, token = step
        state = self.state, self.current_batch
        self._set_state("validating" if kind == "validate" else "finalizing", batch_id)
        try:
            with bind(batch_id=batch_id):
                log.info("%s step", kind)
                if kind == "validate":
                    status = validate_batch(
                        self.db, self.store, self.queue, self.settings, batch_id, token
                    )
                    if status == "in_progress":
                        self.wake.notify()  # its units are ready for every worker
                else:
                    finalize(
                        self.db,
                        self.store,
                        self.queue,
                        batch_id,
                        token,
                        max_attempts=self.settings.engine_max_attempts,
                    )
        finally:
            self._set_state(*state)
        return True

    def _batch_steps_during_run(self) -> None:
        """Every waiting batch step, done while a run is going on; a step that fails is
        logged (as between runs) and is not taken for a failure of the engine."""
        try:
            while self._batch_work():
                pass
        except Exception:
            log.exception("batch step failed")

    def _check_hold(self) -> bool:
        """Whether new work must wait for now (logged when that changes)."""
        held = self._hold_reason()
        if bool(held) != bool(self._held):
            if held:
                log.warning("holding new work: %s", held)
            else:
                log.info("no longer holding new work")
        self._held = held
        return bool(held)

    def _hold_reason(self) -> str | None:
        """Why new work must wait (GPU or host thresholds), if it must."""
        if held := self.gpu.hold_reason():
            return held
        # The loaded engine's own memory is already taken: only the rest can hold new work
        # (otherwise an engine that fills the host would hold its own work for ever).
        own = self.engine.memory_bytes() if self.engine else 0
        return host_hold_reason(self.settings.host_max_memory_percent, discount_bytes=own)

    # -- running units ------------------------------------------------------------------

    def run_unit(self, claim: Claim) -> None:
        """Run a claimed unit on its model's engine, together with the further units of that
        model the engine asks for while it still has requests in flight: the engine never
        drains between units. A unit is complete as soon as its last request is stored."""
        if self._isolate(claim):
            self._run_isolated(claim)
            return
        run = _Run()
        requests = self._add_unit(run, claim)
        if not requests:
            return
        failure: Exception | None = None
        with self._leases(run) as stop:
            try:
                engine = self._engine_for(claim.model)
            except Exception as exc:
                log.error("engine for %s failed to start: %s", claim.model, exc)
                self._release(run, _engine_error(exc))
                return
            results = engine.run(requests, stop.is_set, more=lambda: self._more(run, engine, stop))
            try:
                with contextlib.closing(results):
                    for result in results:
                        if not self._take_result(run, result, stop):
                            break
            except Exception as exc:  # the engine itself broke: retry elsewhere/later
                log.exception("engine for %s failed during unit %s", claim.model, claim.unit_id)
                failure = exc
        self._next_claim = run.next_claim
        if failure is not None:
            self._close_engine()
            self._release(run, _engine_error(failure))
        else:
            # units left after a stop: their unfinished requests (a failed attempt if their
            # results could not be stored)
            self._release(run, run.store_error)
            self._restart_engine_if_grown(self.current_batch or claim.batch_id, run.restart)

    def _isolate(self, claim: Claim) -> bool:
        """Whether the unit's last attempt is due: after its engine failed in every earlier
        one (a crash may be chance, an engine killed from outside; twice, a request is
        suspect), it runs isolated."""
        return claim.engine_failures >= max(1, self.settings.engine_max_attempts - 1)

    def _run_isolated(self, claim: Claim) -> None:
        """Run a unit whose earlier runs ended with its engine failing, one request per
        engine run, so a request that kills the engine is known: it fails alone
        (``engine_crashed``), the engine is restarted and the unit goes on. Only when
        :data:`ISOLATION_CRASH_LIMIT` requests in a row kill it is the engine to blame: the
        unit goes back with the engine's error, as after any engine failure."""
        run = _Run()
        requests = self._add_unit(run, claim)
        if not requests:
            return
        self.queue.log(
            claim.batch_id,
            "unit",
            f"unit {claim.index}: its last run ended with the engine failing; its requests "
            "run one at a time, so one that kills the engine fails alone",
        )
        failure: str | None = None
        in_a_row = 0
        with self._leases(run) as stop:
            for req in requests:
                if stop.is_set():
                    break
                try:
                    engine = self._engine_for(claim.model)
                except Exception as exc:  # it cannot start: the engine's own failure
                    failure = _engine_error(exc)
                    break
                try:
                    results = list(engine.run([req], stop.is_set))
                except Exception as exc:  # it failed on this very request
                    self._close_engine()
                    in_a_row += 1
                    if in_a_row >= ISOLATION_CRASH_LIMIT:
                        failure = _engine_error(exc)
                        break
                    self.queue.log(
                        claim.batch_id,
                        "engine_error",
                        f"request {req.custom_id[:200]!r} failed alone: the engine failed "
                        f"while running it ({_engine_error(exc)[:1000]}); it is restarted",
                    )
                    results = [_crashed(req.index, exc)]
                else:
                    in_a_row = 0 if results else in_a_row
                if not all(self._take_result(run, r, stop) for r in results):
                    break
        self._release(run, failure or run.store_error)

    @contextlib.contextmanager
    def _leases(self, run: _Run) -> Iterator[threading.Event]:
        """Renew the run's leases while the body runs; yields the run's stop flag. The
        leases are renewed while the engine loads too (vLLM takes tens of seconds), and
        after a stop until the run has ended (the engine may take a while to stop)."""
        stop, ended = threading.Event(), threading.Event()
        beat = threading.Thread(
            target=self._run_heartbeat, args=(run, stop, ended), name="unit-heartbeat", daemon=True
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

    def _take_result(self, run: _Run, result: EngineResult, stop: threading.Event) -> bool:
        """Store a finished request and complete its unit when it was the unit's last;
        ``False`` when the run must stop (a lease lost, or the database refusing)."""
        unit, result = run.finish(result)
        stored = self._to_result(result, unit.custom_ids)
        try:
            self._store(unit.claim, stored)
            run.samples[unit.claim.batch_id].add(stored.input_tokens, stored.output_tokens)
            if unit.left == 0:
                # out of the run first: its renewals fail once it is complete
                run.units.pop(unit.claim.unit_id)
                finalizing = self.queue.complete_unit(unit.claim)
                if finalizing and not stop.is_set():
                    self._batch_steps_during_run()  # finalize it now
        except LeaseLost:
            run.units.pop(unit.claim.unit_id, None)
            self._fenced(unit.claim)
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
            self.queue.record(claim, [result], self.id)
        except LeaseLost:
            raise
        except Exception as exc:
            log.exception(
                "result %s of %s refused; stored as an error", result.request_index, claim.batch_id
            )
            self.queue.record(claim, [_unstorable(result, exc)], self.id)

    def _add_unit(self, run: _Run, claim: Claim) -> list[EngineRequest]:
        """The unit's unfinished requests, numbered for this run (a unit with none left is
        completed at once; one whose input cannot be read goes back as a failed attempt)."""
        done = self.queue.done_indexes(claim)
        try:
            requests = [r for r in self._read_requests(claim) if r.index not in done]
        except Exception as exc:  # the storage, not the engine; counted all the same
            log.exception("could not read the input of unit %s", claim.index)
            self._release_unit(claim, f"could not read its input: {type(exc).__name__}: {exc}")
            return []
        # joining a run: the engine had these requests (of earlier units) still in hand
        joined = f"; joins {len(run.slots)} still running" if run.slots else ""
        self.queue.log(
            claim.batch_id,
            "unit",
            f"unit {claim.index} on {self.id}: {len(requests)} to run, "
            f"{len(done)} already finished{joined}",
        )
        if not requests:
            try:
                self.queue.complete_unit(claim)
            except LeaseLost:
                self._fenced(claim)
            return []
        if claim.batch_id not in run.samples:
            run.samples[claim.batch_id] = SampleRecorder(
                self.db, claim.batch_id, claim.model, self.id
            )
        return run.add(claim, requests)

    def _more(self, run: _Run, engine: EngineProcess, stop: threading.Event) -> list[EngineRequest]:
        """The next unit of the engine's model, for an engine that could take more now; none
        when the worker is stopping or held, the engine needs a restart, or the next unit
        in line is of another model (the run drains, and that unit runs next).

        A failure here (the database, an input file) only ends the run's feeding: it is not
        the engine's, and a unit claimed but not yet added goes back to the queue.
        """
        claim: Claim | None = None
        try:
            while not (stop.is_set() or self._stopping.is_set() or run.next_claim):
                self._batch_steps_during_run()
                if self._check_hold():
                    return []
                run.restart = self._restart_reason(engine)
                if run.restart:
                    return []
                claim = self.queue.claim_unit(self.id, prefer_model=engine.model_id)
                if claim is None:
                    return []
                if claim.unit_id in run.units:  # its lease lapsed while it ran here
                    self._give_back(claim)
                    claim = None
                    stop.set()
                    return []
                if claim.model != engine.model_id or self._isolate(claim):
                    # runs after this run (isolated, if its engine failed): the run's
                    # heartbeat keeps its lease alive meanwhile
                    run.next_claim = claim
                    return []
                self._set_state("running", claim.batch_id)
                with bind(batch_id=claim.batch_id):
                    requests = self._add_unit(run, claim)
                if requests:
                    return requests
        except Exception:
            log.exception("could not add the next unit to the running engine")
            if claim is not None and claim.unit_id not in run.units:
                self._give_back(claim)
        return []

    def _give_back(self, claim: Claim) -> None:
        """Release a unit this worker claimed but never started (no attempt counted)."""
        try:
            self.queue.release_unit(claim, engine_error=None, max_attempts=0)
        except Exception:
            log.exception("could not release unit %s of %s", claim.index, claim.batch_id)

    def _release(self, run: _Run, engine_error: str | None) -> None:
        """Give the run's unfinished units back to the queue: after an engine failure with
        its error (logged once per batch), else to be run again at once."""
        logged: set[str] = set()
        for unit in list(run.units.values()):
            self._release_unit(unit.claim, engine_error, log=unit.claim.batch_id not in logged)
            logged.add(unit.claim.batch_id)
        run.units.clear()

    def _release_unit(self, claim: Claim, error: str | None, log: bool = True) -> None:
        """Give one unit back: after a failure as a counted attempt with backoff (the batch
        fails after ``engine_max_attempts``), else to be run again at once."""
        try:
            released = self.queue.release_unit(
                claim,
                engine_error=error,
                max_attempts=self.settings.engine_max_attempts if error else 0,
                log=log,
            )
        except LeaseLost:
            released = False
        if not released:
            self._fenced(claim)

    def _restart_reason(self, engine: EngineProcess) -> str | None:
        """Why the engine should be restarted before it takes more work, if it should.

        An engine's host memory can grow with every request it serves (vLLM's CPU worker
        does, by a few KB per request); ending its process tree is the one remedy that
        works whatever the cause.
        """
        rss = engine.memory_bytes()
        # The baseline is taken once the engine is warm: a first unit of a few requests
        # has not yet touched the buffers that later, fuller batches use.
        if engine.warm_memory is None and engine.results >= WARM_REQUESTS:
            engine.warm_memory = rss
        baseline = engine.warm_memory
        spec = self.settings.models.get(engine.model_id)
        cap = spec.max_memory_mb if spec else None
        growth = self.settings.engine_memory_growth_limit
        mib = rss / 2**20
        if cap and mib > cap:
            reason = f"uses {mib:.0f} MiB, above its max_memory_mb ({cap})"
            if engine.runs == 1 and engine.results <= self.settings.unit_size_for(engine.model_id):
                reason += (
                    f"; it was above that after {engine.results} requests, so max_memory_mb "
                    "is too low for this model and every unit reloads it"
                )
            return reason
        if growth and baseline and rss > growth * baseline:
            return (
                f"grew from {baseline / 2**20:.0f} MiB once warm to "
                f"{mib:.0f} MiB (engine_memory_growth_limit {growth})"
            )
        return None

    def _restart_engine_if_grown(self, batch_id: str, reason: str | None = None) -> None:
        """Restart the engine after a run (no request in flight) if its memory has grown
        past the limits (:meth:`_restart_reason`), or ``reason`` (found during the run)."""
        engine = self.engine
        if engine is not None and reason is None:
            reason = self._restart_reason(engine)
        if engine is None or reason is None:
            return
        log.warning("restarting the engine for %s: it %s", engine.model_id, reason)
        self._close_engine()
        self.queue.log(batch_id, "engine", f"engine for {engine.model_id} restarted: it {reason}")
        with self.db.write() as s:
            metrics.increment(s, "engine_restarts", {"model": engine.model_id})

    def _fenced(self, claim: Claim) -> None:
        log.warning("unit %s of %s is no longer ours", claim.index, claim.batch_id)
        self.queue.log(
            claim.batch_id,
            "unit",
            f"unit {claim.index}: {self.id} was fenced (lease lost or unit closed); "
            "its further writes were refused",
        )

    def _run_heartbeat(self, run: _Run, stop: threading.Event, ended: threading.Event) -> None:
        """Renew the leases of the run's units; stop the run when one must stop (lease
        lost, batch cancelled or expiring): the others are given back and run again."""
        interval = min(1.0, self.settings.lease_seconds / 3)
        while not ended.wait(interval):
            try:
                waiting = run.next_claim
                if waiting and not self.queue.heartbeat(waiting):
                    run.next_claim = None  # cancelled while it waited: never started here
                    self._give_back(waiting)
                for unit_id, unit in list(run.units.items()):
                    # a unit completed meanwhile is no longer leased: not a reason to stop
                    if not self.queue.heartbeat(unit.claim) and unit_id in run.units:
                        stop.set()  # the others are still renewed until the run ends
            except Exception:
                log.exception("renewing the run's leases failed")  # tried again next beat

    def _read_requests(self, claim: Claim) -> Iterator[EngineRequest]:
        with self.store.open(claim.input_file_id) as fh:
            for offset, line in enumerate(iter_lines(fh, claim.byte_start)):
                if offset >= claim.request_count or line.byte_start >= claim.byte_end:
                    break
                obj = json.loads(line.raw)
                yield EngineRequest(
                    claim.first_request + offset, obj["custom_id"], claim.endpoint, obj["body"]
                )

    @staticmethod
    def _to_result(result: EngineResult, custom_ids: dict[int, str]) -> Result:
        line = output_line(
            custom_ids[result.index],
            result.status_code,
            result.body,
            ids.batch_request_id(),
            ids.request_id(),
        )
        use = result.body.get("usage") or {} if result.ok else {}
        details = use.get("prompt_tokens_details") or {}
        error = result.body.get("error") if not result.ok else None
        code = error.get("code") if isinstance(error, dict) else None
        payload = json.dumps(line, ensure_ascii=False)
        if not payload.isascii():
            try:
                payload.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: stored escaped, as JSON allows
                payload = json.dumps(line)
        return Result(
            request_index=result.index,
            is_error=not result.ok,
            error_code=None if result.ok else str(code or result.status_code),
            payload=payload,
            input_tokens=int(use.get("prompt_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
            output_tokens=int(use.get("completion_tokens") or 0),
        )

    # -- the engine ---------------------------------------------------------------------

    def _engine_for(self, model_id: str) -> EngineProcess:
        if self.engine is not None and self.engine.model_id == model_id:
            return self.engine
        self._close_engine()
        spec = self.settings.models.get(model_id)
        if spec is None:
            raise EngineFailure(f"model {model_id!r} is not in this worker's registry")
        self._set_state("loading", self.current_batch)
        started = time.monotonic()
        self.engine = start_engine(
            model_id, spec, self.settings.data_dir, self.settings.engine_start_timeout
        )
        seconds = time.monotonic() - started
        log.info("loaded %s in %.1fs", model_id, seconds)
        with self.db.write() as s:
            metrics.increment(s, "engine_loads", {"model": model_id})
            metrics.increment(s, "engine_load_seconds_sum", {"model": model_id}, seconds)
        return self.engine

    def preload(self, model_id: str) -> None:
        try:
            self._engine_for(model_id)
        except EngineFailure as exc:
            log.error("could not preload %s: %s", model_id, exc)

    def _close_engine(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            engine.close()

    # -- presence in the workers table --------------------------------------------------

    def _set_state(self, state: str, batch_id: str | None) -> None:
        self.state, self.current_batch = state, batch_id

    def _row(self) -> dict[str, object]:
        return {
            "id": self.id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat_at": time.time(),
            "state": self.state,
            "loaded_model": self.engine.model_id if self.engine else None,
            "current_batch_id": self.current_batch,
        }

    def _register(self) -> None:
        self._started = time.time()
        self._upsert()

    def _upsert(self) -> None:
        row = self._row() | {"started_at": self._started}
        dialect = postgresql if not self.db.is_sqlite else sqlite
        stmt = dialect.insert(WorkerRow).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"], set_={k: v for k, v in row.items() if k != "id"}
        )
        with self.db.write() as s:
            s.execute(stmt)

    def _beat_loop(self) -> None:
        while not self._stopping.wait(2.0):
            try:
                self._upsert()
                metrics.report_gpus(self.db, socket.gethostname(), self.gpu.read())
            except Exception:
                log.exception("worker heartbeat failed")

    def _unregister(self) -> None:
        try:
            with self.db.write() as s:
                s.execute(delete(WorkerRow).where(WorkerRow.id == self.id))
        except Exception:
            log.exception("could not unregister worker")


def _crashed(index: int, exc: Exception) -> EngineResult:
    """The result of a request the engine failed on (its process died, most often)."""
    return EngineResult(
        index,
        500,
        error_body(
            f"The engine failed while running this request, which was failed alone: "
            f"{_engine_error(exc)}"[:2000],
            "server_error",
            code="engine_crashed",
        ),
    )


def _unstorable(result: Result, exc: Exception) -> Result:
    """An error line in place of a result the database refused."""
    line = json.loads(result.payload)
    body = error_body(
        f"The result of this request could not be stored: {type(exc).__name__}: {exc}"[:2000],
        "server_error",
        code="result_not_storable",
    )
    line["response"] = {
        "status_code": 500,
        "request_id": line["response"]["request_id"],
        "body": body,
    }
    return Result(result.request_index, True, json.dumps(line), "result_not_storable")


def _engine_error(exc: Exception) -> str:
    """The message stored (and shown in the batch's errors) for an engine failure."""
    return str(exc) if isinstance(exc, EngineFailure) else f"{type(exc).__name__}: {exc}"
