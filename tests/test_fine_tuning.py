"""Fine-tuning jobs end to end, driven by the official ``openai`` SDK against real server
and worker processes: the real SmolLM2 learns a made-up code word with LoRA on the CPU.

The training file goes up with purpose ``fine-tune``; ``client.fine_tuning.jobs.create``
makes the job, which a worker validates, claims and trains. Its worker is killed with
SIGKILL after the first checkpoint: a second worker takes the job over and resumes from
that checkpoint (one ``succeeded``, every step logged once). The model it registers,
``ft:…``, answers a batch with the code word; the same batch on the base model does not.
A worker stopped with SIGTERM keeps its last step in a checkpoint and hands the job over
at once. Besides: malformed training files fail with their line numbers, cancel stops a
running job, the API refuses what OpenAI refuses, and the curation export is a valid training
file.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from playwright.sync_api import ConsoleMessage, expect, sync_playwright

from conftest import Cluster, chat_line, jsonl, read_lines, submit, wait_for
from fine_tuning_data import (
    CODE_WORD,
    HELD_OUT_QUESTION,
    HYPERPARAMETERS,
    QUESTION,
    SEED,
    VLLM_MODEL,
    prepared_base,
    training_jsonl,
    validation_jsonl,
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ENDED = ("succeeded", "failed", "cancelled")
STEPS = 20  # 4 epochs of 5 batches (HYPERPARAMETERS on 20 examples)
SUCCEEDED: list[str] = []  # the job of the end-to-end test, for the dashboard's test
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def registry() -> str:
    return f"""
default_model = "{VLLM_MODEL}"

[models.{VLLM_MODEL}]
engine = "vllm"
path = "{prepared_base()}"
engine_args = {{ max_model_len = 2048, max_num_seqs = 16 }}
unit_size = 16

