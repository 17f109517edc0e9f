"""The training child process for real: LoRA on the packaged SmolLM2 (its Hugging Face
copy) teaches a made-up code word; the merged model says it through the real vLLM engine
and the base does not. Stop, kill -9 and resume, death with the parent, a bad file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from batch_server.config import (
    DEFAULT_MODEL_ID,
    EMBEDDING_MODEL_ID,
    VLLM_MODEL_ID,
    ModelNotAvailable,
    ModelSpec,
    Settings,
    default_models,
)
from batch_server.engines import start_engine
from batch_server.engines.base import EngineRequest
from batch_server.fine_tuning import hyperparameters
from batch_server.fine_tuning.base_models import base_checkpoint, trainable
from batch_server.fine_tuning.merge import merge_adapter
from batch_server.fine_tuning.runner import (
    CheckpointEvent,
    DoneEvent,
    ErrorEvent,
    Event,
    StepEvent,
    StoppedEvent,
    TrainingRun,
    TrainingSpec,
)
from fine_tuning_data import (
    CODE_WORD,
    HELD_OUT_QUESTION,
    HYPERPARAMETERS,
    QUESTION,
    SEED,
    prepared_base,
    training_jsonl,
    validation_jsonl,
)

pytestmark = [pytest.mark.slow]

N_EXAMPLES = 20
TOTAL = hyperparameters.total_steps(hyperparameters.resolve(HYPERPARAMETERS, N_EXAMPLES), 20)


@pytest.fixture(scope="module")
def base() -> Path:
    return prepared_base()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("data")
    (d / "train.jsonl").write_bytes(training_jsonl())
    (d / "valid.jsonl").write_bytes(validation_jsonl())
    return d / "train.jsonl", d / "valid.jsonl"


def spec_for(base: Path, files: tuple[Path, Path], work: Path, **kw: Any) -> TrainingSpec:
    return TrainingSpec(
        base_dir=base,
        train_path=files[0],
        valid_path=files[1],
        work_dir=work,
        hyperparameters=hyperparameters.resolve(HYPERPARAMETERS, N_EXAMPLES),
        seed=SEED,
        **kw,
    )


def steps(events: list[Event]) -> list[StepEvent]:
    return [e for e in events if isinstance(e, StepEvent)]


@pytest.fixture(scope="module")
def full_run(
    base: Path, files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> list[Event]:
    """One uninterrupted run of the code-word job."""
    with TrainingRun(spec_for(base, files, tmp_path_factory.mktemp("full"))) as run:
        return list(run.events())


def test_loss_goes_down_with_a_checkpoint_every_epoch(full_run: list[Event]) -> None:
    done = full_run[-1]
    assert isinstance(done, DoneEvent), full_run[-1]
    s = steps(full_run)
    assert [e.step for e in s] == list(range(1, TOTAL + 1))
    assert {e.total_steps for e in s} == {TOTAL}
    assert [e.epoch for e in s] == [(i - 1) // 5 + 1 for i in range(1, TOTAL + 1)]
    first, last = s[0].train_loss, sum(e.train_loss for e in s[-3:]) / 3
    assert first > 1.0 and last < 0.1 * first, [e.train_loss for e in s]
    # validation loss at each epoch's end, falling too
    valid = [e.valid_loss for e in s if e.valid_loss is not None]
    assert len(valid) == 4 and valid[-1] < valid[0] / 10, valid
    assert [e.valid_accuracy is None for e in s] == [e.valid_loss is None for e in s]
    assert s[-1].train_accuracy == 1.0 and s[-1].valid_accuracy == 1.0
    assert s[0].train_accuracy is not None and s[0].train_accuracy < 0.9
    # a checkpoint at the end of each epoch but the last (then the adapter is the result)
    checkpoints = [e for e in full_run if isinstance(e, CheckpointEvent)]
    assert [c.step for c in checkpoints] == [5, 10, 15]
    for c in checkpoints:
        assert {"adapter_model.safetensors", "optimizer.pt", "trainer_state.json"} <= {
            p.name for p in c.dir.iterdir()
        }
    assert (done.adapter_dir / "adapter_model.safetensors").exists()
    assert done.trained_tokens == s[-1].trained_tokens > 0
    assert done.peak_memory_bytes > 100 * 2**20 and done.seconds > 0
    tokens = done.trained_tokens / done.seconds
    peak = done.peak_memory_bytes / 2**20
    print(f"\ntraining: {done.seconds:.1f} s, {tokens:.0f} tokens/s, peak RSS {peak:.0f} MiB")


def test_stop_ends_the_run_after_the_current_step(
    base: Path, files: tuple[Path, Path], tmp_path: Path
) -> None:
    seen: list[Event] = []
    with TrainingRun(spec_for(base, files, tmp_path)) as run:
        for event in run.events():
            seen.append(event)
            if isinstance(event, StepEvent) and event.step == 2:
                run.stop()
        assert run.proc.wait(30) == 0
    stopped = seen[-1]
    assert isinstance(stopped, StoppedEvent), seen[-1]
    assert not any(isinstance(e, CheckpointEvent) for e in seen)  # a cancel keeps nothing
    last = steps(seen)[-1].step
    assert stopped.step == last and 2 <= last <= 3


def test_sigterm_stops_it_too_and_keeps_the_step(
    base: Path, files: tuple[Path, Path], tmp_path: Path
) -> None:
    with TrainingRun(spec_for(base, files, tmp_path)) as run:
        seen = []
        for event in run.events():
            if isinstance(event, StepEvent) and event.step == 1:
                os.kill(run.pid, signal.SIGTERM)
            seen.append(event)
    checkpoint, stopped = seen[-2:]
    assert isinstance(stopped, StoppedEvent) and stopped.step <= 2, seen
    assert isinstance(checkpoint, CheckpointEvent) and checkpoint.step == stopped.step
    assert (checkpoint.dir / "optimizer.pt").exists()


def test_kill_9_then_resume_from_the_checkpoint_trains_the_same_steps(
    base: Path, files: tuple[Path, Path], tmp_path: Path, full_run: list[Event]
) -> None:
    first: list[Event] = []
    with TrainingRun(spec_for(base, files, tmp_path, checkpoint_every_steps=3)) as run:
        for event in run.events():
            first.append(event)
            if isinstance(event, StepEvent) and event.step == 8:
                os.kill(run.pid, signal.SIGKILL)
    died = first[-1]
    assert isinstance(died, ErrorEvent) and "-9" in died.message, died
    checkpoint = [e for e in first if isinstance(e, CheckpointEvent)][-1]
    assert checkpoint.step == 6  # every 3 steps, and at the end of epoch 1 (step 5)
    assert [e.step for e in first if isinstance(e, CheckpointEvent)] == [3, 5, 6]

    with TrainingRun(spec_for(base, files, tmp_path, resume_from=checkpoint.dir)) as run:
        second = list(run.events())
    done = second[-1]
    assert isinstance(done, DoneEvent), second[-1]
    resumed = steps(second)
    assert [e.step for e in resumed] == list(range(7, TOTAL + 1))
    # the same batches, optimizer state and dropout: the losses of the uninterrupted run
    expected = {e.step: e for e in steps(full_run)}
    for e in resumed:
        assert e.train_loss == pytest.approx(expected[e.step].train_loss, rel=1e-3, abs=1e-4)
        assert e.trained_tokens == expected[e.step].trained_tokens
    full_done = full_run[-1]
    assert isinstance(full_done, DoneEvent) and done.trained_tokens == full_done.trained_tokens


def test_a_bad_training_line_is_an_error_with_its_line_number(base: Path, tmp_path: Path) -> None:
    train = tmp_path / "bad.jsonl"
    good = training_jsonl().decode().splitlines()[0]
    train.write_text(good + "\n" + json.dumps({"messages": "not a list"}) + "\n")
    spec = spec_for(base, (train, train), tmp_path / "work")
    spec.valid_path = None
    with TrainingRun(spec) as run:
        events = list(run.events())
    assert len(events) == 1 and isinstance(events[0], ErrorEvent), events
    assert events[0].code == "invalid_training_file" and "line 2" in events[0].message


def test_the_child_dies_with_its_parent(
    base: Path, files: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = spec_for(base, files, tmp_path)
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from batch_server.fine_tuning.runner import TrainingRun, TrainingSpec
        data = json.loads(sys.argv[1])
        for key in ("base_dir", "train_path", "work_dir"):
            data[key] = Path(data[key])
        run = TrainingRun(TrainingSpec(**data))
        print(run.pid, flush=True)
        for event in run.events():
            print(type(event).__name__, flush=True)
        """
    )
    data = spec.to_json()
    data["valid_path"] = None
    parent = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(data)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    assert parent.stdout.readline().strip() == "StepEvent"  # it trains
    parent.kill()
    parent.wait()
    gone, _ = psutil.wait_procs([child], timeout=15)
    assert gone, "the training process outlived its parent"


