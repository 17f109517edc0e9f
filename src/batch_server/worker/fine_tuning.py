"""Fine-tuning jobs on the worker: their files validated in the batch-steps thread, their
training run in the worker's own thread like a unit, with the engine unloaded (the GPU is
not shared). The job's lease is renewed every second beside the run; a lost lease (the
job taken over, or cancelled) kills it. Each step becomes a metrics event,
each checkpoint an archive in the file store (where a takeover resumes from), and the
finished adapter a merged model in the registry, ``ft:BASE:SUFFIX:JOBID``."""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from batch_server.config import ModelNotAvailable, ModelSpec, Settings
from batch_server.fine_tuning import artifacts, base_models, hyperparameters, jobs, merge
from batch_server.fine_tuning.runner import (
    CheckpointEvent,
    DoneEvent,
    ErrorEvent,
    StepEvent,
    StoppedEvent,
    TrainingRun,
    TrainingSpec,
)
from batch_server.fine_tuning.validation import context_length, validate_job
from batch_server.models.registry import ModelRegistry
from batch_server.statuses import WorkerState
from batch_server.storage import FileStore
from batch_server.worker.job_lease import JobLease
from batch_server.worker.presence import Presence

log = logging.getLogger(__name__)


TRAINING_PACKAGES = ("torch", "transformers", "peft")


