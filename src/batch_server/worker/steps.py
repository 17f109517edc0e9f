"""Batch steps beside the engine: expiry, housekeeping, validation and finalization (and
the validation of fine-tuning jobs' files).

They run in a thread of their own, so a new batch is validated as soon as it is created
and a finished one finalized at once, whatever the engine is doing (a long unit of
another batch, a model loading). Each step is leased on its batch row, so any number of
workers may share the work.
"""

from __future__ import annotations

import logging
import threading
import time

from batch_server import ids
from batch_server.config import Settings
from batch_server.jobs import housekeeping
from batch_server.jobs.finalize import finalize
from batch_server.jobs.manager import JobManager
from batch_server.jobs.validation import validate_batch
from batch_server.logs import bind
from batch_server.models.registry import ModelRegistry
from batch_server.plugins.manager import Plugins
from batch_server.statuses import WorkerState
from batch_server.storage import FileStore
from batch_server.wakeup import Waiter
from batch_server.worker.fine_tuning import FineTuning
from batch_server.worker.presence import Presence

log = logging.getLogger(__name__)

EXPIRY_CHECK_SECONDS = 1.0


class BatchSteps:
    def __init__(
        self,
        settings: Settings,
        models: ModelRegistry,
        jobs: JobManager,
        store: FileStore,
        presence: Presence,
        waiter: Waiter,
        fine_tuning: FineTuning,
        plugins: Plugins | None = None,
    ) -> None:
        self.settings = settings
        self.models = models
        self.jobs = jobs
        self.store = store
        self.presence = presence
        self.waiter = waiter
        self.fine_tuning = fine_tuning
        self.plugins = plugins
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_expiry_check = 0.0
        self._last_housekeeping = time.monotonic()  # the first pass after one interval

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="batch-steps", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.waiter.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self.waiter.clear()
            try:
                busy = self.step()
            except Exception:
                log.exception("batch step failed")
                busy = False
            if not busy:
                self.waiter.wait(min(self.settings.poll_seconds, EXPIRY_CHECK_SECONDS))

    def step(self) -> bool:
        """Expire overdue batches, keep the tables tidy, and do one batch step if one is
        waiting; ``True`` if a step was done."""
        now = time.monotonic()
        if now - self._last_expiry_check >= EXPIRY_CHECK_SECONDS:
            self._last_expiry_check = now
            self.jobs.mark_expired()
        if now - self._last_housekeeping > self.settings.housekeeping_seconds:
            self._last_housekeeping = now
            housekeeping.run(self.jobs.db, self.settings, self.store)
        step = self.jobs.claim_batch_step(self.presence.id)
        if step is None:
            return self._fine_tuning_files()
        validating = step.kind == "validate"
        self.presence.step(
            WorkerState.VALIDATING if validating else WorkerState.FINALIZING, step.batch_id
        )
        try:
            with bind(batch_id=step.batch_id, request_id=f"step_{ids.token()[:12]}"):
                log.info("%s step", step.kind)
                if validating:
                    validate_batch(
                        self.jobs,
                        self.store,
                        self.settings,
                        # fresh: a model added a moment ago is known
                        self.models.refresh(),
                        step.batch_id,
                        step.token,
                        self.plugins,
                    )
                else:
                    finalize(self.jobs, self.store, step.batch_id, step.token)
        finally:
            self.presence.step(WorkerState.IDLE)
        return True

    def _fine_tuning_files(self) -> bool:
        """Validate a fine-tuning job's files, if one waits."""
        return self.fine_tuning.validate_step()
