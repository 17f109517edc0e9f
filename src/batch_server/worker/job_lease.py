"""The lease of the fine-tuning job a worker trains: renewed every second beside the
training run, which it stops when the worker is shutting down and kills when the lease is
lost (taken over, or the job cancelled)."""

from __future__ import annotations

import logging
import threading

from batch_server.db.session import Database
from batch_server.fine_tuning import jobs
from batch_server.fine_tuning.runner import DoneEvent, TrainingRun

log = logging.getLogger(__name__)


class JobLease(threading.Thread):
    """Renews a job's lease every second; tells the run to stop when the worker is shutting
    down and kills it when the lease is lost (taken over, or the job cancelled)."""

    def __init__(
        self, db: Database, claim: jobs.Claim, lease_seconds: float, stopping: threading.Event
    ) -> None:
        super().__init__(name=f"lease-{claim.job_id}", daemon=True)
        self.db, self.claim, self.lease_seconds, self.stopping = db, claim, lease_seconds, stopping
        self.run_: TrainingRun | None = None
        self.state = jobs.OK
        self.final: DoneEvent | None = None  # the run finished its last step
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            try:
                state = jobs.heartbeat(self.db, self.claim, self.lease_seconds)
            except Exception:  # a busy database: the next beat may get through
                log.exception("heartbeat of fine-tuning job %s failed", self.claim.job_id)
                continue
            if state == jobs.OK and self.stopping.is_set():
                state = "stopping"
            self.state = state
            if self.run_ is not None and state != jobs.OK:
                if state == jobs.LOST:
                    self.run_.kill()
                else:  # a worker shutting down keeps the step in a checkpoint
                    self.run_.stop(checkpoint=True)
