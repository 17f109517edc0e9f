"""A model whose engine cannot start fails its batch with the engine's own message after
the configured retries, and does not take the worker down."""

from __future__ import annotations

from pathlib import Path

from conftest import ONE_THREAD_REGISTRY, Cluster, chat_line, read_lines, submit, wait_for

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
