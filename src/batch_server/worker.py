"""The worker loop: validate new batches, run work units on an engine, finalize.

A worker owns at most one engine (one loaded model) and keeps it loaded between jobs of
that model. It only touches the database through :class:`~batch_server.jobs.queue.Queue`
and the job modules, so any number of workers may share one database.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from batch_server import ids
from batch_server.config import Settings
from batch_server.db.session import Database
from batch_server.db.tables import WorkerRow
from batch_server.engines import load_engine
from batch_server.engines.base import Engine, EngineFailure, EngineRequest, EngineResult
from batch_server.estimates import SampleRecorder
from batch_server.jobs.finalize import finalize
from batch_server.jobs.queue import Claim, LeaseLost, Queue, Result
from batch_server.jobs.validation import iter_lines, validate_batch
from batch_server.openai_types import output_line
from batch_server.storage import FileStore

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: FileStore,
        wake: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.queue = Queue(db, settings.lease_seconds)
        self.wake = wake or threading.Event()
        self.id = f"{socket.gethostname()}:{os.getpid()}:{ids.token()[:6]}"
        self.engine: Engine | None = None
        self.state = "idle"
        self.current_batch: str | None = None
        self._stopping = threading.Event()
        self._last_expiry_check = 0.0

    # -- lifecycle --------------------------------------------------------------------

    def run_forever(self) -> None:
        self._register()
        beat = threading.Thread(target=self._beat_loop, name="worker-heartbeat", daemon=True)
        beat.start()
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
            self._close_engine()
            self._unregister()
            log.info("worker %s stopped", self.id)

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    def step(self) -> bool:
        """Do one piece of work; ``False`` when there was nothing to do."""
        now = time.monotonic()
        if now - self._last_expiry_check > 1.0:
            self._last_expiry_check = now
            self.queue.mark_expired()
        step = self.queue.claim_batch_step(self.id)
        if step is not None:
            batch_id, kind, token = step
            self._set_state("validating" if kind == "validate" else "finalizing", batch_id)
            if kind == "validate":
                validate_batch(self.db, self.store, self.settings, batch_id, token)
            else:
                finalize(self.db, self.store, self.queue, batch_id, token)
            self._set_state("idle", None)
            return True
        loaded = self.engine.model_id if self.engine else None
        claim = self.queue.claim_unit(self.id, prefer_model=loaded)
        if claim is None:
            return False
        self._set_state("running", claim.batch_id)
        try:
            self.run_unit(claim)
        finally:
            self._set_state("idle", None)
        return True

    # -- running a unit -----------------------------------------------------------------

    def run_unit(self, claim: Claim) -> None:
        done = self.queue.done_indexes(claim)
        requests = [r for r in self._read_requests(claim) if r.index not in done]
        custom_ids = {r.index: r.custom_id for r in requests}
        self.queue.log(
            claim.batch_id,
            "unit",
            f"unit {claim.index} on {self.id}: {len(requests)} to run, "
            f"{len(done)} already finished",
        )
        if not requests:
            self.queue.complete_unit(claim)
            return
        try:
            engine = self._engine_for(claim.model)
        except EngineFailure as exc:
            log.error("engine for %s failed to start: %s", claim.model, exc)
            self.queue.release_unit(
                claim, engine_error=str(exc), max_attempts=self.settings.engine_max_attempts
            )
            return
        stop = threading.Event()
        beat = threading.Thread(
            target=self._unit_heartbeat, args=(claim, stop), name="unit-heartbeat", daemon=True
        )
        beat.start()
        samples = SampleRecorder(self.db, claim.batch_id, claim.model, self.id)
        try:
            for result in engine.run(requests, stop.is_set):
                stored = self._to_result(result, custom_ids)
                self.queue.record(claim, [stored], self.id)
                samples.add(stored.input_tokens, stored.output_tokens)
        except LeaseLost:
            stop.set()
            return
        except Exception as exc:  # the engine itself broke: retry elsewhere/later
            stop.set()
            log.exception("engine for %s failed during unit %s", claim.model, claim.unit_id)
            self._close_engine()
            self.queue.release_unit(
                claim,
                engine_error=f"{type(exc).__name__}: {exc}",
                max_attempts=self.settings.engine_max_attempts,
            )
            return
        finally:
            samples.flush()
            interrupted = stop.is_set()
            stop.set()
            beat.join()
        try:
            if interrupted:
                self.queue.release_unit(claim, engine_error=None, max_attempts=0)
            else:
                self.queue.complete_unit(claim)
        except LeaseLost:
            pass

    def _unit_heartbeat(self, claim: Claim, stop: threading.Event) -> None:
        interval = min(1.0, self.settings.lease_seconds / 3)
        while not stop.wait(interval):
            if not self.queue.heartbeat(claim):
                stop.set()

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
        return Result(
            request_index=result.index,
            is_error=not result.ok,
            payload=json.dumps(line, ensure_ascii=False),
            input_tokens=int(use.get("prompt_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
            output_tokens=int(use.get("completion_tokens") or 0),
        )

    # -- the engine ---------------------------------------------------------------------

    def _engine_for(self, model_id: str) -> Engine:
        if self.engine is not None and self.engine.model_id == model_id:
            return self.engine
        self._close_engine()
        spec = self.settings.models.get(model_id)
        if spec is None:
            raise EngineFailure(f"model {model_id!r} is not in this worker's registry")
        self._set_state("loading", self.current_batch)
        started = time.monotonic()
        self.engine = load_engine(model_id, spec)
        log.info("loaded %s in %.1fs", model_id, time.monotonic() - started)
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
            except Exception:
                log.exception("worker heartbeat failed")

    def _unregister(self) -> None:
        try:
            with self.db.write() as s:
                s.execute(delete(WorkerRow).where(WorkerRow.id == self.id))
        except Exception:
            log.exception("could not unregister worker")
