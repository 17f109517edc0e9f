"""The worker: a loop that claims work units and runs them on its engine, with its parts
beside it (batch steps, presence).

A worker owns at most one engine (one loaded model) and keeps it loaded between units of
that model. It touches the database only through the
:class:`~batch_server.jobs.manager.JobManager`, so any number of workers may share one
database.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from batch_server import ids
from batch_server.config import Settings
from batch_server.gpu import GpuMonitor, host_hold_reason
from batch_server.jobs.manager import JobManager
from batch_server.jobs.queue import Claim
from batch_server.logs import bind
from batch_server.models.registry import ModelRegistry
from batch_server.plugins.manager import Plugins
from batch_server.statuses import WorkerState
from batch_server.storage import FileStore
from batch_server.wakeup import Wakeup
from batch_server.worker.engine_slot import EngineSlot
from batch_server.worker.fine_tuning import FineTuning
from batch_server.worker.model_tests import ModelTests
from batch_server.worker.presence import Presence
from batch_server.worker.runs import Runner
from batch_server.worker.steps import BatchSteps

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        settings: Settings,
        models: ModelRegistry,
        jobs: JobManager,
        store: FileStore,
        gpu: GpuMonitor,
        wake: Wakeup,
        plugins: Plugins | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.gpu = gpu
        self.wake = wake
        self.id = f"{socket.gethostname()}:{os.getpid()}:{ids.token()[:6]}"
        self.slot: EngineSlot
        self.presence = Presence(jobs, self.id, gpu, loaded=lambda: self.slot.model_id)
        self.slot = EngineSlot(settings, models, jobs, self.presence, store)
        self.model_tests = ModelTests(settings, models, self.slot, self.presence)
        self._stopping = threading.Event()
        self.fine_tuning = FineTuning(
            settings, models, store, self.presence, self._stopping, unload=self.slot.close
        )
        self.steps = BatchSteps(
            settings,
            models,
            jobs,
            store,
            self.presence,
            wake.waiter(),
            self.fine_tuning,
            plugins,
        )
        self.runner = Runner(
            settings,
            jobs,
            store,
            self.slot,
            self.presence,
            may_take_more=self._may_take_more,
            plugins=plugins,
        )
        self._waiter = wake.waiter()
        self._held: str | None = None
        self._next_claim: Claim | None = None

    def preload(self, model_id: str) -> None:
        self.slot.preload(model_id)

    def run_forever(self) -> None:
        self.presence.start()
        self.wake.listen()
        self.steps.start()
        log.info("worker %s started", self.id)
        try:
            while not self._stopping.is_set():
                self._waiter.clear()
                try:
                    busy = self.step()
                except Exception:
                    log.exception("worker step failed")
                    busy = False
                if not busy:
                    self._waiter.wait(self.settings.poll_seconds)
        finally:
            if self._next_claim:  # claimed but never started: back to the queue
                self.runner.leases.give_back(self._next_claim)
            self.steps.stop()
            self.wake.close()
            self.slot.close()
            self.presence.stop()
            log.info("worker %s stopped", self.id)

    def stop(self) -> None:
        self._stopping.set()
        self._waiter.set()

    def step(self) -> bool:
        """Run one unit (and those its run takes on); ``False`` when there was none."""
        with bind(request_id=f"step_{ids.token()[:12]}"):
            # A unit of another model claimed at the end of the last run goes first: it is
            # ours already, and nothing renews its lease until it runs.
            claim, self._next_claim = self._next_claim, None
            if claim is not None and not self.jobs.heartbeat(claim):
                self.runner.leases.give_back(claim)  # cancelled (or lost) while it waited
                claim = None
            if claim is None:
                if self._check_hold():
                    self.presence.engine(WorkerState.HELD)
                    return False
                if self.model_tests.step():  # a test load goes before any unit
                    return True
                if self.fine_tuning.step():  # a fine-tuning job too: it unloads the engine
                    return True
                claim = self.jobs.claim_unit(self.id, prefer_model=self.slot.model_id)
                if claim is None:
                    self.presence.engine(WorkerState.IDLE)
                    return False
            self.presence.engine(WorkerState.RUNNING, claim.batch_id)
            try:
                with bind(batch_id=claim.batch_id):
                    self._next_claim = self.runner.run(claim)
            finally:
                self.presence.engine(WorkerState.IDLE)
            return True

    def _may_take_more(self) -> bool:
        return not self._stopping.is_set() and not self._check_hold()

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
        own = self.slot.memory_bytes()
        return host_hold_reason(self.settings.host_max_memory_percent, discount_bytes=own)
