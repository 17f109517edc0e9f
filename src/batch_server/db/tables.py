"""The database schema. Alembic migrations under ``migrations/`` must produce exactly this
(a test compares them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class FileRow(Base):
    """Metadata of a stored file; the bytes live in the FileStore under ``id``."""

    __tablename__ = "files"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(32), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    # When housekeeping deletes the file (``expires_after`` of the upload, a batch's
    # ``output_expires_after`` for its output and error files); None: kept until deleted.
    expires_at: Mapped[int | None] = mapped_column(BigInteger, index=True)
    status: Mapped[str] = mapped_column(String(16), default="processed")
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # The API key that owns the file (None when the server runs without keys).
    owner: Mapped[str | None] = mapped_column(String(64), index=True)


class BatchRow(Base):
    """A batch. ``status`` and the ``*_at`` timestamps are written only by
    :mod:`batch_server.jobs.lifecycle`."""

    __tablename__ = "batches"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(256))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # An outcome decided while the batch runs ("expired", "failed"), carried out by
    # finalization, which then sets the matching status.
    pending_outcome: Mapped[str | None] = mapped_column(String(16))
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    # OpenAI's output_expires_after.seconds: the output and error files expire this long
    # after they are created (None: they are kept until deleted).
    output_expires_after: Mapped[int | None] = mapped_column(Integer)

    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    in_progress_at: Mapped[int | None] = mapped_column(BigInteger)
    finalizing_at: Mapped[int | None] = mapped_column(BigInteger)
    completed_at: Mapped[int | None] = mapped_column(BigInteger)
    failed_at: Mapped[int | None] = mapped_column(BigInteger)
    expired_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelling_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger)

    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)

    # Lease on the batch-level steps (validation, finalization) so exactly one worker
    # does them and a dead worker's step is taken over after the lease runs out.
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)

    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    # Where and which events to deliver, resolved at creation (batch metadata or the
    # server default), so the status writer needs no settings to fill the outbox.
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_events: Mapped[str | None] = mapped_column(String(256))
    webhook_progress_at: Mapped[float | None] = mapped_column(Float)
    # "batch" (a user's), "benchmark" (POST /v1/benchmarks: kept out of history unless
    # asked for) or "comparison" (one of a comparison's linked batches).
    kind: Mapped[str] = mapped_column(String(16), default="batch", server_default="batch")


class WorkUnitRow(Base):
    """A contiguous range of request lines of one batch and one model, claimed with a lease."""

    __tablename__ = "work_units"
    __table_args__ = (
        UniqueConstraint("batch_id", "index"),
        Index("ix_work_units_claim", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(256))
    first_request: Mapped[int] = mapped_column(Integer)
    request_count: Mapped[int] = mapped_column(Integer)
    byte_start: Mapped[int] = mapped_column(BigInteger)
    byte_end: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|leased|done
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    engine_failures: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)


class ResultRow(Base):
    """One finished request: its complete output or error line, written durably the moment
    it finishes. Finalization streams these into the output and error files."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("batch_id", "request_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    request_index: Mapped[int] = mapped_column(Integer)
    is_error: Mapped[bool] = mapped_column(Boolean)
    payload: Mapped[str] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(128))
    # From the plugins (batch_server.plugins), written with the result: the fields a parser
    # made of the answer (checked against its template's output schema), a parse or rating
    # failure (with the plugin's name), and the automatic ratings.
    fields: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    plugin_error: Mapped[str | None] = mapped_column(Text)
    ratings: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class BatchEventRow(Base):
    """What happened to a batch and when (status changes, worker events)."""

    __tablename__ = "batch_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)


class WorkerRow(Base):
    """Heartbeat of each worker process, for ``/ready`` and the queue view."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    loaded_model: Mapped[str | None] = mapped_column(String(256))
    current_batch_id: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32), default="idle")


class ApiKeyRow(Base):
    """An API key. Only the SHA-256 of the token is stored (tokens are 256 random bits, so a
    fast hash is enough); ``prefix`` lets people recognise a key in listings."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    prefix: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    # Per-key overrides of the limits (see batch_server.limits.Limits); None = defaults.
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class RuntimeConfigRow(Base):
    """Settings changed at run time through the admin API (limits, the webhook secret)."""

    __tablename__ = "runtime_config"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)


