"""Queue, ETAs, priorities, history, failed requests and the dry-run validation, against a
fresh server (no throughput history) running the real model."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from conftest import Cluster, chat_line, jsonl, submit, wait_for


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("queue"), {"unit_size": 8})
    yield c
    c.close()


def slow_lines(prefix: str, n: int, max_tokens: int = 24) -> list[dict]:
    return [
        chat_line(
            f"{prefix}{i}", f"Write a long story about {prefix} number {i}.", max_tokens=max_tokens
        )
        for i in range(n)
    ]


def queue_ids(http: httpx.Client) -> list[str]:
    return [e["id"] for e in http.get("/v1/queue").json()["data"]]


def wait_until(check, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_queue_order_priority_and_unknown_eta(fresh: Cluster) -> None:
    http, client = fresh.http, fresh.client
    models = http.get("/v1/models").json()["data"]
    assert models[0]["throughput"] is None  # a model without history

    a = submit(client, slow_lines("a", 8))

    def a_running() -> dict | None:
        entries = http.get("/v1/queue").json()["data"]
        return next((e for e in entries if e["id"] == a.id and e["state"] == "running"), None)

    entry = wait_until(a_running)
    assert entry["eta"]["basis"] in ("unknown", "batch")  # no model history yet
    b = submit(client, slow_lines("b", 4))
    c = submit(client, slow_lines("c", 4), extra_body={"priority": 5})
    wait_until(lambda: queue_ids(http)[:3] == [a.id, c.id, b.id] or None)

    queue = http.get("/v1/queue").json()
    by_id = {e["id"]: e for e in queue["data"]}
    assert [by_id[x]["position"] for x in (a.id, c.id, b.id)] == [1, 2, 3]
    assert by_id[b.id]["jobs_ahead"] == 2
    # validated at once (or about to be); either way it has not started
    assert by_id[b.id]["state"] in ("waiting", "validating")
    assert by_id[b.id]["eta"]["seconds"] is None or by_id[b.id]["eta"]["basis"] != "unknown"
    assert by_id[c.id]["priority"] == 5
    worker = queue["workers"][0]
    assert worker["state"] in ("running", "loading")
    assert worker["loaded_model"] == "smollm2-135m-instruct"
    assert queue["running"] >= 1

    # re-prioritise: b jumps ahead of c, and the change is logged
    moved = http.post(f"/v1/batches/{b.id}/priority", json={"priority": 10})
    assert moved.status_code == 200 and moved.json()["priority"] == 10
    assert queue_ids(http)[1] == b.id
    logs = http.get(f"/v1/batches/{b.id}/logs").json()["data"]
    assert any(e["kind"] == "priority" and "0 → 10" in e["message"] for e in logs)
    assert http.post(f"/v1/batches/{b.id}/priority", json={"priority": "x"}).status_code == 422
    assert http.post("/v1/batches/batch_nope/priority", json={"priority": 1}).status_code == 404

    finished = {x: wait_for(client, x) for x in (a.id, b.id, c.id)}
    assert all(f.status == "completed" for f in finished.values())
    # b (priority 10) finished before c (priority 5)
    assert finished[b.id].completed_at <= finished[c.id].completed_at
    late = http.post(f"/v1/batches/{a.id}/priority", json={"priority": 3})
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "invalid_state"
    assert http.get(f"/v1/queue/{a.id}").status_code == 404

    # the model has learned a rate; a new batch's ETA comes from it
    rate = http.get("/v1/models/smollm2").json()["throughput"]
    assert rate["requests_per_second"] > 0 and rate["output_tokens_per_second"] > 0
    assert rate["measured_requests"] == 16
    d = submit(client, slow_lines("d", 6))
    entry = wait_until(lambda: http.get(f"/v1/queue/{d.id}").json().get("eta"))
    if entry["basis"] != "done":
        assert entry["basis"] in ("model", "batch+model")
        assert entry["seconds"] > 0 and entry["at"] >= time.time() - 1
    wait_for(client, d.id)

    series = http.get("/v1/stats/throughput", params={"window": 3600, "bucket": 60}).json()
    assert len(series["data"]) == 60
    done_requests = sum(round(b["requests_per_second"] * 60) for b in series["data"])
    assert done_requests == 22
    assert series["models"]["smollm2-135m-instruct"]["measured_requests"] == 22
    bad = http.get("/v1/stats/throughput", params={"bucket": 1})
    assert bad.status_code == 400


def test_history_filters_and_rates(fresh: Cluster) -> None:
    http, client = fresh.http, fresh.client
    ok = wait_for(client, submit(client, slow_lines("h", 3, 8), metadata={"job": "nightly"}).id)
    cancelled = submit(client, slow_lines("x", 8))
    http.post(f"/v1/batches/{cancelled.id}/cancel")
    wait_for(client, cancelled.id)
    invalid = wait_for(client, submit(client, ["not json", chat_line("v", "Hi")]).id)
    assert invalid.status == "failed"

    everything = http.get("/v1/jobs/history", params={"limit": 100}).json()
    rows = {r["id"]: r for r in everything["data"]}
    assert {ok.id, cancelled.id, invalid.id} <= set(rows)
    good = rows[ok.id]
    assert good["status"] == "completed" and good["failure_reason"] is None
    assert good["duration_seconds"] >= 0 and good["processing_seconds"] > 0
    assert good["requests_per_second"] > 0 and good["output_tokens_per_second"] > 0
    assert good["usage"]["output_tokens"] > 0
    assert rows[cancelled.id]["failure_reason"] == "cancelled by request"
    assert "Line 1" in rows[invalid.id]["failure_reason"]

    def ids(**params: object) -> list[str]:
        resp = http.get("/v1/jobs/history", params=params)
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()["data"]]

    assert ids(status="cancelled") == [cancelled.id]
    assert ids(status="failed") == [invalid.id]
    assert ids(q="nightly") == [ok.id]
    assert ids(q=ok.id[-10:]) == [ok.id]
    assert ok.id in ids(model="smollm2")  # aliases work
    assert ids(model="other-model") == []
    assert ids(since=int(time.time()) + 10) == []
    assert ok.id in ids(since=ok.created_at, until=ok.created_at + 1)
    first = http.get("/v1/jobs/history", params={"limit": 1}).json()
    assert first["has_more"] and len(first["data"]) == 1
    second = ids(limit=1, after=first["last_id"])
    assert second and second[0] != first["last_id"]
    assert http.get("/v1/jobs/history", params={"status": "bogus"}).status_code == 400
    assert http.get("/v1/jobs/history", params={"limit": 0}).status_code == 400


def test_failed_requests_while_running_and_after(fresh: Cluster) -> None:
    http, client = fresh.http, fresh.client
    lines = [chat_line("too-long", "word " * 5000), *slow_lines("f", 6)]
    batch = submit(client, lines)

    def live_failures() -> dict | None:
        page = http.get(f"/v1/batches/{batch.id}/failed").json()
        return page if page["data"] else None

    page = wait_until(live_failures)
    assert page["data"][0]["custom_id"] == "too-long"
    assert page["data"][0]["code"] == "context_length_exceeded"
    assert page["data"][0]["status_code"] == 400
    pairs = http.get(f"/v1/batches/{batch.id}/requests", params={"limit": 3}).json()
    assert [p["custom_id"] for p in pairs["data"]] == ["too-long", "f0", "f1"]
    assert pairs["data"][0]["error"]["code"] == "context_length_exceeded"
    assert pairs["has_more"] and pairs["next_offset"] == 3

    done = wait_for(client, batch.id)
    assert done.status == "completed" and done.error_file_id
    after = http.get(f"/v1/batches/{batch.id}/failed").json()  # now from the error file
    assert [f["custom_id"] for f in after["data"]] == ["too-long"]
    assert "context" in after["data"][0]["message"]
    pairs = http.get(f"/v1/batches/{batch.id}/requests", params={"offset": 1, "limit": 10}).json()
    assert [p["custom_id"] for p in pairs["data"]] == [f"f{i}" for i in range(6)]
    assert all(p["status_code"] == 200 and p["response"]["choices"] for p in pairs["data"])
    assert pairs["data"][0]["request"]["messages"][0]["content"].startswith("Write a long")
    assert http.get("/v1/batches/batch_nope/failed").status_code == 404
    assert http.get(f"/v1/batches/{batch.id}/failed", params={"offset": -1}).status_code == 400


def test_dry_run_validation(fresh: Cluster) -> None:
    http = fresh.http
    files_before = http.get("/v1/files").json()["data"]
    bad = jsonl([chat_line("a", "Hi"), "{oops", chat_line("a", "again")])
    resp = http.post("/v1/batches/validate", files={"file": ("bad.jsonl", bad)})
    assert resp.status_code == 200
    result = resp.json()
    assert not result["valid"]
    assert [(e["line"], e["code"]) for e in result["errors"]] == [
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
    ]
    good = jsonl([{**chat_line("a", "Hi"), "body": {"messages": []}}])
    resp = http.post(
        "/v1/batches/validate", files={"file": ("ok.jsonl", good)}, data={"model": "smollm2"}
    ).json()
    assert resp["valid"] and resp["total"] == 1 and resp["models"] == ["smollm2-135m-instruct"]
    unknown = http.post(
        "/v1/batches/validate", files={"file": ("ok.jsonl", good)}, data={"model": "nope"}
    )
    assert unknown.status_code == 404
    assert http.get("/v1/files").json()["data"] == files_before  # nothing was stored
