"""The training child process: LoRA on a Hugging Face checkpoint, one JSON line per event.

Run as ``python -m batch_server.fine_tuning.train_process SPEC.json`` (or with the spec on
stdin's first line when no path is given). The spec is the
JSON form of :class:`batch_server.fine_tuning.runner.TrainingSpec`.

Out, one JSON object a line on stdout (everything else the libraries print goes to
stderr)::

    {"type":"step","step":N,"total_steps":T,"epoch":E,"train_loss":x,"valid_loss":y|null,
     "train_accuracy":a,"valid_accuracy":b|null,"trained_tokens":K,"elapsed":s}
    {"type":"checkpoint","step":N,"dir":"/path"}
    {"type":"done","adapter_dir":"/path","trained_tokens":K,"seconds":s,"peak_memory_bytes":M}
    {"type":"stopped","step":N}
    {"type":"error","code":"...","message":"..."}

In: a line ``stop`` on stdin stops the run after the current step; ``stop checkpoint`` (or
SIGTERM) also writes a checkpoint of that step first, unless it just had one. End of
stdin means the parent is gone: the process exits (so does it when the parent dies:
``PR_SET_PDEATHSIG`` and a parent-pid check).

Training: the model's own chat template renders each example; the loss counts only the
tokens of assistant messages (their content and end-of-turn marker; an assistant message
with ``weight: 0`` is not trained). Steps are numbered from 1; the examples of epoch ``e``
are shuffled by ``seed`` and ``e`` alone, so a run resumed from a checkpoint (adapter,
optimizer, learning-rate position, random state, step) trains exactly the steps the
uninterrupted run would have. A checkpoint is written at the end of every epoch and every
``checkpoint_every_steps`` steps, into ``work_dir/checkpoints/step-N`` (atomically: a
directory that exists is complete). ``trained_tokens`` counts every token of the examples
trained (prompt and answer, as OpenAI bills), per epoch.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import resource
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from batch_server.fine_tuning.hyperparameters import complete

PR_SET_PDEATHSIG = 1
ADAPTER_DIR = "adapter"  # inside work_dir: the finished adapter
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"
RNG_FILE = "rng.pt"
IGNORE = -100


class TrainingError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE where the loss does not count

    @property
    def trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


class Emitter:
    """JSON lines on the protocol stream (a copy of the original stdout)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"type": kind, **fields})
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


# -- life with the parent -----------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _listen(stop: threading.Event, keep: threading.Event, stdin: IO[str]) -> None:
    """``stop [checkpoint]`` lines set the flags; the end of stdin (the parent is gone)
    ends us."""

    def read() -> None:
        for line in stdin:
            words = line.split()
            if words[:1] == ["stop"]:
                if words[1:] == ["checkpoint"]:
                    keep.set()
                stop.set()
        os._exit(1)

    threading.Thread(target=read, name="stdin", daemon=True).start()


# -- data ---------------------------------------------------------------------------------


def _message_text(message: dict[str, Any]) -> dict[str, Any]:
    """A message as the chat template wants it (a tool call becomes its JSON text)."""
    content = message.get("content")
    if not isinstance(content, str):
        parts = content if isinstance(content, list) else []
        content = "".join(p.get("text", "") for p in parts if isinstance(p, dict))
    if message.get("tool_calls"):
        content = (content or "") + json.dumps(message["tool_calls"])
    return {"role": message.get("role", "user"), "content": content}


def render_example(
    tokenizer: Any, obj: dict[str, Any], max_length: int, template: str | None
) -> Example:
    """Tokens of one example and its labels: assistant spans only. Spans come from
    rendering the conversation up to each assistant turn (the generation prompt ends where
    the answer starts), and tokens are matched to them by character offsets."""
    messages = [_message_text(m) for m in obj["messages"]]
    extra: dict[str, Any] = {"chat_template": template} if template else {}
    if obj.get("tools"):
        extra["tools"] = obj["tools"]

    def render(upto: int, prompt: bool) -> str:
        return str(
            tokenizer.apply_chat_template(
                messages[:upto], tokenize=False, add_generation_prompt=prompt, **extra
            )
        )

    text = render(len(messages), False)
    spans = []
    for i, original in enumerate(obj["messages"]):
        if original.get("role") != "assistant" or original.get("weight", 1) == 0:
            continue
        start, end = len(render(i, True)), len(render(i + 1, False))
        if text[:end] != render(i + 1, False):
            raise TrainingError(
                "unsupported_chat_template",
                "The chat template does not render a conversation as the sum of its turns",
            )
        spans.append((start, end))
    encoded = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, truncation=False
    )
    ids = list(encoded["input_ids"])[:max_length]
    labels = []
    for token, (a, b) in zip(ids, encoded["offset_mapping"], strict=False):
        inside = any(a >= s and b <= e and b > a for s, e in spans)
        labels.append(token if inside else IGNORE)
    return Example(ids, labels)


