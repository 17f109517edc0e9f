"""Housekeeping on a running server: throughput samples merged per batch without changing
any figure computed from them, delivered webhook events deleted after their retention."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from webhook_receiver import SECRET, Receiver

from conftest import Cluster, chat_line, submit, wait_for


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_samples_compacted_and_delivered_webhooks_pruned(tmp_path: Path) -> None:
    receiver = Receiver()
    c = Cluster(
        tmp_path,
        {
            "housekeeping_seconds": 1,
            "sample_compact_after_seconds": 3,
            "webhook_retention_days": 5 / 86400,  # five seconds
            "webhook_secret": SECRET,
            "webhook_allow_private_urls": "true",
            "unit_size": 4,
        },
    )
    try:
        db = tmp_path / "data" / "batch_server.db"
        lines = [chat_line(f"h{i}", f"Count to {i}.", max_tokens=24) for i in range(16)]
        batch = submit(c.client, lines, metadata={"webhook_url": receiver.url})
        assert wait_for(c.client, batch.id, timeout=180).status == "completed"
        receiver.wait(lambda: "batch.completed" in receiver.events(batch.id))

        def figures() -> tuple:
            history = c.http.get("/v1/jobs/history", params={"q": batch.id, "status": "all"})
            entry = history.json()["data"][0]
            model = c.http.get("/v1/models/smollm2-135m-instruct").json()
            return (
                entry["processing_seconds"],
                entry["requests_per_second"],
                entry["output_tokens_per_second"],
                model["throughput"],
            )

        before = figures()
        assert before[1] and before[1] > 0, before
        query = (
            "SELECT CAST(ended_at / 3600 AS INTEGER), COUNT(*), MAX(worker) "
            f"FROM throughput_samples WHERE batch_id = '{batch.id}' GROUP BY 1"
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            hours = rows(db, query)
            hooks = rows(db, "SELECT status FROM webhook_deliveries")
            if all(n == 1 for _, n, _ in hours) and not hooks:
                break
            time.sleep(0.5)
        # one row per hour the batch ran in (one, or two across the turn of an hour)
        assert [n for _, n, _ in hours] == [1] * len(hours) <= [1, 1], hours
        assert "(compacted)" in {worker for _, _, worker in hours}, hours  # rows were merged
        assert hooks == [], hooks
        assert figures() == before  # the same rates from the merged rows
    finally:
        c.close()
        receiver.server.shutdown()
