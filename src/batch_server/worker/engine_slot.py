"""The worker's one engine slot: the loaded engine, loading another model's, and the
restart policy for an engine whose memory has grown."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from batch_server import metrics
from batch_server.config import ModelSpec, Settings
from batch_server.engines import start_engine
from batch_server.engines.base import EngineFailure
from batch_server.engines.process import EngineProcess
from batch_server.fine_tuning import artifacts
from batch_server.jobs import reports
from batch_server.jobs.manager import JobManager
from batch_server.models import provenance
from batch_server.models.registry import ModelRegistry
from batch_server.statuses import WorkerState
from batch_server.storage import FileStore
from batch_server.worker.presence import Presence

log = logging.getLogger(__name__)

WARM_REQUESTS = 256  # finished requests after which an engine's memory is its baseline


@dataclass(frozen=True)
class MemoryPolicy:
    """When an engine must be restarted between runs. Its host memory can grow with every
    request it serves (vLLM's CPU worker does, by a few KB per request); ending its
    process tree is the one remedy that works whatever the cause."""

    cap_mib: int | None  # the model's max_memory_mb
    growth_limit: float | None  # engine_memory_growth_limit: a factor of the warm baseline
    unit_size: int  # the model's requests per unit

    def restart_reason(self, rss: int, warm: int | None, results: int, runs: int) -> str | None:
        """Why an engine using ``rss`` bytes (``warm`` once warm) after ``results``
        requests in ``runs`` runs must restart, if it must."""
        mib = rss / 2**20
        if self.cap_mib and mib > self.cap_mib:
            reason = f"uses {mib:.0f} MiB, above its max_memory_mb ({self.cap_mib})"
            if runs == 1 and results <= self.unit_size:
                reason += (
                    f"; it was above that after {results} requests, so max_memory_mb "
                    "is too low for this model and every unit reloads it"
                )
            return reason
        if self.growth_limit and warm and rss > self.growth_limit * warm:
            return (
                f"grew from {warm / 2**20:.0f} MiB once warm to "
                f"{mib:.0f} MiB (engine_memory_growth_limit {self.growth_limit})"
            )
        return None


class EngineSlot:
    def __init__(
        self,
        settings: Settings,
        models: ModelRegistry,
        jobs: JobManager,
        presence: Presence,
        store: FileStore,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.jobs = jobs
        self.presence = presence
        self.engine: EngineProcess | None = None
        self.load_seconds: float | None = None  # how long the loaded engine took to load
        self._entry: ModelSpec | None = None  # the registry entry the engine was loaded from
        self._spec: ModelSpec | None = None  # the loaded engine's spec, as it got it
        self._record: dict[str, Any] | None = None

    def provenance(self) -> dict[str, Any]:
        """The loaded engine's provenance record (see models.provenance), made once."""
        assert self.engine is not None and self._spec is not None
        if self._record is None:
            self._record = provenance.describe(
                self.engine.model_id, self._spec, self.settings.data_dir, self.settings
            ) | {"engine_load_seconds": round(self.load_seconds or 0.0, 3)}
        return self._record

    @property
    def model_id(self) -> str | None:
        return self.engine.model_id if self.engine else None

    def memory_bytes(self) -> int:
        return self.engine.memory_bytes() if self.engine else 0

    def engine_for(self, model_id: str) -> EngineProcess:
        """The engine of ``model_id``, loaded in place of the current one if need be (and
        reloaded when its registry entry changed since it was loaded)."""
        # A model added less than the cache's age ago is read fresh.
        spec = self.models.current().get(model_id) or self.models.refresh().get(model_id)
        if self.engine is not None and self.engine.model_id == model_id and spec == self._entry:
            return self.engine
        self.close()
        if spec is None:
            raise EngineFailure(f"model {model_id!r} is not in the registry")
        state, batch_id = self.presence.engine_state, self.presence.engine_batch
        self.presence.engine(WorkerState.LOADING, batch_id)
        started = time.monotonic()
        try:
            here = artifacts.local_spec(
                self.settings, self.store, self.jobs.db, model_id, spec, self.models.current()
            )
            sized = self._sized(here)
            self.engine = start_engine(
                model_id,
                sized,
                self.settings.data_dir,
                self.settings.engine_start_timeout,
            )
        finally:
            self.presence.engine(state, batch_id)
        seconds = time.monotonic() - started
        self._entry, self._spec, self._record = spec, sized, None
        self.load_seconds = seconds
        log.info("loaded %s in %.1fs", model_id, seconds)
        labels = {"model": model_id}
        metrics.count(self.jobs.db, "engine_loads", labels)
        metrics.count(self.jobs.db, "engine_load_seconds_sum", labels, seconds)
        return self.engine

    def _sized(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with its CPU threads set to this worker's share of the host (the cores
        it may use, divided among the live workers on this host), unless it sets them. A
        llama.cpp engine's threads spin: engines that together ask for more threads than
        there are cores stall one another."""
        if spec.engine != "llamacpp" or "n_threads" in spec.engine_args:
            return spec
        host = socket.gethostname()
        workers = sum(1 for w in reports.workers(self.jobs.db) if w["hostname"] == host)
        threads = max(1, len(os.sched_getaffinity(0)) // max(1, workers))
        log.info("engine threads: %d (%d worker(s) on this host)", threads, workers)
        return spec.model_copy(update={"engine_args": {**spec.engine_args, "n_threads": threads}})

    def preload(self, model_id: str) -> None:
        try:
            self.engine_for(model_id)
        except EngineFailure as exc:
            log.error("could not preload %s: %s", model_id, exc)

    def close(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            engine.close()

    def restart_reason(self, engine: EngineProcess) -> str | None:
        """Why the engine should be restarted before it takes more work, if it should."""
        rss = engine.memory_bytes()
        # The baseline is taken once the engine is warm: a first unit of a few requests
        # has not yet touched the buffers that later, fuller batches use.
        if engine.warm_memory is None and engine.results >= WARM_REQUESTS:
            engine.warm_memory = rss
        registry = self.models.current()
        spec = registry.get(engine.model_id)
        policy = MemoryPolicy(
            cap_mib=spec.max_memory_mb if spec else None,
            growth_limit=self.settings.engine_memory_growth_limit,
            unit_size=registry.unit_size_for(engine.model_id),
        )
        return policy.restart_reason(rss, engine.warm_memory, engine.results, engine.runs)

    def restart_if_grown(self, batch_id: str, reason: str | None = None) -> None:
        """Restart the engine after a run (no request in flight) if its memory has grown
        past the limits, or for ``reason`` (found during the run)."""
        engine = self.engine
        if engine is not None and reason is None:
            reason = self.restart_reason(engine)
        if engine is None or reason is None:
            return
        log.warning("restarting the engine for %s: it %s", engine.model_id, reason)
        self.close()
        self.jobs.log(batch_id, "engine", f"engine for {engine.model_id} restarted: it {reason}")
        metrics.count(self.jobs.db, "engine_restarts", {"model": engine.model_id})