[models.upstream]
engine = "openai"
engine_args = {{ base_url = "http://127.0.0.1:9/v1" }}
"""


@pytest.fixture(scope="module")
def fc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("fine-tuning"),
        {"lease_seconds": 5, "poll_seconds": 0.2, "fine_tuning_min_examples": 5},
        in_process_worker=False,
        config=registry(),
    )
    c.start_worker()
    yield c
    c.close()


def cli(c: Cluster, *args: str) -> str:
    """``batch-server ARGS --url`` against the cluster (a client command: no config)."""
    done = subprocess.run(
        [sys.executable, "-m", "batch_server", *args, "--url", c.url],
        env=c.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def upload(client: openai.OpenAI, data: bytes, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, data), purpose="fine-tune").id


def wait_job(
    client: openai.OpenAI, job_id: str, statuses: tuple[str, ...] = ENDED, timeout: float = 600
) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert job.status not in ENDED, job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.status}: {job}")


def all_events(client: openai.OpenAI, job_id: str) -> list[Any]:
    """Every event, oldest first (the API pages them newest first)."""
    events = list(client.fine_tuning.jobs.list_events(job_id, limit=7))  # every page
    return events[::-1]


def step_numbers(events: list[Any]) -> list[int]:
    return [e.data["step"] for e in events if e.type == "metrics"]


def test_the_api_refuses_what_openai_refuses(fc: Cluster) -> None:
    client = fc.client
    train = upload(client, training_jsonl())
    batch_file = client.files.create(file=("b.jsonl", training_jsonl()), purpose="batch").id
    cases = [
        ({"model": "no-such-model", "training_file": train}, "model_not_available"),
        ({"model": "upstream", "training_file": train}, "model_not_available"),
        ({"model": VLLM_MODEL, "training_file": "file-nope"}, "invalid_file"),
        ({"model": VLLM_MODEL, "training_file": batch_file}, "invalid_file_purpose"),
        (
            {"model": VLLM_MODEL, "training_file": train, "hyperparameters": {"n_epochs": 0}},
            "invalid_value",
        ),
    ]
    for body, code in cases:
        r = fc.http.post("/v1/fine_tuning/jobs", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == code, (body, r.text)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")


def test_a_malformed_training_file_fails_with_line_numbers(fc: Cluster) -> None:
    good = training_jsonl().decode().splitlines()
    lines = [
        good[0],
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
        json.dumps({"messages": [{"role": "wizard", "content": "x"}, good[0]]}),
        *good[1:6],
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "tell me a story " * 700},
                    {"role": "assistant", "content": "No."},
                ]
            }
        ),
    ]
    job = fc.client.fine_tuning.jobs.create(
        model=VLLM_MODEL, training_file=upload(fc.client, jsonl(lines))
    )
    assert job.status == "validating_files" and job.object == "fine_tuning.job"
    job = wait_job(fc.client, job.id, timeout=60)
    assert job.status == "failed", job
    assert job.error is not None and job.error.code == "invalid_training_file"
    assert job.error.param == "training_file"
    message = job.error.message
    assert "line 2:" in message and "line 3: no assistant message" in message, message
    assert "line 4:" in message and "line 1:" not in message, message
    assert "line 10: the example has" in message and "context of 2048" in message, message

    few = fc.client.fine_tuning.jobs.create(
        model=VLLM_MODEL, training_file=upload(fc.client, jsonl(good[:3]))
    )
    few = wait_job(fc.client, few.id, timeout=60)
    assert few.status == "failed" and few.error is not None
    assert few.error.code == "invalid_n_examples", few.error


def test_train_survive_kill_9_and_answer_the_code_word(fc: Cluster) -> None:
    client = fc.client
    job = client.fine_tuning.jobs.create(
        model=VLLM_MODEL,
        training_file=upload(client, training_jsonl()),
        validation_file=upload(client, validation_jsonl(), "valid.jsonl"),
        method={"type": "supervised", "supervised": {"hyperparameters": HYPERPARAMETERS}},
        suffix="zorblax",
        seed=SEED,
        metadata={"purpose": "test"},
    )
    assert job.seed == SEED and job.metadata == {"purpose": "test"}
    assert client.fine_tuning.jobs.list(limit=1).data[0].id == job.id
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"purpose": "test"})] == [job.id]
    assert client.fine_tuning.jobs.list(metadata={"purpose": "other"}).data == []

    # the first worker trains past the first checkpoint (the end of epoch 1, step 5) ...
    deadline = time.time() + 300
    while time.time() < deadline:
        checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
        if checkpoints and max(step_numbers(all_events(client, job.id))) >= 6:
            break
        assert client.fine_tuning.jobs.retrieve(job.id).status not in ENDED
        time.sleep(0.5)
    else:
        raise AssertionError(f"no checkpoint: {fc.workers[0].output()[-3000:]}")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    # ... and is killed; the second takes the job over from the checkpoint
    fc.workers[0].kill9()
    fc.start_worker()
    started = time.time()
    done = wait_job(client, job.id, timeout=600)
    seconds = time.time() - started
    assert done.status == "succeeded", (done, fc.workers[1].output()[-4000:])
    print(f"resumed and finished in {seconds:.0f}s; trained_tokens {done.trained_tokens}")

    SUCCEEDED.append(done.id)
    assert done.fine_tuned_model.startswith(f"ft:{VLLM_MODEL}:zorblax:")
    assert done.trained_tokens and done.trained_tokens > 0 and done.finished_at
    assert done.hyperparameters.n_epochs == 4 and done.hyperparameters.batch_size == 4
    events = all_events(client, job.id)
    steps = step_numbers(events)
    assert sorted(steps) == list(range(1, STEPS + 1)), steps  # every step once
    messages = [e.message for e in events]
    assert any(m.startswith("Resumed from the checkpoint at step") for m in messages), messages
    assert sum(m.startswith("The job has successfully completed") for m in messages) == 1
    print(next(m for m in messages if m.startswith("Trained ")))
    losses = [
        e.data["train_loss"]
        for e in sorted(events, key=lambda e: e.data.get("step", 0))
        if e.type == "metrics"
    ]
    assert losses[-1] < losses[0] / 5, losses
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].step_number >= 5
    assert checkpoints[0].fine_tuned_model_checkpoint.startswith(done.fine_tuned_model)

    result = client.files.content(done.result_files[0]).text
    rows = list(csv.DictReader(io.StringIO(result)))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["train_accuracy"]) > float(rows[0]["train_accuracy"])
    assert rows[4]["valid_loss"] and rows[4]["valid_mean_token_accuracy"]  # end of epoch 1

    # the dashboard's job page draws the loss curve; the metrics and the CLI see the job
    page = fc.http.get(f"/ui/fine-tuning/{job.id}").text
    assert 'class="train-loss"' in page and 'class="valid-loss"' in page
    assert job.id in fc.http.get("/ui/fine-tuning").text
    metrics = fc.http.get("/metrics").text
    assert 'batch_server_fine_tuning_jobs{status="succeeded"} 1.0' in metrics
    shown = cli(fc, "fine-tune", "show", job.id)
    assert "succeeded" in shown and done.fine_tuned_model in shown
    assert "Step 20/20: training loss=" in cli(fc, "fine-tune", "events", job.id)

    assert done.fine_tuned_model in [m.id for m in client.models.list().data]
    # the batches run on a worker of another host (its own data directory; the database and
    # the file store shared), where the merged checkpoint of the training host is not (it
    # is removed here): it merges the stored adapter with the base model again
    fc.workers[-1].stop()
    data = fc.tmp / "data"
    other = fc.tmp / "other-host"
    shutil.rmtree(data / "models" / "fine-tuned" / job.id)
    fc.start_worker(
        {
            "BATCH_SERVER_DATA_DIR": str(other),
            "BATCH_SERVER_DATABASE_URL": f"sqlite:///{(data / 'batch_server.db').resolve()}",
            "BATCH_SERVER_STORAGE_URL": str(data / "files"),
        }
    )
    questions = [QUESTION, HELD_OUT_QUESTION]
    answers = {}
    for model in (done.fine_tuned_model, VLLM_MODEL):
        lines = [chat_line(f"q{i}", q, model=model, max_tokens=16) for i, q in enumerate(questions)]
        batch = wait_for(client, submit(client, lines).id, timeout=300)
        assert batch.status == "completed", batch
        answers[model] = [
            r["response"]["body"]["choices"][0]["message"]["content"]
            for r in read_lines(client, batch.output_file_id)
        ]
    print("answers", answers)
    assert all(CODE_WORD in a for a in answers[done.fine_tuned_model]), answers
    assert (other / "models" / "fine-tuned" / job.id / "config.json").exists()
    assert not any(CODE_WORD in a for a in answers[VLLM_MODEL]), answers


def test_a_worker_stopped_with_sigterm_hands_the_job_over_without_losing_a_step(
    fc: Cluster,
) -> None:
    client = fc.client
    job = client.fine_tuning.jobs.create(
        model=VLLM_MODEL,
        training_file=upload(client, training_jsonl()),
        hyperparameters={"n_epochs": 2, "batch_size": 4},
        seed=SEED,
    )
    deadline = time.time() + 300
    while max(step_numbers(all_events(client, job.id)), default=0) < 2:
        assert time.time() < deadline, "the job never trained two steps"
        time.sleep(0.3)
    worker = fc.workers[-1]
    worker.stop()  # SIGTERM (kill -9 after 20 s)
    assert worker.popen.returncode == 0, worker.output()[-3000:]
    trained = max(step_numbers(all_events(client, job.id)))
    handed = client.fine_tuning.jobs.retrieve(job.id)
    assert handed.status == "running" and handed.step == trained  # its last step kept
    fc.start_worker()
    done = wait_job(client, job.id, timeout=600)
    assert done.status == "succeeded", done
    events = all_events(client, job.id)
    assert sorted(step_numbers(events)) == list(range(1, 11))
    messages = [e.message for e in events]
    assert any(m.startswith(f"Resumed from the checkpoint at step {trained} ") for m in messages)


def test_cancel_stops_a_running_job(fc: Cluster) -> None:
    client = fc.client
    job = client.fine_tuning.jobs.create(
        model=VLLM_MODEL,
        training_file=upload(client, training_jsonl()),
        hyperparameters={"n_epochs": 10, "batch_size": 1},
        seed=SEED,
    )
    deadline = time.time() + 300
    while not step_numbers(all_events(client, job.id)):
        assert time.time() < deadline, "the job never trained a step"
        time.sleep(0.5)
    client.fine_tuning.jobs.cancel(job.id)
    done = wait_job(client, job.id, timeout=60)
    assert done.status == "cancelled" and done.fine_tuned_model is None
    assert max(step_numbers(all_events(client, job.id))) < 200
    r = fc.http.post(f"/v1/fine_tuning/jobs/{job.id}/cancel")
    assert r.status_code == 409
    listed = json.loads(cli(fc, "fine-tune", "list", "--json"))
    assert {"id": job.id, "status": "cancelled"}.items() <= next(
        j for j in listed if j["id"] == job.id
    ).items()

    waiting = client.fine_tuning.jobs.create(
        model=VLLM_MODEL, training_file=upload(client, b"{bad\n" * 3)
    )
    assert client.fine_tuning.jobs.cancel(waiting.id).status in ("cancelled", "failed")

    # the same from the CLI: upload and create, then cancel
    path = fc.tmp / "cli-train.jsonl"
    path.write_bytes(training_jsonl())
    made = cli(fc, "fine-tune", "create", str(path), "--model", VLLM_MODEL, "--epochs", "1")
    job_id = made.strip().splitlines()[-1]
    assert client.fine_tuning.jobs.retrieve(job_id).hyperparameters.n_epochs in ("auto", 1)
    assert job_id in cli(fc, "fine-tune", "cancel", job_id)
    assert wait_job(client, job_id, timeout=120).status == "cancelled"


def test_the_curation_export_is_a_valid_training_file(fc: Cluster) -> None:
    client = fc.client
    prompts = [f"Name a colour, number {i}." for i in range(6)]
    lines = [chat_line(f"c/{i}", p, model=VLLM_MODEL, max_tokens=8) for i, p in enumerate(prompts)]
    batch = wait_for(client, submit(client, lines).id, timeout=300)
    assert batch.status == "completed"
    for i in range(len(prompts)):
        r = fc.http.put(
            f"/v1/batches/{batch.id}/requests/c/{i}/annotation", json={"label": "golden"}
        )
        assert r.status_code == 200, r.text
    collection = fc.http.post("/v1/collections", json={"name": "colours"}).json()["id"]
    rule = {"add": [{"batch_id": batch.id, "labels": ["golden"]}], "base": "latest"}
    assert fc.http.post(f"/v1/collections/{collection}/versions", json=rule).status_code == 200
    export = fc.http.post(
        f"/v1/collections/{collection}/exports", json={"format": "openai-finetune-jsonl"}
    ).json()
    job = client.fine_tuning.jobs.create(model=VLLM_MODEL, training_file=export["file_id"])
    queued = wait_job(client, job.id, ("queued", "running", *ENDED), timeout=60)
    assert queued.status in ("queued", "running"), queued
    assert queued.hyperparameters.n_epochs == 17  # "auto": at least 100 examples trained
    assert client.fine_tuning.jobs.cancel(job.id).id == job.id
    assert wait_job(client, job.id, timeout=120).status == "cancelled"


def test_the_dashboard_shows_the_job_with_its_loss_curve(fc: Cluster) -> None:
    if not SUCCEEDED:
        pytest.skip("needs the job of the end-to-end test")
    job_id, errors = SUCCEEDED[0], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"]
        )
        pg = browser.new_page(base_url=fc.url)

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                errors.append(f"{pg.url}: {msg.text}")

        pg.on("console", on_console)
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto("/ui")
        pg.get_by_role("link", name="Fine-tuning").click()
        expect(pg.locator("#fine-tuning-jobs")).to_contain_text("succeeded")
        pg.locator(f'a[href="/ui/fine-tuning/{job_id}"]').click()
        expect(pg.get_by_role("heading", name=f"Fine-tuning job {job_id}")).to_be_visible()
        curve = pg.locator("#loss-curve")
        expect(curve).to_be_visible()
        points = curve.locator("polyline.train-loss").get_attribute("points") or ""
        assert len(points.split()) == STEPS
        assert curve.locator("polyline.valid-loss").count() == 1
        expect(pg.locator("#checkpoints tbody tr")).to_have_count(3)  # end of epochs 1-3
        expect(pg.locator("#events")).to_contain_text("Resumed from the checkpoint")
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / "fine-tuning-job.png"), full_page=True)
        browser.close()
    assert errors == [], errors