def load_examples(
    path: str, tokenizer: Any, max_length: int, template: str | None
) -> list[Example]:
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                examples.append(render_example(tokenizer, obj, max_length, template))
            except TrainingError:
                raise
            except Exception as exc:
                raise TrainingError(
                    "invalid_training_file", f"line {number}: {type(exc).__name__}: {exc}"
                ) from exc
    if not examples:
        raise TrainingError("invalid_training_file", f"{Path(path).name} has no examples")
    if not any(e.trained for e in examples):
        raise TrainingError(
            "invalid_training_file", "no example has an assistant token left to train on"
        )
    return examples


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The examples' order in ``epoch`` (0-based): fixed by seed and epoch alone."""
    import torch

    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return [int(i) for i in torch.randperm(n, generator=generator)]


def collate(batch: list[Example], pad_id: int, device: Any) -> dict[str, Any]:
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in batch]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in batch]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
    return {
        "input_ids": torch.tensor(ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(mask, device=device),
    }


def token_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int, int]:
    """Summed cross-entropy over the trained tokens of ``batch``, their count, and how
    many of them the model predicted (greedy: OpenAI's token accuracy)."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted = logits[:, :-1, :].float()
    targets = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        shifted.reshape(-1, shifted.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    trained = targets != IGNORE
    correct = int(((shifted.argmax(-1) == targets) & trained).sum())
    return loss, int(trained.sum()), correct


# -- training -----------------------------------------------------------------------------


class Trainer:
    def __init__(
        self,
        spec: dict[str, Any],
        emit: Emitter,
        stop: threading.Event,
        keep: threading.Event | None = None,
    ) -> None:
        import torch

        self.spec, self.emit, self.stop = spec, emit, stop
        self.keep = keep or threading.Event()  # a stop keeps its step in a checkpoint
        self.hp = complete(spec["hyperparameters"])
        self.seed = int(spec.get("seed") or 0)
        self.work_dir = Path(spec["work_dir"])
        self.every = int(spec.get("checkpoint_every_steps") or 0)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.set_num_threads(training_threads(int(spec.get("threads") or 0), self.device.type))
        torch.manual_seed(self.seed)
        self._load_model()
        max_length = int(spec.get("max_length") or 2048)
        template = spec.get("chat_template")
        self.train = load_examples(spec["train_path"], self.tokenizer, max_length, template)
        valid_path = spec.get("valid_path")
        self.valid = (
            load_examples(valid_path, self.tokenizer, max_length, template) if valid_path else []
        )
        self.batch_size = int(self.hp["batch_size"])
        self.per_epoch = math.ceil(len(self.train) / self.batch_size)
        self.total = self.per_epoch * int(self.hp["n_epochs"])
        self.step = 0
        self.trained_tokens = 0
        self.elapsed_before = 0.0
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=float(self.hp["learning_rate"]))
        if spec.get("resume_from"):
            self._restore(Path(spec["resume_from"]))

    def _load_model(self) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base = self.spec["base_dir"]
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        dtype = torch.float32
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
        model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
        model = model.to(self.device)
        model.config.use_cache = False
        config = LoraConfig(
            r=int(self.hp["lora_r"]),
            lora_alpha=int(self.hp["lora_alpha"]),
            lora_dropout=float(self.hp["lora_dropout"]),
            target_modules=self.hp["target_modules"],
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(model, config)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id)

    def learning_rate(self, step: int) -> float:
        """Linear warm-up over the first 5 % of the steps, then linear decay to 10 %;
        a function of the step alone (nothing to save for a resume)."""
        peak = float(self.hp["learning_rate"])
        warmup = max(1, round(self.total * 0.05))
        if step <= warmup:
            return peak * step / warmup
        left = (self.total - step) / max(1, self.total - warmup)
        return peak * (0.1 + 0.9 * left)

    def batch_for(self, step: int) -> list[Example]:
        epoch, index = divmod(step - 1, self.per_epoch)
        order = epoch_order(len(self.train), self.seed, epoch)
        chosen = order[index * self.batch_size : (index + 1) * self.batch_size]
        return [self.train[i] for i in chosen]

    def run(self) -> None:
        import torch

        started = time.monotonic()
        self.model.train()
        while self.step < self.total:
            step = self.step + 1
            batch = self.batch_for(step)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(step)
            loss_sum, count, correct = token_loss(
                self.model, collate(batch, self.pad_id, self.device)
            )
            loss = loss_sum / max(1, count)
            self.optimizer.zero_grad(set_to_none=True)
            if count:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], 1.0
                )
                self.optimizer.step()
            self.step = step
            self.trained_tokens += sum(len(e.input_ids) for e in batch)
            epoch_end = step % self.per_epoch == 0
            checkpoint = epoch_end or (self.every > 0 and step % self.every == 0)
            valid = self.valid_loss() if checkpoint and self.valid else None
            accuracy = correct / max(1, count)
            self.emit(
                "step",
                step=step,
                total_steps=self.total,
                epoch=(step - 1) // self.per_epoch + 1,
                train_loss=round(float(loss.item()), 6),
                valid_loss=None if valid is None else round(valid[0], 6),
                train_accuracy=round(accuracy, 6),
                valid_accuracy=None if valid is None else round(valid[1], 6),
                trained_tokens=self.trained_tokens,
                elapsed=round(self.elapsed_before + time.monotonic() - started, 3),
            )
            stopping = self.stop.is_set() and step < self.total
            if step < self.total and (checkpoint or (stopping and self.keep.is_set())):
                elapsed = self.elapsed_before + time.monotonic() - started
                self.emit("checkpoint", step=step, dir=str(self.save_checkpoint(elapsed)))
            if stopping:
                self.emit("stopped", step=step)
                return
        adapter = self.work_dir / ADAPTER_DIR
        self._atomic_dir(adapter, lambda d: self.model.save_pretrained(str(d)))
        self.emit(
            "done",
            adapter_dir=str(adapter),
            trained_tokens=self.trained_tokens,
            seconds=round(self.elapsed_before + time.monotonic() - started, 3),
            peak_memory_bytes=peak_memory(),
        )

    def valid_loss(self) -> tuple[float, float]:
        """Mean loss and token accuracy over the validation file's trained tokens."""
        import torch

        self.model.eval()
        total, count, correct = 0.0, 0, 0
        with torch.no_grad():
            for i in range(0, len(self.valid), self.batch_size):
                chunk = self.valid[i : i + self.batch_size]
                loss, n, right = token_loss(self.model, collate(chunk, self.pad_id, self.device))
                total, count, correct = total + float(loss), count + n, correct + right
        self.model.train()
        return total / max(1, count), correct / max(1, count)

    # -- checkpoints ----------------------------------------------------------------------

    def save_checkpoint(self, elapsed: float) -> Path:
        import torch

        def write(d: Path) -> None:
            self.model.save_pretrained(str(d))
            torch.save(self.optimizer.state_dict(), d / OPTIMIZER_FILE)
            rng: dict[str, Any] = {"torch": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            torch.save(rng, d / RNG_FILE)
            state = {
                "step": self.step,
                "total_steps": self.total,
                "trained_tokens": self.trained_tokens,
                "elapsed": elapsed,
                "seed": self.seed,
            }
            (d / STATE_FILE).write_text(json.dumps(state))

        target = self.work_dir / "checkpoints" / f"step-{self.step}"
        self._atomic_dir(target, write)
        return target

    def _restore(self, directory: Path) -> None:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = json.loads((directory / STATE_FILE).read_text())
        if int(state["total_steps"]) != self.total:
            raise TrainingError(
                "checkpoint_mismatch",
                f"checkpoint of a run of {state['total_steps']} steps, this one has {self.total}",
            )
        weights = load_file(str(directory / "adapter_model.safetensors"), device=str(self.device))
        set_peft_model_state_dict(self.model, weights)
        self.optimizer.load_state_dict(
            torch.load(directory / OPTIMIZER_FILE, map_location=self.device)
        )
        rng = torch.load(directory / RNG_FILE, weights_only=False)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step = int(state["step"])
        self.trained_tokens = int(state["trained_tokens"])
        self.elapsed_before = float(state.get("elapsed", 0.0))

    @staticmethod
    def _atomic_dir(target: Path, write: Any) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        write(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)


def training_threads(asked: int, device: str) -> int:
    """Threads of torch's CPU kernels: ``asked``, or else every core but one on a CPU (the
    API and the worker keep one; on two cores one thread also trains faster than two
    that compete with the server: docs/training.md), and every core with a GPU."""
    if asked > 0:
        return asked
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if device != "cpu":
        return max(1, cores or 1)
    return max(1, (cores or 1) - 1)


def peak_memory() -> int:
    """The largest resident memory this process had (bytes); on a GPU, plus the most
    device memory torch held."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            rss += int(torch.cuda.max_memory_allocated())
    return int(rss)


def _read_spec(argv: list[str]) -> dict[str, Any]:
    if argv:
        return dict(json.loads(Path(argv[0]).read_text()))
    return dict(json.loads(sys.stdin.readline()))


def main(argv: list[str]) -> int:
    # The protocol owns the real stdout; whatever libraries print goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    emit = Emitter(protocol)
    stop, keep = threading.Event(), threading.Event()
    try:
        spec = _read_spec(argv)
        parent = int(spec.get("parent_pid") or os.getppid())
        _die_with_parent(parent)
        _listen(stop, keep, sys.stdin)

        def terminate(*_: object) -> None:
            keep.set()
            stop.set()

        signal.signal(signal.SIGTERM, terminate)
        with contextlib.suppress(OSError):
            os.nice(int(spec.get("nice", 0)))
        Trainer(spec, emit, stop, keep).run()
        return 0
    except TrainingError as exc:
        emit("error", code=exc.code, message=str(exc))
        return 1
    except MemoryError:
        emit("error", code="out_of_memory", message="training ran out of memory")
        return 1
    except Exception as exc:
        import traceback

        traceback.print_exc()
        code = "out_of_memory" if "out of memory" in str(exc).lower() else "training_failed"
        emit("error", code=code, message=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.exit(main(sys.argv[1:]))
