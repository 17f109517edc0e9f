"""``/metrics`` scraped while a real batch runs, checked against the batch; request and
batch ids on log lines."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from conftest import Cluster, chat_line, read_lines, submit, wait_for


def scrape(cluster: Cluster) -> dict[tuple[str, tuple], float]:
    r = cluster.http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


MODEL = "smollm2-135m-instruct"


def test_metrics_follow_a_running_batch(cluster: Cluster) -> None:
    before = scrape(cluster)
    n = 8
    batch = submit(
        cluster.client, [chat_line(f"m{i}", f"Count to {i + 5}.", max_tokens=24) for i in range(n)]
    )
    seen_running = False
    deadline = time.time() + 120
    while time.time() < deadline:
        now = scrape(cluster)
        status = cluster.client.batches.retrieve(batch.id).status
        if status in ("completed", "failed"):
            break
        if value(now, "batch_server_batches", status="in_progress") >= 1 and status == (
            "in_progress"
        ):
            assert value(now, "batch_server_queue_batches") >= 1
            assert 1 <= value(now, "batch_server_queue_requests") <= n
            workers = [v for (name, _), v in now.items() if name == "batch_server_workers"]
            assert sum(workers) >= 1  # its state is refreshed every 2 s
            seen_running = True
        time.sleep(0.1)
    assert seen_running, "never scraped the batch while it ran"
    done = wait_for(cluster.client, batch.id)
    assert done.status == "completed"
    after = scrape(cluster)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("batch_server_requests_total", model=MODEL, outcome="ok") == n
    assert delta("batch_server_tokens_total", model=MODEL, kind="prompt") == done.usage.input_tokens
    assert (
        delta("batch_server_tokens_total", model=MODEL, kind="completion")
        == done.usage.output_tokens
    )
    assert delta("batch_server_batches", status="completed") == 1
    assert delta("batch_server_batch_duration_seconds_count", status="completed") == 1
    duration = done.completed_at - done.created_at
    assert delta("batch_server_batch_duration_seconds_sum", status="completed") == duration
    assert value(after, "batch_server_batch_duration_seconds_bucket", status="completed", le="+Inf")
    assert value(after, "batch_server_engine_load_seconds_count", model=MODEL) >= 1
    assert value(after, "batch_server_engine_load_seconds_sum", model=MODEL) > 0
    # Every family is present even with no samples (dashboards need stable names).
    names = {name for name, _ in after}
    assert "batch_server_webhook_outbox" in names


def test_request_errors_by_code(cluster: Cluster) -> None:
    before = scrape(cluster)
    too_long = "word " * 3000  # beyond the 2048-token context: the engine rejects it alone
    batch = submit(cluster.client, [chat_line("ok", "hi"), chat_line("long", too_long)])
    done = wait_for(cluster.client, batch.id)
    assert done.request_counts.failed == 1
    after = scrape(cluster)
    errors = {
        labels: v - before.get((name, labels), 0.0)
        for (name, labels), v in after.items()
        if name == "batch_server_request_errors_total"
    }
    assert sum(errors.values()) == 1
    assert value(after, "batch_server_requests_total", model=MODEL, outcome="error") >= 1


def test_log_lines_carry_batch_and_request_ids(cluster: Cluster) -> None:
    batch = submit(cluster.client, [chat_line("x", "hi")])
    wait_for(cluster.client, batch.id)
    r = cluster.http.get(f"/v1/batches/{batch.id}", headers={"X-Request-ID": "trace-42"})
    assert r.headers["x-request-id"] == "trace-42"
    time.sleep(0.3)
    lines = cluster.server.output().splitlines()
    assert any(f"[batch={batch.id} req=trace-42]" in line for line in lines)
    # The worker's lines for this batch carry it too.
    assert any(f"[batch={batch.id} req=step_" in line for line in lines)


def test_unexecuted_requests_count_as_errors(cluster: Cluster) -> None:
    before = scrape(cluster)
    batch = submit(
        cluster.client, [chat_line(f"c{i}", "Tell a long story.", max_tokens=60) for i in range(6)]
    )
    # cancelled once it runs (cancelled while still validating, it has no lines at all)
    wait_for(cluster.client, batch.id, ("in_progress",), timeout=60)
    cluster.client.batches.cancel(batch.id)
    done = wait_for(cluster.client, batch.id)
    assert done.status == "cancelled"
    lines = read_lines(cluster.client, done.error_file_id)
    unexecuted = sum(1 for x in lines if (x["error"] or {}).get("code") == "batch_cancelled")
    assert unexecuted >= 1
    after = scrape(cluster)
    key = ("batch_server_request_errors_total", (("code", "batch_cancelled"),))
    assert after.get(key, 0.0) - before.get(key, 0.0) == unexecuted
