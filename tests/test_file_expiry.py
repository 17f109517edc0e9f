"""Expiring files, as OpenAI's: ``expires_after`` on upload, a batch's
``output_expires_after`` for its output and error files, and housekeeping deleting expired
files under the rule of ``DELETE /v1/files/{id}`` (never the input of a live batch)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import openai
import pytest

from batch_server.db.session import Database
from batch_server.jobs.housekeeping import delete_expired_files
from batch_server.storage import LocalFileStore
from conftest import Cluster, chat_line, jsonl, submit, wait_for

HOUR = {"anchor": "created_at", "seconds": 3600}


def expire_now(db: Path, *file_ids: str) -> None:
    """Move the files' expiry into the past (the shortest policy OpenAI allows is an hour)."""
    with sqlite3.connect(db) as conn:
        marks = ",".join("?" * len(file_ids))
        sql = f"UPDATE files SET expires_at = created_at - 1 WHERE id IN ({marks})"
        conn.execute(sql, file_ids)


def gone(client: openai.OpenAI, file_id: str) -> bool:
    try:
        client.files.retrieve(file_id)
    except openai.NotFoundError:
        return True
    return False


def test_expired_uploads_are_deleted_but_not_under_a_live_batch(tmp_path: Path) -> None:
    # no worker at first: the batch stays live (validating) while housekeeping runs
    c = Cluster(tmp_path, {"housekeeping_seconds": 1}, in_process_worker=False)
    try:
        data = tmp_path / "data"
        store = LocalFileStore(data / "files")
        lines = jsonl([chat_line("a", "Hi", max_tokens=2)])
        expiring = c.client.files.create(
            file=("in.jsonl", lines), purpose="batch", expires_after=HOUR
        )
        assert expiring.expires_at == expiring.created_at + 3600
        assert c.client.files.retrieve(expiring.id).expires_at == expiring.expires_at
        other = c.client.files.create(
            file=("other.jsonl", b"{}\n"), purpose="user_data", expires_after=HOUR
        )
        kept = c.client.files.create(file=("kept.jsonl", b"{}\n"), purpose="user_data")
        assert kept.expires_at is None
        batch = c.client.batches.create(
            input_file_id=expiring.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.status == "validating"

        expire_now(data / "batch_server.db", expiring.id, other.id)
        db = Database(f"sqlite:///{data / 'batch_server.db'}")
        try:
            assert delete_expired_files(db, store) == 1  # only the file no batch reads
            assert delete_expired_files(db, store) == 0
        finally:
            db.dispose()
        assert gone(c.client, other.id)
        with pytest.raises(openai.NotFoundError):
            c.client.files.content(other.id)
        assert not store.path(other.id).exists()
        assert other.id not in [f.id for f in c.client.files.list()]
        # the live batch's input stays, bytes and all
        assert c.client.files.content(expiring.id).content == lines

        # a worker runs the batch, and its own housekeeping deletes the input afterwards
        c.start_worker()
        assert wait_for(c.client, batch.id, timeout=180).status == "completed"
        deadline = time.time() + 60
        while not gone(c.client, expiring.id) and time.time() < deadline:
            time.sleep(0.5)
        assert gone(c.client, expiring.id)
        assert not store.path(expiring.id).exists()
        # a file without expiry is kept, and so is the batch's output
        assert c.client.files.retrieve(kept.id).expires_at is None
        output = c.client.batches.retrieve(batch.id).output_file_id
        assert output is not None
        assert c.client.files.retrieve(output).expires_at is None
    finally:
        c.close()


def test_output_expires_after_sets_the_expiry_of_output_and_error_files(
    client: openai.OpenAI,
) -> None:
    lines = [chat_line("ok", "Hi", max_tokens=2), chat_line("bad", "Hi", temperature=7)]
    created = submit(client, lines, output_expires_after=HOUR)
    batch = wait_for(client, created.id)
    assert batch.status == "completed", batch
    assert batch.output_file_id and batch.error_file_id
    for file_id in (batch.output_file_id, batch.error_file_id):
        f = client.files.retrieve(file_id)
        # OpenAI: "the anchor is the file creation time, not the time the batch is created"
        assert f.expires_at == f.created_at + 3600, f
        assert f.created_at >= batch.created_at

    plain = wait_for(client, submit(client, [chat_line("ok", "Hi", max_tokens=2)]).id)
    assert client.files.retrieve(plain.output_file_id).expires_at is None


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"}, "s", "v"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"}, "s", "v"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "1h"}, "s", "v"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "-3600"}, "s", "v"),
        ({"expires_after[anchor]": "created_at"}, "s", "m"),
        ({"expires_after[seconds]": "3600"}, "a", "m"),
        ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"}, "a", "v"),
        ({"expires_after": '{"anchor": "created_at", "seconds": 3600}'}, "", "v"),
    ],
)
def test_upload_with_a_bad_expires_after_is_refused(
    cluster: Cluster, fields: dict[str, str], param: str, code: str
) -> None:
    before = {f.id for f in cluster.client.files.list()}
    r = cluster.http.post(
        "/v1/files",
        files={"file": ("x.jsonl", b"{}\n")},
        data={"purpose": "user_data", **fields},
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    names = {"a": "expires_after[anchor]", "s": "expires_after[seconds]", "": "expires_after"}
    codes = {"v": "invalid_value", "m": "missing_required_parameter"}
    assert (error["param"], error["code"]) == (names[param], codes[code]), error
    assert error["type"] == "invalid_request_error"
    assert {f.id for f in cluster.client.files.list()} == before  # nothing was stored


@pytest.mark.parametrize(
    "policy",
    [
        {"anchor": "created_at", "seconds": 3599},
        {"anchor": "created_at", "seconds": 2592001},
        {"anchor": "created_at", "seconds": "3600"},
        {"anchor": "completed_at", "seconds": 3600},
        {"seconds": 3600},
        {"anchor": "created_at"},
    ],
)
def test_batch_with_a_bad_output_expires_after_is_refused(cluster: Cluster, policy: dict) -> None:
    file_id = cluster.client.files.create(
        file=("x.jsonl", jsonl([chat_line("x", "hi")])), purpose="batch"
    ).id
    r = cluster.http.post(
        "/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "output_expires_after": policy,
        },
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "output_expires_after", error
    assert error["message"].startswith("output_expires_after."), error
