"""Fine-tuning objects, in OpenAI's shapes (``openai/types/fine_tuning``): the job, its
events and checkpoints, their list pages, and the body ``POST /v1/fine_tuning/jobs``
accepts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batch_server.db.tables import (
    FineTuningCheckpointRow,
    FineTuningEventRow,
    FineTuningJobRow,
)
from batch_server.openai_types.common import APIObject, Identified, ListObject

FineTuningStatus = Literal[
    "validating_files", "queued", "running", "succeeded", "failed", "cancelled"
]
Auto = Literal["auto"]


class Hyperparameters(APIObject):
    """The hyperparameters of a job: as asked for at creation, with ``"auto"`` replaced by
    the values used once the training file is validated."""

    batch_size: Auto | int | None
    learning_rate_multiplier: Auto | float | None
    n_epochs: Auto | int | None


class SupervisedMethod(APIObject):
    hyperparameters: Hyperparameters


class Method(APIObject):
    type: Literal["supervised"]
    supervised: SupervisedMethod


class JobError(APIObject):
    """Why a job failed: OpenAI's codes (``invalid_training_file``, ``invalid_n_examples``,
    ``training_failed``, …); ``param`` names the file when the file was at fault."""

    code: str
    message: str
    param: str | None


class FineTuningJob(Identified):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: FineTuningStatus
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None
    integrations: list[Any] | None
    metadata: dict[str, str] | None
    method: Method
    # Extensions: the training's progress (steps saved in a checkpoint, of how many).
    step: int
    total_steps: int | None

    @classmethod
    def from_row(cls, row: FineTuningJobRow) -> FineTuningJob:
        hyper = Hyperparameters.model_validate(_openai_keys(row.hyperparameters))
        return cls(
            id=row.id,
            created_at=row.created_at,
            error=JobError.model_validate(row.error) if row.error else None,
            fine_tuned_model=row.fine_tuned_model,
            finished_at=row.finished_at,
            hyperparameters=hyper,
            model=row.model,
            organization_id=row.owner or "org-local",
            result_files=list(row.result_files or []),
            seed=row.seed,
            status=row.status,
            trained_tokens=row.trained_tokens,
            training_file=row.training_file,
            validation_file=row.validation_file,
            estimated_finish=row.estimated_finish,
            integrations=[],
            metadata=row.metadata_,
            method=Method(type="supervised", supervised=SupervisedMethod(hyperparameters=hyper)),
            step=row.step,
            total_steps=row.total_steps,
        )


def _openai_keys(values: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("batch_size", "learning_rate_multiplier", "n_epochs")
    return {k: (values or {}).get(k, "auto") for k in keys}


def job_object(row: FineTuningJobRow) -> dict[str, Any]:
    return FineTuningJob.from_row(row).model_dump(mode="json")


class FineTuningJobList(ListObject[FineTuningJob]):
    pass


class FineTuningJobEvent(Identified):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None
    type: Literal["message", "metrics"]

    @classmethod
    def from_row(cls, row: FineTuningEventRow) -> FineTuningJobEvent:
        return cls(
            id=row.id,
            created_at=row.created_at,
            level=row.level,
            message=row.message,
            data=row.data or {},
            type=row.type,
        )


class FineTuningJobEventList(ListObject[FineTuningJobEvent]):
    pass


class CheckpointMetrics(APIObject):
    step: float | None
    train_loss: float | None
    train_mean_token_accuracy: float | None
    valid_loss: float | None
    valid_mean_token_accuracy: float | None
    full_valid_loss: float | None
    full_valid_mean_token_accuracy: float | None


class FineTuningJobCheckpoint(Identified):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int

    @classmethod
    def from_row(cls, row: FineTuningCheckpointRow) -> FineTuningJobCheckpoint:
        fields = CheckpointMetrics.model_fields
        metrics = {k: (row.metrics or {}).get(k) for k in fields}
        return cls(
            id=row.id,
            created_at=row.created_at,
            fine_tuned_model_checkpoint=row.fine_tuned_model_checkpoint,
            fine_tuning_job_id=row.job_id,
            metrics=CheckpointMetrics.model_validate(metrics),
            step_number=row.step,
        )


class FineTuningJobCheckpointList(ListObject[FineTuningJobCheckpoint]):
    pass


# -- the creation body ------------------------------------------------------------------


class HyperparametersBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: Auto | int | None = None
    learning_rate_multiplier: Auto | float | None = None
    n_epochs: Auto | int | None = None


class SupervisedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: HyperparametersBody | None = None


class MethodBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised"]
    supervised: SupervisedBody | None = None


class CreateFineTuningJobBody(BaseModel):
    """``POST /v1/fine_tuning/jobs``, as OpenAI's (``integrations`` is accepted and must be
    empty: no Weights & Biases here)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    hyperparameters: HyperparametersBody | None = None
    method: MethodBody | None = None
    suffix: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"
    )
    seed: int | None = Field(default=None, ge=0, le=2_147_483_647)
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None

    def requested_hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters asked for (``method.supervised`` wins over the deprecated
        top-level ``hyperparameters``), without the ones left out."""
        chosen = self.hyperparameters
        if self.method is not None and self.method.supervised is not None:
            chosen = self.method.supervised.hyperparameters or chosen
        return chosen.model_dump(exclude_none=True) if chosen else {}
