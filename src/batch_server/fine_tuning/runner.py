"""The worker's side of a training run: start :mod:`.train_process`, read its events.

``TrainingRun(spec)`` starts the child (in a session of its own, so ending it ends
everything it started); :meth:`TrainingRun.events` yields typed events until the run ends
with exactly one of :class:`DoneEvent`, :class:`StoppedEvent` or :class:`ErrorEvent`.
Step events come in order from the first step not yet trained (after a resume, the step
after the checkpoint's); a checkpoint event follows the step it saved. A
child that dies without saying how (killed, out of memory) ends the stream with an
:class:`ErrorEvent` carrying the tail of its stderr. :meth:`TrainingRun.stop` asks for a
stop after the current step; :meth:`TrainingRun.kill` ends it at once.

The child dies with its parent: it reads the end of its stdin, checks its parent's pid and
asks the kernel for ``PR_SET_PDEATHSIG``. That signal follows the *thread* that started the
child, so start a run from a thread that outlives it (the worker's own thread does).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STDERR_TAIL_LINES = 40


@dataclass
class TrainingSpec:
    """What one run trains: the paths are local to the worker."""

    base_dir: Path  # a Hugging Face checkpoint (base_models.base_checkpoint)
    train_path: Path
    work_dir: Path  # checkpoints/ and adapter/ are written here
    hyperparameters: dict[str, Any]  # hyperparameters.resolve(...)
    valid_path: Path | None = None
    resume_from: Path | None = None  # a checkpoint directory of an earlier run of this job
    seed: int = 0
    checkpoint_every_steps: int = 0  # 0: only at the end of each epoch
    threads: int = 0  # torch threads; 0: every core but one (train_process.training_threads)
    max_length: int = 2048  # tokens of an example; longer ones are cut
    chat_template: str | None = None  # ModelSpec.chat_template, when the weights carry none
    nice: int = 0  # added niceness, so the API stays responsive on a small machine
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the child

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["env"]
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}


@dataclass
class StepEvent:
    step: int
    total_steps: int
    epoch: int
    train_loss: float
    valid_loss: float | None
    trained_tokens: int
    elapsed: float
    # share of trained tokens predicted right (OpenAI's train_accuracy and
    # valid_mean_token_accuracy); the validation figure only where valid_loss is
    train_accuracy: float | None = None
    valid_accuracy: float | None = None


@dataclass
class CheckpointEvent:
    step: int
    dir: Path


@dataclass
class DoneEvent:
    adapter_dir: Path
    trained_tokens: int
    seconds: float
    peak_memory_bytes: int


@dataclass
class StoppedEvent:
    step: int


@dataclass
class ErrorEvent:
    code: str
    message: str


Event = StepEvent | CheckpointEvent | DoneEvent | StoppedEvent | ErrorEvent
FINAL = (DoneEvent, StoppedEvent, ErrorEvent)


def parse_event(line: str) -> Event | None:
    """One protocol line as an event; None for a line that is not one."""
    try:
        data = json.loads(line)
        kind = data.pop("type")
        if kind == "step":
            return StepEvent(**data)
        if kind == "checkpoint":
            return CheckpointEvent(int(data["step"]), Path(data["dir"]))
        if kind == "done":
            data["adapter_dir"] = Path(data["adapter_dir"])
            return DoneEvent(**data)
        if kind == "stopped":
            return StoppedEvent(**data)
        if kind == "error":
            return ErrorEvent(str(data["code"]), str(data["message"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return None


def child_environment(spec: TrainingSpec) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    threads = spec.threads if spec.threads > 0 else max(1, (os.cpu_count() or 1) - 1)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env | spec.env


class TrainingRun:
    def __init__(self, spec: TrainingSpec) -> None:
        self.spec = spec
        spec.work_dir.mkdir(parents=True, exist_ok=True)
        payload = spec.to_json() | {"parent_pid": os.getpid()}
        fd, name = tempfile.mkstemp(prefix="spec-", suffix=".json", dir=spec.work_dir)
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f)
        self.spec_path = Path(name)
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batch_server.fine_tuning.train_process", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
            env=child_environment(spec),
        )
        self.pid = self.proc.pid
        self._stderr_thread = threading.Thread(
            target=self._read_stderr, name="training-stderr", daemon=True
        )
        self._stderr_thread.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def events(self) -> Iterator[Event]:
        """The run's events, ending with its one final event."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = parse_event(line)
            if event is None:
                continue
            yield event
            if isinstance(event, FINAL):
                self._reap()
                return
        code = self._reap()
        self._stderr_thread.join(5)
        tail = self.stderr_tail().strip()
        yield ErrorEvent(
            "training_failed",
            f"the training process ended without finishing (exit code {code})"
            + (f": {tail}" if tail else ""),
        )

    def _reap(self) -> int:
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait()
        finally:
            with contextlib.suppress(OSError):
                self.spec_path.unlink()

    def stop(self, checkpoint: bool = False) -> None:
        """Stop after the current step (the run ends with a StoppedEvent, or DoneEvent
        when that was the last step). With ``checkpoint`` (a worker shutting down, not a
        cancel) that step is kept: a CheckpointEvent comes first, unless the step had
        one already."""
        if self.proc.poll() is not None or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write("stop checkpoint\n" if checkpoint else "stop\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def kill(self) -> None:
        """End the child and everything it started, now."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Kill the child if it still runs and wait for it."""
        if self.proc.poll() is None:
            self.kill()
            self.proc.wait(30)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