class WebhookDeliveryRow(Base):
    """The webhook outbox: one row per event to deliver, written in the same transaction as
    the status change. ``status``: pending | delivered | dead (the dead letter queue)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[str] = mapped_column(Text)  # the exact bytes sent (UTF-8)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float)


class MetricRow(Base):
    """Counters and gauges that workers (any process, any host) report for ``/metrics``.
    ``labels`` is the label set as sorted ``k=v`` pairs joined by ``,``."""

    __tablename__ = "metrics"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    labels: Mapped[str] = mapped_column(String(512), primary_key=True)
    value: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[float] = mapped_column(Float)


class ThroughputSampleRow(Base):
    """A slice (a few seconds) of one worker's engine time on one batch and model: how many
    requests and tokens it finished. ETAs, the throughput chart and the models page are
    computed from these (see :mod:`batch_server.estimates`)."""

    __tablename__ = "throughput_samples"
    __table_args__ = (Index("ix_throughput_samples_model_end", "model", "ended_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(256))
    worker: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float] = mapped_column(Float, index=True)
    requests: Mapped[int] = mapped_column(Integer)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)


class ModelRow(Base):
    """One model of the registry. Rows of ``origin`` "config" are written from the config
    file at every start (the file is authoritative for them); rows of origin "api" come
    from ``POST /v1/admin/models``. ``spec`` is a :class:`~batch_server.config.ModelSpec`."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    origin: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)
    # From the latest test load: "untested" | "testing" | "ready" | "failed".
    status: Mapped[str] = mapped_column(String(16), default="untested")
    status_reason: Mapped[str | None] = mapped_column(Text)


class ModelTestRow(Base):
    """A test load (``POST /v1/admin/models/{id}/test``): a worker claims it with a lease,
    loads the model in its engine process and runs one request."""

    __tablename__ = "model_tests"
    __table_args__ = (Index("ix_model_tests_claim", "status", "lease_expires_at"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(256), index=True)
    status: Mapped[str] = mapped_column(String(16))  # queued|running|succeeded|failed
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(128))
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    load_seconds: Mapped[float | None] = mapped_column(Float)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    time_to_first_token: Mapped[float | None] = mapped_column(Float)
    request_seconds: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    output: Mapped[str | None] = mapped_column(Text)
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class BatchRunRow(Base):
    """What produced a batch's results on one worker: the model's weights (SHA-256, or the
    package and version), the engine and its version and arguments, the sampling defaults,
    the server version, the host; and the engine's load time and peak memory."""

    __tablename__ = "batch_runs"
    __table_args__ = (UniqueConstraint("batch_id", "model", "worker"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(256))
    worker: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[float] = mapped_column(Float)
    first_result_at: Mapped[float | None] = mapped_column(Float)
    load_seconds: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)


class BenchmarkRow(Base):
    """A benchmark: a batch of kind "benchmark" and, once it ended, its figures."""

    __tablename__ = "benchmarks"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(256), index=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    dataset: Mapped[str] = mapped_column(String(64))  # "generated" or the input file's id
    requests: Mapped[int] = mapped_column(Integer)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    figures: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    host: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ComparisonRow(Base):
    """One input run on 2..N models: a linked batch (kind "comparison") per model."""

    __tablename__ = "comparisons"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    input_file_id: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(64))
    # model id -> batch id, in the order the models were asked for
    batches: Mapped[dict[str, str]] = mapped_column(JSON)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)