class FineTuning:
    def __init__(
        self,
        settings: Settings,
        models: ModelRegistry,
        store: FileStore,
        presence: Presence,
        stopping: threading.Event,
        unload: Callable[[], None],
    ) -> None:
        self.settings, self.models, self.store = settings, models, store
        self.unload = unload  # the engine's end: training has the GPU to itself
        self.db, self.presence, self.stopping = models.db, presence, stopping
        self.lease_seconds = settings.lease_seconds
        # A worker without the training packages takes no training job: one with them (a
        # GPU host, say) will. Validation needs none of them.
        self.missing = [m for m in TRAINING_PACKAGES if importlib.util.find_spec(m) is None]
        if self.missing:
            log.warning(
                "this worker trains no fine-tuning jobs: %s not installed "
                "(pip install 'vllm-batch-server[vllm,finetune]', or make install-vllm)",
                ", ".join(self.missing),
            )

    def validate_step(self) -> bool:
        """Validate one job's files (batch-steps thread); ``False`` when none waited."""
        claim = jobs.claim_validation(self.db, self.presence.id, self.lease_seconds)
        if claim is None:
            return False
        self.presence.step(WorkerState.VALIDATING, claim.job_id)
        try:
            validate_job(self.db, self.settings, self.store, self.models.refresh(), claim)
        finally:
            self.presence.step(WorkerState.IDLE)
        return True

    def step(self) -> bool:
        """Train one job (worker thread); ``False`` when none waited."""
        if self.missing:
            return False
        claim = jobs.claim_training(self.db, self.presence.id, self.lease_seconds)
        if claim is None:
            return False
        log.info("fine-tuning job %s: attempt %d", claim.job_id, claim.attempt)
        lease = JobLease(self.db, claim, self.lease_seconds, self.stopping)
        lease.start()
        self.unload()
        self.presence.engine(WorkerState.TRAINING, claim.job_id)
        try:
            self._train(claim, lease)
        except Exception as exc:  # never the worker's end: the job's
            log.exception("fine-tuning job %s failed", claim.job_id)
            if lease.state == jobs.OK:
                jobs.fail(self.db, claim, "training_failed", f"{type(exc).__name__}: {exc}")
        finally:
            lease.done.set()
            self.presence.engine(WorkerState.IDLE)
        return True

    def _train(self, claim: jobs.Claim, lease: JobLease) -> None:
        row = jobs.get(self.db, claim.job_id)
        assert row is not None
        spec = self.models.refresh().get(row.model)
        if spec is None:
            raise ModelNotAvailable(f"model {row.model!r} is no longer registered")
        base = artifacts.in_child(base_models.base_checkpoint, self.settings, spec, row.model)
        last = jobs.last_checkpoint(self.db, row.id)
        work = self.settings.data_dir / "fine-tuning"
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{row.id}-", dir=work) as tmp:
            local = Path(tmp)
            train = artifacts.download(self.store, row.training_file, local / "train.jsonl")
            assert train is not None
            valid = artifacts.download(self.store, row.validation_file, local / "valid.jsonl")
            resume = artifacts.unpack(self.store, last.location, local / "resume") if last else None
            if not jobs.started(self.db, claim, last.step if last else 0):
                return
            model = artifacts.model_name(row.model, row.suffix, row.id)
            context = context_length(spec, base)
            run = TrainingRun(
                TrainingSpec(
                    base_dir=base,
                    train_path=train,
                    valid_path=valid,
                    work_dir=local / "run",
                    hyperparameters=hyperparameters.complete(row.hyperparameters),
                    resume_from=resume,
                    seed=row.seed,
                    checkpoint_every_steps=self.settings.fine_tuning_checkpoint_every_steps,
                    threads=self.settings.fine_tuning_threads,
                    max_length=context,
                    chat_template=spec.chat_template,
                    nice=5,
                )
            )
            lease.run_ = run
            if lease.state != jobs.OK:
                run.stop()
            with run:
                self._follow(claim, lease, run, model)
            if lease.state != jobs.LOST and lease.final is not None:
                self._finish(claim, lease.final, base, model, context, spec)

    def _follow(self, claim: jobs.Claim, lease: JobLease, run: TrainingRun, model: str) -> None:
        started, steps = time.monotonic(), 0
        for event in run.events():
            if lease.state == jobs.LOST:
                return
            if isinstance(event, StepEvent):
                steps += 1
                rate = (time.monotonic() - started) / steps
                finish = int(time.time() + rate * (event.total_steps - event.step))
                metrics = artifacts.step_metrics(event)
                jobs.record_step(self.db, claim, event.step, event.total_steps, metrics, finish)
            elif isinstance(event, CheckpointEvent):
                key = artifacts.checkpoint_key(claim.job_id, event.step)
                artifacts.pack(self.store, key, event.dir)
                name = artifacts.checkpoint_name(model, event.step)
                found = artifacts.checkpoint_metrics(jobs.step_metrics(self.db, claim.job_id))
                jobs.record_checkpoint(self.db, claim, event.step, found, name, key)
            elif isinstance(event, DoneEvent):
                lease.final = event
            elif isinstance(event, StoppedEvent):  # the worker is stopping:
                jobs.give_back(self.db, claim)  # another resumes from the checkpoint
            elif isinstance(event, ErrorEvent):
                jobs.fail(self.db, claim, event.code, event.message)

    def _finish(
        self, claim: jobs.Claim, done: DoneEvent, base: Path, model: str, ctx: int, spec: ModelSpec
    ) -> None:
        """The adapter merged and registered as ``model``, the result file, succeeded."""
        row = jobs.get(self.db, claim.job_id)
        assert row is not None
        rate = done.trained_tokens / max(done.seconds, 1e-9)
        jobs.log(
            self.db,
            claim,
            f"Trained {done.trained_tokens} tokens in {done.seconds:.1f} s "
            f"({rate:.0f} tokens/s); peak memory of the training process "
            f"{done.peak_memory_bytes / 2**20:.0f} MiB",
            key="trained",
        )
        # kept for workers on other hosts, which merge it again (artifacts.local_spec)
        artifacts.pack(self.store, artifacts.adapter_key(row.id), Path(done.adapter_dir))
        out_dir = artifacts.merged_dir(self.settings, row.id)
        merged = artifacts.in_child(
            merge.merge_adapter, base, done.adapter_dir, out_dir, spec.chat_template
        )
        self.models.add_fine_tuned(model, artifacts.fine_tuned_spec(spec, merged, ctx))
        file_id = artifacts.store_results(self.db, self.store, row.id, row.owner)
        total = row.total_steps or 0
        if not jobs.succeed(self.db, claim, model, [file_id], done.trained_tokens, total):
            log.warning("fine-tuning job %s was taken over before it ended", row.id)
