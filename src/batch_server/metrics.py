"""Prometheus metrics, built from the database at scrape time.

Workers may run in other processes or on other hosts, so nothing a worker counts lives in
process memory: workers add to counters in the ``metrics`` table (in the same transaction
as the work they count) and the collector reads that table and the batch tables whenever
``/metrics`` is scraped — from any API process, all figures agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from batch_server.db.dialect import upsert
from batch_server.db.session import Database
from batch_server.db.tables import (
    BatchRow,
    FineTuningEventRow,
    FineTuningJobRow,
    MetricRow,
    WebhookDeliveryRow,
    WorkerRow,
)
from batch_server.openai_types import GpuReading

log = logging.getLogger(__name__)

PREFIX = "batch_server"
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)
FINE_TUNING_STATUSES = (
    "validating_files",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
GAUGE_FRESH_SECONDS = 30.0


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def _parse(labels: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in labels.split(",") if pair)


def increment(s: Session, name: str, labels: dict[str, str], amount: float = 1.0) -> None:
    """Add to a counter, inside the caller's transaction."""
    _upsert(s, name, labels, amount, add=True)


def count(db: Database, name: str, labels: dict[str, str], amount: float = 1.0) -> None:
    """Add to a counter in a transaction of its own."""
    with db.write() as s:
        increment(s, name, labels, amount)


def set_gauge(s: Session, name: str, labels: dict[str, str], value: float) -> None:
    _upsert(s, name, labels, value, add=False)


def _upsert(s: Session, name: str, labels: dict[str, str], value: float, add: bool) -> None:
    now = time.time()
    upsert(
        s,
        MetricRow,
        {"name": name, "labels": _labels(labels), "value": value, "updated_at": now},
        keys=("name", "labels"),
        updates=lambda new: {
            "value": MetricRow.value + new.value if add else new.value,
            "updated_at": now,
        },
    )


# -- GPU figures, reported by each worker's heartbeat -----------------------------------


def report_gpus(db: Database, host: str, readings: list[GpuReading]) -> None:
    """Write memory, utilisation and temperature of this host's GPUs (as read by the
    worker's :class:`~batch_server.gpu.GpuMonitor`; none without NVML)."""
    if not readings:
        return
    with db.write() as s:
        for r in readings:
            labels = {"host": host, "gpu": str(r.index)}
            set_gauge(s, "gpu_memory_used_bytes", labels, float(r.memory_used_bytes))
            set_gauge(s, "gpu_memory_total_bytes", labels, float(r.memory_total_bytes))
            set_gauge(s, "gpu_utilization_ratio", labels, r.utilization_percent / 100.0)
            set_gauge(s, "gpu_temperature_celsius", labels, float(r.temperature_c))


# -- the collector -------------------------------------------------------------------------

COUNTERS = {
    "requests": ("Requests processed, by model and outcome", ("model", "outcome")),
    "tokens": ("Tokens processed, by model and kind (prompt, completion)", ("model", "kind")),
    "request_errors": ("Requests that ended in an error, by code", ("code",)),
    "webhook_deliveries": ("Webhook delivery attempts, by outcome", ("outcome",)),
    "engine_restarts": (
        "Engines restarted between units because their memory grew, by model",
        ("model",),
    ),
}
GAUGES = {
    "gpu_memory_used_bytes": "GPU memory in use",
    "gpu_memory_total_bytes": "GPU memory",
    "gpu_utilization_ratio": "GPU utilisation (0-1)",
    "gpu_temperature_celsius": "GPU temperature",
}


class DatabaseCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        with self.db.read() as s:
            yield from self._batches(s)
            yield from self._queue(s)
            yield from self._durations(s)
            yield from self._table(s)
            yield from self._workers(s)
            yield from self._outbox(s)
            yield from self._fine_tuning(s)

    def _fine_tuning(self, s: Session) -> Iterator[Metric]:
        """Jobs by status; the last step and training loss of each running job."""
        counts = dict(
            s.execute(
                select(FineTuningJobRow.status, func.count()).group_by(FineTuningJobRow.status)
            ).all()
        )
        g = GaugeMetricFamily(
            f"{PREFIX}_fine_tuning_jobs", "Fine-tuning jobs by status", labels=["status"]
        )
        for status in FINE_TUNING_STATUSES:
            g.add_metric([status], counts.get(status, 0))
        yield g
        latest = (
            select(func.max(FineTuningEventRow.seq))
            .join(FineTuningJobRow, FineTuningJobRow.id == FineTuningEventRow.job_id)
            .where(FineTuningJobRow.status == "running", FineTuningEventRow.type == "metrics")
            .group_by(FineTuningEventRow.job_id)
        )
        rows = s.execute(
            select(FineTuningEventRow.job_id, FineTuningJobRow.model, FineTuningEventRow.data)
            .join(FineTuningJobRow, FineTuningJobRow.id == FineTuningEventRow.job_id)
            .where(FineTuningEventRow.seq.in_(latest))
        ).all()
        loss = GaugeMetricFamily(
            f"{PREFIX}_fine_tuning_loss",
            "Training loss of the last step of each running fine-tuning job",
            labels=["job", "model"],
        )
        step = GaugeMetricFamily(
            f"{PREFIX}_fine_tuning_step",
            "Last step trained by each running fine-tuning job",
            labels=["job", "model"],
        )
        for job_id, model, data in rows:
            if data and data.get("train_loss") is not None:
                loss.add_metric([job_id, model], float(data["train_loss"]))
                step.add_metric([job_id, model], float(data.get("step", 0)))
        yield loss
        yield step

    def _batches(self, s: Session) -> Iterator[Metric]:
        counts = dict(
            s.execute(select(BatchRow.status, func.count()).group_by(BatchRow.status)).all()
        )
        g = GaugeMetricFamily(f"{PREFIX}_batches", "Batches by status", labels=["status"])
        for status in STATUSES:
            g.add_metric([status], counts.get(status, 0))
        yield g

    def _queue(self, s: Session) -> Iterator[Metric]:
        live = BatchRow.status.in_(("validating", "in_progress"))
        row = s.execute(
            select(
                func.count(),
                func.coalesce(func.sum(BatchRow.total - BatchRow.completed - BatchRow.failed), 0),
            ).where(live)
        ).one()
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_batches", "Batches waiting or running", value=row[0]
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_requests", "Requests of live batches not yet finished", value=row[1]
        )

    def _durations(self, s: Session) -> Iterator[Metric]:
        end = func.coalesce(
            BatchRow.completed_at, BatchRow.failed_at, BatchRow.expired_at, BatchRow.cancelled_at
        )
        duration = end - BatchRow.created_at
        columns = [func.sum(case((duration <= b, 1), else_=0)) for b in DURATION_BUCKETS]
        h = HistogramMetricFamily(
            f"{PREFIX}_batch_duration_seconds",
            "Time from creation to a final status, by final status",
            labels=["status"],
        )
        query = (
            select(BatchRow.status, func.count(), func.coalesce(func.sum(duration), 0), *columns)
            .where(and_(end.is_not(None)))
            .group_by(BatchRow.status)
        )
        for status, count, total, *cumulative in s.execute(query):
            buckets = [
                (str(float(b)), int(c or 0))
                for b, c in zip(DURATION_BUCKETS, cumulative, strict=True)
            ]
            h.add_metric([status], [*buckets, ("+Inf", count)], float(total))
        yield h

    def _table(self, s: Session) -> Iterator[Metric]:
        rows = list(s.execute(select(MetricRow)).scalars())
        by_name: dict[str, list[MetricRow]] = {}
        for r in rows:
            by_name.setdefault(r.name, []).append(r)
        for name, (doc, labels) in COUNTERS.items():
            c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))
            for r in by_name.get(name, []):
                values = _parse(r.labels)
                c.add_metric([values.get(label, "") for label in labels], r.value)
            yield c
        loads = SummaryMetricFamily(
            f"{PREFIX}_engine_load_seconds", "Time to load a model's engine", labels=["model"]
        )
        sums = {r.labels: r.value for r in by_name.get("engine_load_seconds_sum", [])}
        for r in by_name.get("engine_loads", []):
            loads.add_metric([_parse(r.labels)["model"]], int(r.value), sums.get(r.labels, 0.0))
        yield loads
        fresh = time.time() - GAUGE_FRESH_SECONDS
        for name, doc in GAUGES.items():
            g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["host", "gpu"])
            for r in by_name.get(name, []):
                if r.updated_at >= fresh:
                    values = _parse(r.labels)
                    g.add_metric([values["host"], values["gpu"]], r.value)
            yield g

    def _workers(self, s: Session) -> Iterator[Metric]:
        cutoff = time.time() - 15.0
        g = GaugeMetricFamily(
            f"{PREFIX}_workers", "Workers with a fresh heartbeat, by state", labels=["state"]
        )
        query = (
            select(WorkerRow.state, func.count())
            .where(WorkerRow.heartbeat_at >= cutoff)
            .group_by(WorkerRow.state)
        )
        for state, n in s.execute(query):
            g.add_metric([state], n)
        yield g

    def _outbox(self, s: Session) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            f"{PREFIX}_webhook_outbox", "Webhook deliveries by status", labels=["status"]
        )
        query = select(WebhookDeliveryRow.status, func.count()).group_by(WebhookDeliveryRow.status)
        counts = dict(s.execute(query).all())
        for status in ("pending", "delivered", "dead"):
            g.add_metric([status], counts.get(status, 0))
        yield g
