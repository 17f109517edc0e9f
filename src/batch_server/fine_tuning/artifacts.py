"""What a fine-tuning job leaves behind, and where: checkpoints as tar archives in the file
store (so a worker on another host can resume), the result CSV (OpenAI's columns), the
merged model's directory and its name (``ft:BASE:SUFFIX:JOBID``), and the registry entry
that serves it (vLLM on the merged checkpoint). The finished adapter is kept in the file
store too: a worker on another host, without the merged directory, merges it again there
(:func:`local_spec`)."""

from __future__ import annotations

import csv
import io
import multiprocessing
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from batch_server import ids
from batch_server.config import TEXT_ENDPOINTS, ModelNotAvailable, ModelSpec, Settings
from batch_server.curation.exports import save_file
from batch_server.db.session import Database
from batch_server.fine_tuning import base_models, jobs, merge
from batch_server.fine_tuning.runner import StepEvent
from batch_server.models.registry import Registry
from batch_server.storage import FileStore

T = TypeVar("T")

RESULT_COLUMNS = (
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
)


def model_name(base: str, suffix: str | None, job_id: str) -> str:
    """``ft:BASE:SUFFIX:JOBID`` as OpenAI names fine-tuned models (``ft:BASE::JOBID``
    without a suffix); the job id's ``ftjob-`` prefix is left out."""
    return f"ft:{base}:{suffix or ''}:{job_id.removeprefix('ftjob-')}"


def checkpoint_name(model: str, step: int) -> str:
    return f"{model}:ckpt-step-{step}"


def checkpoint_key(job_id: str, step: int) -> str:
    """The file store key of a job's checkpoint archive."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{job_id}-ckpt-{step}")


def adapter_key(job_id: str) -> str:
    """The file store key of a finished job's adapter archive."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{job_id}-adapter")


def job_of(model_id: str) -> str | None:
    """The job that made fine-tuned model ``model_id`` (see :func:`model_name`), or None."""
    return "ftjob-" + model_id.rsplit(":", 1)[1] if model_id.startswith("ft:") else None


def merged_dir(settings: Settings, job_id: str) -> Path:
    return settings.data_dir / "models" / "fine-tuned" / job_id


def local_spec(
    settings: Settings,
    store: FileStore,
    db: Database,
    model_id: str,
    spec: ModelSpec,
    registry: Registry,
) -> ModelSpec:
    """``spec`` with its weights on this host. A fine-tuned model trained on another host
    (whose merged checkpoint is not here) is merged again here, once, from the adapter its
    job stored and from its base model (looked up in ``registry``)."""
    job_id = job_of(model_id)
    if job_id is None or spec.engine != "vllm" or Path(spec.path).exists():
        return spec
    target = merged_dir(settings, job_id)
    if not merge.is_merged(target):
        row = jobs.get(db, job_id)
        base_spec = registry.get(row.model) if row is not None else None
        if row is None or base_spec is None:
            raise ModelNotAvailable(
                f"{model_id}: its base model is no longer registered, so it cannot be "
                "rebuilt on this host"
            )
        work = settings.data_dir / "fine-tuning"
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{job_id}-", dir=work) as tmp:
            try:
                adapter = unpack(store, adapter_key(job_id), Path(tmp) / "adapter")
            except FileNotFoundError as exc:
                raise ModelNotAvailable(
                    f"{model_id}: its merged checkpoint is not on this host and the adapter "
                    f"of {job_id} is not in the file store"
                ) from exc
            base_dir = in_child(base_models.base_checkpoint, settings, base_spec, row.model)
            in_child(merge.merge_adapter, base_dir, adapter, target, base_spec.chat_template)
    return spec.model_copy(update={"path": str(target)})


def pack(store: FileStore, key: str, directory: Path) -> None:
    """Store ``directory`` as a tar archive under ``key``."""
    with store.writer(key) as out, tarfile.open(fileobj=out, mode="w|") as tar:  # type: ignore[call-overload]
        tar.add(str(directory), arcname=".")


def unpack(store: FileStore, key: str, target: Path) -> Path:
    """Extract the archive stored under ``key`` into ``target`` (the data filter refuses
    links and paths outside it)."""
    target.mkdir(parents=True, exist_ok=True)
    with store.open(key) as f, tarfile.open(fileobj=f, mode="r|") as tar:
        tar.extractall(target, filter="data")
    return target


def download(store: FileStore, file_id: str | None, target: Path) -> Path | None:
    """A stored file copied to ``target`` (for the training process to read)."""
    if file_id is None:
        return None
    with store.open(file_id) as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out, 1024 * 1024)
    return target


def step_metrics(event: StepEvent) -> dict[str, Any]:
    """A step's figures as its metrics event keeps them (OpenAI's names)."""
    return {
        "train_loss": event.train_loss,
        "valid_loss": event.valid_loss,
        "train_accuracy": event.train_accuracy,
        "valid_mean_token_accuracy": event.valid_accuracy,
        "epoch": event.epoch,
        "trained_tokens": event.trained_tokens,
    }


def checkpoint_metrics(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """A checkpoint's metrics: those of the last step trained (OpenAI's names)."""
    last = steps[-1] if steps else {}
    return {
        "train_loss": last.get("train_loss"),
        "valid_loss": last.get("valid_loss"),
        "train_mean_token_accuracy": last.get("train_accuracy"),
        "valid_mean_token_accuracy": last.get("valid_mean_token_accuracy"),
    }


def results_csv(steps: Iterable[dict[str, Any]]) -> bytes:
    """The result file: one row per step, as OpenAI's (``step,train_loss,train_accuracy,
    valid_loss,valid_mean_token_accuracy``; the validation figures only on the steps that
    measured them)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for data in steps:
        writer.writerow(["" if data.get(c) is None else data.get(c) for c in RESULT_COLUMNS])
    return buffer.getvalue().encode()


def store_results(db: Database, store: FileStore, job_id: str, owner: str | None) -> str:
    """Write the job's result CSV as a File of purpose ``fine-tune-results``; its id."""
    data = results_csv(jobs.step_metrics(db, job_id))
    file_id = ids.file_id()
    with store.writer(file_id) as out:
        out.write(data)
    save_file(db, file_id, "fine-tune-results", "step_metrics.csv", len(data), owner)
    return file_id


def fine_tuned_spec(base: ModelSpec, merged: Path, context: int) -> ModelSpec:
    """The registry entry of a fine-tuned model: vLLM on its merged checkpoint (llama.cpp
    would need a GGUF, which cannot be made here: see fine_tuning/merge.py)."""
    return ModelSpec(
        engine="vllm",
        path=str(merged),
        engine_args={"max_model_len": context},
        chat_template=base.chat_template,
        endpoints=list(TEXT_ENDPOINTS),
        env=dict(base.env) if base.engine == "vllm" else {},
    )


def in_child(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a fresh process: torch and transformers (a GGUF's
    conversion, an adapter's merge) never load into the worker, whose memory stays small."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