class ComparisonPickRow(Base):
    """The better answer picked for one request of a comparison (a preference label)."""

    __tablename__ = "comparison_picks"
    __table_args__ = (UniqueConstraint("comparison_id", "custom_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    comparison_id: Mapped[str] = mapped_column(String(64), index=True)
    custom_id: Mapped[str] = mapped_column(String(512))
    model: Mapped[str | None] = mapped_column(String(256))  # None: a tie / none is better
    rater: Mapped[str | None] = mapped_column(String(256))
    at: Mapped[float] = mapped_column(Float)


class AnnotationRow(Base):
    """A reviewer's verdict on one request of a batch: a label (golden | fixed | wrong |
    skip), the corrected answer of a ``fixed`` one, a note, a 1–5 rating, who and when.
    ``owner`` is the batch's owner (tenancy); ``model`` the model that answered."""

    __tablename__ = "annotations"
    __table_args__ = (
        UniqueConstraint("batch_id", "custom_id"),
        Index("ix_annotations_owner_label", "owner", "label"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    custom_id: Mapped[str] = mapped_column(String(512))
    request_index: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(256))
    label: Mapped[str | None] = mapped_column(String(16))
    fixed_answer: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    rating: Mapped[int | None] = mapped_column(Integer)
    rater: Mapped[str | None] = mapped_column(String(256))
    # where the annotation came from: "api", "dashboard", "label_studio"
    source: Mapped[str] = mapped_column(String(32), default="api")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class AnnotationEventRow(Base):
    """The history of an annotation: every change (and deletion) with the values before
    and after."""

    __tablename__ = "annotation_events"
    __table_args__ = (Index("ix_annotation_events_request", "batch_id", "custom_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64))
    custom_id: Mapped[str] = mapped_column(String(512))
    at: Mapped[float] = mapped_column(Float)
    rater: Mapped[str | None] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(16))  # put | delete
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class CollectionRow(Base):
    """A named set of annotated examples (e.g. "golden-recruiting-v3"); each change makes
    a new version whose items are frozen, so an export of a version is reproducible."""

    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("owner", "name"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer, default=0)  # the latest version


class CollectionVersionRow(Base):
    """One version of a collection: the rule that built it and, once ``ready``, its item
    count. It is written first (``building``: the unique key reserves the number), then
    the items, then it turns ``ready``; readers see only ready versions."""

    __tablename__ = "collection_versions"
    __table_args__ = (UniqueConstraint("collection_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # building | ready
    created_at: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer, default=0)
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class CollectionItemRow(Base):
    """One example of one version of a collection, frozen when the version was made: the
    request (prompt messages), the answer to learn from (a ``fixed`` annotation's
    correction, else the model's), the label, rating, model and parsed fields."""

    __tablename__ = "collection_items"
    __table_args__ = (
        UniqueConstraint("collection_id", "version", "batch_id", "custom_id"),
        Index("ix_collection_items_version", "collection_id", "version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    batch_id: Mapped[str] = mapped_column(String(64))
    custom_id: Mapped[str] = mapped_column(String(512))
    example: Mapped[dict[str, Any]] = mapped_column(JSON)


class LabelStudioTaskRow(Base):
    """A request sent to a Label Studio project as a task, and when its annotation came
    back."""

    __tablename__ = "label_studio_tasks"
    __table_args__ = (UniqueConstraint("project_id", "task_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    custom_id: Mapped[str] = mapped_column(String(512))
    project_id: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[int] = mapped_column(Integer)
    pushed_at: Mapped[float] = mapped_column(Float)
    pulled_at: Mapped[float | None] = mapped_column(Float)


class PluginStateRow(Base):
    """A plugin switched on or off through the admin API; every worker and API replica
    obeys it. A plugin without a row is enabled (unless it failed to load)."""

    __tablename__ = "plugin_states"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[float] = mapped_column(Float)


class FineTuningJobRow(Base):
    """A fine-tuning job (``POST /v1/fine_tuning/jobs``), in OpenAI's shape. A worker claims
    it with a lease like a work unit; ``step`` is the last step saved in a checkpoint, where
    a worker that takes the job over resumes."""

    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (Index("ix_fine_tuning_jobs_claim", "status", "lease_expires_at"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(256))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64))
    # {"type": "supervised", "supervised": {"hyperparameters": {...}}} as asked for, and
    # the hyperparameters as resolved ("auto" replaced by the values used).
    method: Mapped[dict[str, Any]] = mapped_column(JSON)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    # validating_files | queued | running | succeeded | failed | cancelled
    status: Mapped[str] = mapped_column(String(24))
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(256))
    result_files: Mapped[list[str] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(128))
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class FineTuningEventRow(Base):
    """An event of a fine-tuning job (``GET …/events``). ``key`` (e.g. ``step:12``) makes an
    event written again after a resume from a checkpoint a no-op instead of a duplicate."""

    __tablename__ = "fine_tuning_events"
    __table_args__ = (UniqueConstraint("job_id", "key"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(16))  # message | metrics
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    key: Mapped[str | None] = mapped_column(String(64))


class FineTuningCheckpointRow(Base):
    """A saved training state of a job (the adapter, optimizer and scheduler), kept in the
    file store under ``location`` so a worker on another host can resume from it."""

    __tablename__ = "fine_tuning_checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(256))
    location: Mapped[str] = mapped_column(String(1024))
