"""The client commands of ``batch-server``, run as real processes against a running server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Cluster, chat_line, jsonl, wait_for


def cli(cluster: Cluster, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BATCH_SERVER_URL=cluster.url, COLUMNS="200", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "batch_server", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_submit_wait_downloads_output_and_errors(cluster: Cluster, tmp_path: Path) -> None:
    lines = [chat_line(f"q{i}", f"Say the number {i}.", max_tokens=6) for i in range(5)]
    for line in lines:
        del line["body"]["model"]  # the model comes from --model
    lines.append(chat_line("bad", "Hi", temperature=7))
    src = tmp_path / "requests.jsonl"
    src.write_bytes(jsonl(lines))
    out_dir = tmp_path / "out"
    run = cli(
        cluster,
        "submit", str(src), "--model", "smollm2", "--wait", "--poll", "0.3",
        "--priority", "2", "--metadata", "job=cli-test", "--output-dir", str(out_dir),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "created batch_" in run.stdout
    assert "completed" in run.stdout
    assert "6/6" in run.stdout  # the progress bar reached the end
    batch_id = run.stdout.split("created ")[1].split()[0]
    output = [
        json.loads(x) for x in (out_dir / f"{batch_id}_output.jsonl").read_text().splitlines()
    ]
    assert [o["custom_id"] for o in output] == [f"q{i}" for i in range(5)]
    errors = (out_dir / f"{batch_id}_errors.jsonl").read_text()
    assert '"bad"' in errors
    batch = cluster.client.batches.retrieve(batch_id)
    assert batch.metadata == {"job": "cli-test"}
    assert batch.model_extra["priority"] == 2

    status = cli(cluster, "status", batch_id)
    assert status.returncode == 0, status.stderr
    assert "completed" in status.stdout and "6/6 (1 failed)" in status.stdout

    as_json = json.loads(cli(cluster, "status", batch_id, "--json").stdout)
    assert as_json["batch"]["id"] == batch_id and as_json["queue"] is None

    listed = cli(cluster, "list", "--limit", "50")
    assert listed.returncode == 0 and batch_id in listed.stdout

    result = cli(cluster, "results", batch_id)
    assert result.returncode == 0
    assert [json.loads(x)["custom_id"] for x in result.stdout.splitlines()] == [
        f"q{i}" for i in range(5)
    ]
    errs = cli(cluster, "results", batch_id, "--errors", "-o", str(tmp_path / "e.jsonl"))
    assert errs.returncode == 0 and '"bad"' in (tmp_path / "e.jsonl").read_text()


def test_submit_invalid_file_shows_line_numbers(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_bytes(jsonl([chat_line("a", "Hi"), "{nope"]))
    run = cli(cluster, "submit", str(src), "--wait", "--poll", "0.2", "--output-dir", str(tmp_path))
    assert run.returncode == 1
    assert "failed" in run.stdout
    assert "line 2: invalid_json_line" in run.stderr


def test_cancel_priority_queue_models(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "long.jsonl"
    src.write_bytes(jsonl([chat_line(f"l{i}", "Tell a story.", max_tokens=64) for i in range(12)]))
    run = cli(cluster, "submit", str(src))
    assert run.returncode == 0, run.stderr
    batch_id = run.stdout.split("created ")[1].split()[0]

    moved = cli(cluster, "priority", batch_id, "4")
    assert moved.returncode == 0 and "priority 4" in moved.stdout
    queue = cli(cluster, "queue")
    assert queue.returncode == 0 and batch_id in queue.stdout and "worker" in queue.stdout

    cancelled = cli(cluster, "cancel", batch_id)
    assert cancelled.returncode == 0 and (
        "cancelling" in cancelled.stdout or "cancelled" in cancelled.stdout
    )
    assert wait_for(cluster.client, batch_id).status == "cancelled"
    again = cli(cluster, "priority", batch_id, "1")
    assert again.returncode == 1 and "Cannot change the priority" in again.stderr

    models = cli(cluster, "models")
    assert models.returncode == 0 and "smollm2-135m-instruct" in models.stdout
    assert "llamacpp" in models.stdout

    missing = cli(cluster, "status", "batch_missing")
    assert missing.returncode == 1 and "No such batch" in missing.stderr
    down = cli(cluster, "models", "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach" in down.stderr
