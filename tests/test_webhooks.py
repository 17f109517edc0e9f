"""Webhooks end to end: a real HTTP receiver verifies every delivery with the
``standardwebhooks`` library; failures are retried, then dead-lettered; a server restart
mid-retry loses nothing; private URLs are refused by default."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from webhook_receiver import SECRET, Receiver

from conftest import ONE_THREAD_REGISTRY, Cluster, chat_line, submit, wait_for


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("webhooks"),
        {
            "webhook_secret": SECRET,
            "webhook_allow_private_urls": "true",
            "webhook_max_attempts": 3,
            "webhook_retry_base_seconds": 0.5,
            "webhook_progress_seconds": 0,
            "unit_size": 1,
        },
    )
    yield c
    c.close()


def test_signed_deliveries_for_completion_and_progress(hooks: Cluster, receiver: Receiver) -> None:
    receiver.failing = False
    batch = submit(
        hooks.client,
        [chat_line(f"r{i}", "Say hi.") for i in range(3)],
        metadata={
            "webhook_url": receiver.url,
            "webhook_events": "batch.completed,batch.progress",
        },
    )
    assert wait_for(hooks.client, batch.id).status == "completed"
    receiver.wait(lambda: "batch.completed" in receiver.events(batch.id))
    events = receiver.events(batch.id)
    assert events.count("batch.completed") == 1
    assert "batch.progress" in events
    final = next(r for r in receiver.received if r["event"]["type"] == "batch.completed")
    assert final["event"]["data"]["status"] == "completed"
    assert final["event"]["data"]["request_counts"]["completed"] == 3
    assert json.loads(final["raw"]) == final["event"]
    # Every delivery has its own id; nothing was delivered twice.
    ids = [r["id"] for r in receiver.received]
    assert len(ids) == len(set(ids))


def test_only_subscribed_events_and_cancel(hooks: Cluster, receiver: Receiver) -> None:
    receiver.failing = False
    batch = submit(
        hooks.client,
        [chat_line(f"r{i}", "Tell a long story.", max_tokens=60) for i in range(6)],
        metadata={"webhook_url": receiver.url, "webhook_events": "batch.cancelled"},
    )
    hooks.client.batches.cancel(batch.id)
    assert wait_for(hooks.client, batch.id).status == "cancelled"
    receiver.wait(lambda: receiver.events(batch.id) == ["batch.cancelled"])


def test_failed_and_expired_events(hooks: Cluster, receiver: Receiver) -> None:
    receiver.failing = False
    meta = {"webhook_url": receiver.url}
    failed = submit(hooks.client, ["not json"], metadata=meta)
    expired = submit(
        hooks.client,
        [chat_line(f"r{i}", "Tell a long story.", max_tokens=80) for i in range(8)],
        metadata=meta,
        completion_window="2s",
    )
    assert wait_for(hooks.client, failed.id).status == "failed"
    assert wait_for(hooks.client, expired.id).status == "expired"
    receiver.wait(lambda: receiver.events(failed.id) == ["batch.failed"])
    receiver.wait(lambda: receiver.events(expired.id) == ["batch.expired"])


def _dead_letters(hooks: Cluster, batch_id: str) -> list[dict]:
    data = hooks.http.get("/v1/webhooks/dead-letter").json()["data"]
    return [d for d in data if d["batch_id"] == batch_id]


def test_retries_then_dead_letter_then_retry_and_delete(hooks: Cluster, receiver: Receiver) -> None:
    receiver.failing = True
    before = receiver.attempts
    batches = [
        submit(
            hooks.client,
            [chat_line("only", "Say hi.")],
            metadata={"webhook_url": receiver.url},
        )
        for _ in range(2)
    ]
    for b in batches:
        assert wait_for(hooks.client, b.id).status == "completed"
    deadline = time.time() + 60
    while time.time() < deadline and not all(_dead_letters(hooks, b.id) for b in batches):
        time.sleep(0.2)
    dead = [_dead_letters(hooks, b.id)[0] for b in batches]
    assert all(d["attempts"] == 3 and d["status"] == "dead" for d in dead)
    assert "HTTP 500" in dead[0]["last_error"]
    assert receiver.attempts - before == 6  # three attempts each, then no more
    time.sleep(1.5)
    assert receiver.attempts - before == 6

    receiver.failing = False
    r = hooks.http.post(f"/v1/webhooks/dead-letter/{dead[0]['id']}/retry")
    assert r.status_code == 200 and r.json()["status"] == "pending"
    receiver.wait(lambda: receiver.events(batches[0].id) == ["batch.completed"])
    assert _dead_letters(hooks, batches[0].id) == []

    r = hooks.http.delete(f"/v1/webhooks/dead-letter/{dead[1]['id']}")
    assert r.json()["deleted"] is True
    assert _dead_letters(hooks, batches[1].id) == []
    assert hooks.http.delete(f"/v1/webhooks/dead-letter/{dead[1]['id']}").status_code == 404
    assert receiver.events(batches[1].id) == []

    metrics = hooks.http.get("/metrics").text
    assert 'batch_server_webhook_deliveries_total{outcome="dead"} 2.0' in metrics


def test_delivery_survives_a_server_restart_mid_retry(tmp_path: Path, receiver: Receiver) -> None:
    c = Cluster(
        tmp_path,
        {
            "webhook_secret": SECRET,
            "webhook_allow_private_urls": "true",
            "webhook_max_attempts": 10,
            "webhook_retry_base_seconds": 3,
        },
    )
    try:
        receiver.failing = True
        before = receiver.attempts
        batch = submit(
            c.client, [chat_line("x", "Say hi.")], metadata={"webhook_url": receiver.url}
        )
        assert wait_for(c.client, batch.id).status == "completed"
        receiver.wait(lambda: receiver.attempts > before)  # first attempt failed
        c.restart(kill=True)
        receiver.failing = False
        receiver.wait(lambda: receiver.events(batch.id) == ["batch.completed"])
    finally:
        c.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "file:///etc/passwd",
        "ftp://example.com/x",
    ],
)
def test_private_and_odd_urls_are_refused(client: openai.OpenAI, url: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        submit(client, [chat_line("a", "hi")], metadata={"webhook_url": url})
    assert info.value.body["code"] == "invalid_webhook_url"
    assert info.value.body["param"] == "metadata.webhook_url"


def test_unknown_event_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        submit(
            client,
            [chat_line("a", "hi")],
            metadata={"webhook_url": "https://example.com/h", "webhook_events": "batch.exploded"},
        )
    assert info.value.body["param"] == "metadata.webhook_events"


def test_several_processes_deliver_each_event_once_and_report_metrics(
    tmp_path: Path, receiver: Receiver
) -> None:
    """An API-only server and two standalone workers: three dispatchers share the outbox;
    the workers' figures reach the API's /metrics through the database."""
    c = Cluster(
        tmp_path,
        {
            "webhook_secret": SECRET,
            "webhook_allow_private_urls": "true",
            "unit_size": 2,
            "log_json": "true",
        },
        in_process_worker=False,
        config=ONE_THREAD_REGISTRY,
    )
    try:
        for _ in range(2):
            c.start_worker()
        receiver.failing = False
        batches = [
            submit(
                c.client,
                [chat_line(f"r{i}", "Say hi.") for i in range(4)],
                metadata={"webhook_url": receiver.url},
            )
            for _ in range(3)
        ]
        done = [wait_for(c.client, b.id) for b in batches]
        assert all(d.status == "completed" for d in done)
        for b in batches:
            receiver.wait(lambda b=b: receiver.events(b.id) == ["batch.completed"])
        time.sleep(1.0)  # a duplicate would arrive now
        assert all(receiver.events(b.id) == ["batch.completed"] for b in batches)

        text = c.http.get("/metrics").text
        completion = sum(d.usage.output_tokens for d in done)
        line = (
            'batch_server_tokens_total{kind="completion",model="smollm2-135m-instruct"} '
            f"{float(completion)}"
        )
        assert line in text
        assert 'batch_server_webhook_deliveries_total{outcome="delivered"} 3.0' in text
        # Worker logs are JSON lines carrying the batch id.
        records = [
            json.loads(x) for w in c.workers for x in w.output().splitlines() if x.startswith("{")
        ]
        assert {b.id for b in batches} <= {r["batch_id"] for r in records}
        assert all(r["request_id"] != "-" for r in records if r["batch_id"] != "-")
    finally:
        c.close()
