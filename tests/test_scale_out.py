"""Several worker processes and several API processes on one real PostgreSQL database:
one batch spread over three workers survives a SIGKILL, a paused worker is fenced when it
comes back, and two API replicas give the same answers."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import pytest
from pgserver import PostgresServer
from test_durability import completes_exactly_once, story_lines
from webhook_receiver import SECRET, Receiver

from conftest import (
    ONE_THREAD_REGISTRY,
    Cluster,
    batch_log,
    chat_line,
    read_lines,
    submit,
    wait_for,
    wait_for_progress,
)

UNIT = 3


class Run(NamedTuple):
    unit: int
    worker: str
    ran: int
    already: int


def unit_runs(cluster: Cluster, batch_id: str) -> list[Run]:
    logs = cluster.http.get(f"/v1/batches/{batch_id}/logs").json()["data"]
    pattern = r"unit (\d+) on (\S+): (\d+) to run, (\d+) already finished"
    return [
        Run(int(m[1]), m[2], int(m[3]), int(m[4]))
        for m in (re.match(pattern, e["message"]) for e in logs)
        if m
    ]


def wait_for_log(cluster: Cluster, batch_id: str, *parts: str, timeout: float = 60) -> None:
    """Wait for a log event of the batch that contains every one of ``parts``."""
    deadline = time.time() + timeout
    while not any(all(p in m for p in parts) for m in batch_log(cluster, batch_id)):
        assert time.time() < deadline, batch_log(cluster, batch_id)
        time.sleep(0.3)


@pytest.fixture
def pg_cluster(tmp_path: Path, postgres: PostgresServer):
    """An API process without a worker on a fresh PostgreSQL database."""
    c = Cluster(
        tmp_path,
        {"unit_size": UNIT, "lease_seconds": 8, "poll_seconds": 0.2},
        in_process_worker=False,
        database_url=postgres.create_database(),
        config=ONE_THREAD_REGISTRY,
    )
    yield c
    c.close()


@pytest.mark.slow
def test_three_workers_one_batch_one_killed(pg_cluster: Cluster) -> None:
    c = pg_cluster
    lines = story_lines(30, max_tokens=16)
    created = submit(c.client, lines)
    workers = [c.start_worker() for _ in range(3)]
    wait_for_progress(c.client, created.id, 9)
    victim = workers[0]
    victim.kill9()
    completes_exactly_once(c.client, created.id, lines, timeout=240)

    runs = unit_runs(c, created.id)
    dead = f":{victim.popen.pid}:"
    by_unit: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        by_unit[run.unit].append(run)
    assert sorted(by_unit) == list(range(10)), runs
    assert len({r.worker for r in runs}) == 3, runs  # all three took part
    assert any(dead in r.worker for r in runs), runs
    executed = 0
    taken_over = []
    for attempts in by_unit.values():
        live = [r for r in attempts if dead not in r.worker]
        assert len(live) <= 1, attempts  # never two live workers on one unit
        if len(attempts) == 1:
            assert (attempts[0].ran, attempts[0].already) == (UNIT, 0), attempts
            executed += UNIT
            continue
        # Taken over from the killed worker: the taker runs only what has no result.
        assert [dead in r.worker for r in attempts] == [True, False], attempts
        assert live[0].ran + live[0].already == UNIT, attempts
        executed += live[0].ran + live[0].already
        taken_over.append(attempts)
    # The killed worker held three units at most: its engine has four sequence slots and
    # takes the next unit while fewer requests wait than it has slots (3 + 3 + 3 = 9 is
    # the first count with 4 or more waiting).
    assert len(taken_over) <= 3, taken_over
    assert executed == 30
    if taken_over:
        assert any("taken over by" in m for m in batch_log(c, created.id))


@pytest.mark.slow
def test_paused_worker_is_fenced_when_it_comes_back(pg_cluster: Cluster) -> None:
    c = pg_cluster
    lines = story_lines(9, max_tokens=24)
    created = submit(c.client, lines)
    slow = c.start_worker()
    wait_for_progress(c.client, created.id, 1)
    os.killpg(slow.popen.pid, signal.SIGSTOP)  # a stalled host: alive, but silent
    try:
        c.start_worker()
        wait_for_log(c, created.id, "taken over by")
    finally:
        os.killpg(slow.popen.pid, signal.SIGCONT)
    completes_exactly_once(c.client, created.id, lines, timeout=120)
    wait_for_log(c, created.id, f":{slow.popen.pid}:", "was fenced", timeout=30)


def test_two_api_replicas_share_one_database(tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.create_database()
    # A slow poll: only LISTEN/NOTIFY can start the work promptly.
    settings = {
        "unit_size": 2,
        "poll_seconds": 60,
        "webhook_secret": SECRET,
        "webhook_allow_private_urls": "true",
    }
    shared = {"BATCH_SERVER_STORAGE_URL": str(tmp_path / "shared-files")}
    receiver = Receiver()
    hook = {"webhook_url": receiver.url}
    a = Cluster(tmp_path / "a", settings, False, url, ONE_THREAD_REGISTRY, env=shared)
    b = Cluster(tmp_path / "b", settings, False, url, ONE_THREAD_REGISTRY, env=shared)
    try:
        a.start_worker()
        deadline = time.time() + 60
        while b.http.get("/ready").status_code != 200:  # a worker seen by the other replica
            assert time.time() < deadline
            time.sleep(0.2)

        lines = [chat_line(f"r{i}", "Say hi.", max_tokens=4) for i in range(4)]
        created = submit(a.client, lines, metadata=hook)
        assert b.client.files.retrieve(created.input_file_id).id == created.input_file_id
        started = time.monotonic()
        done = wait_for(b.client, created.id, timeout=60)
        assert done.status == "completed", done
        assert time.monotonic() - started < 30  # woken by NOTIFY, not the 60 s poll
        assert a.client.batches.retrieve(created.id) == b.client.batches.retrieve(created.id)
        assert [x.id for x in a.client.batches.list()] == [x.id for x in b.client.batches.list()]
        assert [x.id for x in a.client.files.list()] == [x.id for x in b.client.files.list()]
        assert read_lines(a.client, done.output_file_id) == read_lines(
            b.client, done.output_file_id
        )
        assert a.http.get(f"/v1/batches/{created.id}/logs").json() == (
            b.http.get(f"/v1/batches/{created.id}/logs").json()
        )

        # A cancel through one replica is what the other reports.
        long = submit(b.client, story_lines(20, max_tokens=48), metadata=hook)
        wait_for(a.client, long.id, ("in_progress",), timeout=60)
        a.client.batches.cancel(long.id)
        cancelled = wait_for(b.client, long.id, ("cancelled",), timeout=30)
        assert cancelled.status == "cancelled"
        assert a.client.batches.retrieve(long.id) == cancelled
        # Both replicas (and the worker) run a webhook dispatcher: each event arrives once.
        receiver.wait(lambda: receiver.events(long.id) == ["batch.cancelled"])
        time.sleep(1.5)  # a duplicate would arrive now
        assert receiver.events(created.id) == ["batch.completed"]
        assert receiver.events(long.id) == ["batch.cancelled"]
    finally:
        b.close()
        a.close()
        receiver.server.shutdown()
