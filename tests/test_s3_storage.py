"""S3-compatible storage against a real S3 server process (moto's standalone server):
streaming multipart uploads, ranged and line-by-line reads, and a whole batch whose
input, output and error files live in the bucket."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from batch_server.storage import S3_PART, S3FileStore
from conftest import Cluster, Upstream, chat_line, read_lines, submit, wait_for

BUCKET = "batches"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = Upstream(["-m", "moto.server", "-H", "127.0.0.1"], log, "/")
    boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket=BUCKET)
    yield server.url
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_multipart_write_and_streaming_reads(s3_url: str) -> None:
    store = S3FileStore(BUCKET, "unit", endpoint_url=s3_url)
    line = b'{"custom_id": "x", "pad": "' + b"a" * 1000 + b'"}\n'
    lines = 2 * S3_PART // len(line) + 100  # a bit over two parts
    digest = hashlib.sha256()
    with store.writer("file-big") as out:
        for _ in range(lines):
            out.write(line)
            digest.update(line)
        assert out.tell() == lines * len(line)
    size = lines * len(line)
    head = store.client.head_object(Bucket=BUCKET, Key="unit/file-big")
    assert head["ContentLength"] == size == store.size("file-big")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: it was a multipart upload

    streamed = hashlib.sha256()
    chunks = 0
    for chunk in store.iter_bytes("file-big"):
        streamed.update(chunk)
        chunks += 1
    assert streamed.digest() == digest.digest()
    assert chunks > 2
    assert b"".join(store.iter_bytes("file-big", len(line), len(line) + 10)) == line[:10]
    with store.open("file-big") as fh:
        fh.seek(5 * len(line))
        assert next(iter(fh)) == line
        assert sum(1 for _ in fh) == lines - 6

    with pytest.raises(RuntimeError), store.writer("file-aborted") as out:
        out.write(b"x" * (S3_PART + 1))  # one part uploaded, then the writer fails
        raise RuntimeError("client went away")
    listed = store.client.list_objects_v2(Bucket=BUCKET, Prefix="unit/")
    assert [o["Key"] for o in listed["Contents"]] == ["unit/file-big"]
    assert not store.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    store.delete("file-big")
    with pytest.raises(ValueError):
        store.size("../etc")


def test_batch_with_files_in_s3(tmp_path: Path, s3_url: str) -> None:
    env = {"BATCH_SERVER_STORAGE_URL": f"s3://{BUCKET}/e2e", "BATCH_SERVER_S3_ENDPOINT_URL": s3_url}
    c = Cluster(tmp_path, {"unit_size": 2}, env=env)
    try:
        big = os.urandom(S3_PART + 3 * 1024 * 1024)
        uploaded = c.client.files.create(file=("blob.bin", big), purpose="user_data")
        assert uploaded.bytes == len(big)
        with httpx.stream("GET", f"{c.url}/v1/files/{uploaded.id}/content") as r:
            assert b"".join(r.iter_bytes()) == big

        lines = [chat_line(f"r{i}", "Say hi.", max_tokens=4) for i in range(5)]
        lines.append(chat_line("bad", "Hi", temperature=9))
        batch = wait_for(c.client, submit(c.client, lines).id, timeout=120)
        assert batch.status == "completed", batch
        out = read_lines(c.client, batch.output_file_id)
        assert [o["custom_id"] for o in out] == [f"r{i}" for i in range(5)]
        assert [e["custom_id"] for e in read_lines(c.client, batch.error_file_id)] == ["bad"]
        s3 = boto3.client("s3", endpoint_url=s3_url)

        def keys() -> set[str]:
            return {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="e2e/")["Contents"]}

        for file_id in (uploaded.id, batch.input_file_id, batch.output_file_id):
            assert f"e2e/{file_id}" in keys()
        assert not (tmp_path / "data" / "files").exists() or not any(
            (tmp_path / "data" / "files").rglob("file-*")
        )
        c.client.files.delete(uploaded.id)
        assert f"e2e/{uploaded.id}" not in keys()
    finally:
        c.close()
