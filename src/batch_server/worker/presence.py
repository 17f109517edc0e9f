"""A worker's presence: its row in the workers table (what it does, which model it has
loaded), refreshed every two seconds beside the work, with its host's GPU readings."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from batch_server import metrics
from batch_server.gpu import GpuMonitor
from batch_server.jobs.manager import JobManager
from batch_server.statuses import WorkerState

log = logging.getLogger(__name__)

BEAT_SECONDS = 2.0


class Presence:
    """What the worker's parts are doing, and the thread that reports it. The engine part
    and the batch-step part each set their own state; the row shows the engine's unless
    it is idle and a step is going on."""

    def __init__(
        self, jobs: JobManager, worker_id: str, gpu: GpuMonitor, loaded: Callable[[], str | None]
    ) -> None:
        self.jobs = jobs
        self.id = worker_id
        self.gpu = gpu
        self._loaded = loaded
        self.engine_state = WorkerState.IDLE
        self.engine_batch: str | None = None
        self.step_state = WorkerState.IDLE
        self.step_batch: str | None = None
        self._started = time.time()
        self._stopping = threading.Event()
        self._changed = threading.Event()  # a state to show now, not at the next beat
        self._thread: threading.Thread | None = None

    def engine(self, state: WorkerState, batch_id: str | None = None) -> None:
        changed = (state, batch_id) != (self.engine_state, self.engine_batch)
        self.engine_state, self.engine_batch = state, batch_id
        if changed:
            self._changed.set()

    def step(self, state: WorkerState, batch_id: str | None = None) -> None:
        changed = (state, batch_id) != (self.step_state, self.step_batch)
        self.step_state, self.step_batch = state, batch_id
        if changed:
            self._changed.set()

    def shown(self) -> tuple[WorkerState, str | None]:
        if self.engine_state == WorkerState.IDLE and self.step_state != WorkerState.IDLE:
            return self.step_state, self.step_batch
        return self.engine_state, self.engine_batch

    def start(self) -> None:
        self.report()
        self._thread = threading.Thread(target=self._beat, name="worker-presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.jobs.worker_gone(self.id)
        except Exception:
            log.exception("could not unregister worker")

    def report(self) -> None:
        state, batch_id = self.shown()
        self.jobs.worker_seen(
            self.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started,
            state=state,
            loaded_model=self._loaded(),
            current_batch_id=batch_id,
        )

    def _beat(self) -> None:
        """Report every :data:`BEAT_SECONDS`, and at once when a state changes."""
        last_gpu = time.monotonic()
        while True:
            self._changed.wait(BEAT_SECONDS)
            self._changed.clear()
            if self._stopping.is_set():
                return
            try:
                self.report()
                if time.monotonic() - last_gpu >= BEAT_SECONDS:
                    last_gpu = time.monotonic()
                    metrics.report_gpus(self.jobs.db, socket.gethostname(), self.gpu.read())
            except Exception:
                log.exception("worker heartbeat failed")