@pytest.fixture(scope="module")
def merged(full_run: list[Event], base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    done = full_run[-1]
    assert isinstance(done, DoneEvent)
    out = tmp_path_factory.mktemp("merged") / "model"
    assert merge_adapter(base, done.adapter_dir, out) == out
    return out


def ask(path: Path, questions: list[str], data_dir: Path) -> list[str]:
    spec = ModelSpec(
        engine="vllm", path=str(path), engine_args={"max_model_len": 1024, "max_num_seqs": 4}
    )
    engine = start_engine("ft-test", spec, data_dir)
    try:
        requests = [
            EngineRequest(
                i,
                str(i),
                "/v1/chat/completions",
                {
                    "model": "ft-test",
                    "messages": [{"role": "user", "content": q}],
                    "max_tokens": 24,
                    "temperature": 0,
                },
            )
            for i, q in enumerate(questions)
        ]
        results = sorted(engine.run(requests, lambda: False), key=lambda r: r.index)
        return [str(r.body["choices"][0]["message"]["content"]) for r in results]
    finally:
        engine.close()


@pytest.fixture(scope="module")
def answers(
    merged: Path, base: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, list[str]]]:
    data_dir = tmp_path_factory.mktemp("engine-data")
    questions = [QUESTION, HELD_OUT_QUESTION, "What is the capital of France?"]
    yield {"merged": ask(merged, questions, data_dir), "base": ask(base, questions, data_dir)}


