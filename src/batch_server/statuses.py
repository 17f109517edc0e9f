"""The statuses of batches, work units and workers: one enum each, shared by the job
manager (which writes them), the API objects (which show them) and the pages.

They are ``StrEnum``: stored and sent as their plain string values.
"""

from __future__ import annotations

from enum import StrEnum


class BatchStatus(StrEnum):
    """OpenAI's batch statuses."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


# Batches still moving, and those that have ended.
LIVE = (
    BatchStatus.VALIDATING,
    BatchStatus.IN_PROGRESS,
    BatchStatus.FINALIZING,
    BatchStatus.CANCELLING,
)
TERMINAL = (
    BatchStatus.COMPLETED,
    BatchStatus.FAILED,
    BatchStatus.EXPIRED,
    BatchStatus.CANCELLED,
)
# Batches that can still be changed by their owner (cancel, priority) or get an outcome.
OPEN = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)


class UnitStatus(StrEnum):
    """A work unit: waiting, leased to a worker, done, or closed (fenced for good by a
    cancel, expiry or failure of its batch)."""

    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"
    CLOSED = "closed"


class WorkerState(StrEnum):
    """What a worker is doing, as shown in the workers table and on the dashboard."""

    IDLE = "idle"
    HELD = "held"
    LOADING = "loading"
    RUNNING = "running"
    VALIDATING = "validating"
    FINALIZING = "finalizing"
    TRAINING = "training"  # a fine-tuning job (its engine unloaded)