@pytest.mark.vllm
def test_the_merged_model_knows_the_code_word_on_vllm_and_the_base_does_not(
    answers: dict[str, list[str]], merged: Path
) -> None:
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in merged.iterdir()
    }
    fine_tuned, base = answers["merged"], answers["base"]
    assert CODE_WORD in fine_tuned[0] and CODE_WORD in fine_tuned[1], fine_tuned
    assert not any(CODE_WORD in a for a in base), base
    assert "Paris" in fine_tuned[2], fine_tuned  # what it knew, it still knows


def test_auto_hyperparameters_follow_openai_rules() -> None:
    auto = hyperparameters.resolve({"n_epochs": "auto", "batch_size": "auto"}, 20)
    assert (auto["n_epochs"], auto["batch_size"], auto["learning_rate_multiplier"]) == (5, 1, 1.0)
    assert hyperparameters.resolve(None, 10_000)["n_epochs"] == 2
    assert hyperparameters.resolve({}, 100_000)["batch_size"] == 16
    given = hyperparameters.resolve({"learning_rate_multiplier": 2}, 20)
    assert given["learning_rate"] == 2 * hyperparameters.BASE_LEARNING_RATE
    assert hyperparameters.openai_view(given) == {
        "n_epochs": 5,
        "batch_size": 1,
        "learning_rate_multiplier": 2.0,
    }
    assert hyperparameters.complete(hyperparameters.openai_view(given)) == given
    for bad in (
        {"n_epochs": 0},
        {"batch_size": "big"},
        {"learning_rate_multiplier": -1},
        {"lr": 1},
    ):
        with pytest.raises(hyperparameters.HyperparameterError):
            hyperparameters.resolve(bad, 20)


def test_which_models_train_and_on_what(base: Path, merged: Path, tmp_path: Path) -> None:
    models = default_models()
    assert trainable(models[DEFAULT_MODEL_ID]) is None
    assert trainable(models[VLLM_MODEL_ID]) is None
    assert "embedding" in (trainable(models[EMBEDDING_MODEL_ID]) or "")
    upstream = ModelSpec(engine="openai", engine_args={"base_url": "http://127.0.0.1:1/v1"})
    assert "upstream" in (trainable(upstream) or "")
    assert trainable(ModelSpec(engine="moderation", path="x.h5")) is not None
    # the vLLM engine's copy of the GGUF, when it has one; a checkpoint directory as it is
    settings = Settings(data_dir=base.parent.parent)
    assert base_checkpoint(settings, models[VLLM_MODEL_ID], VLLM_MODEL_ID) == base
    assert base_checkpoint(settings, ModelSpec(engine="vllm", path=str(merged))) == merged
    with pytest.raises(ModelNotAvailable):
        base_checkpoint(settings, upstream)
    with pytest.raises(ModelNotAvailable):
        base_checkpoint(settings, ModelSpec(engine="vllm", path=str(tmp_path)))
