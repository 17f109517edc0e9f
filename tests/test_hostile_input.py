"""Hostile input is refused cleanly, in OpenAI's error shape (other tenants' ids: see
test_auth.py)."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import Cluster, chat_line, jsonl, submit, upload, wait_for

ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/abs/path/in.jsonl", "in.jsonl"),
        ('evil".jsonl', "evil_.jsonl"),
        ("nul\x00.jsonl", "nul_.jsonl"),
        ("..", "upload.jsonl"),
    ],
)
def test_path_like_filenames(cluster: Cluster, name: str, stored: str) -> None:
    # A raw multipart body: HTTP clients would escape the hostile characters themselves.
    body = (
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="'
        + name.replace('"', '\\"').encode()
        + b'"\r\n\r\n{}\n\r\n--B--\r\n'
    )
    r = cluster.http.post(
        "/v1/files", content=body, headers={"content-type": "multipart/form-data; boundary=B"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["filename"] == stored
    content = cluster.http.get(f"/v1/files/{r.json()['id']}/content")
    assert content.content == b"{}\n"
    assert "set-cookie" not in content.headers


def _failed_with(client: openai.OpenAI, lines: list, code: str) -> None:
    batch = submit(client, lines)
    done = wait_for(client, batch.id)
    assert done.status == "failed"
    assert [e.code for e in done.errors.data] == [code], done.errors


def test_deeply_nested_json_line(client: openai.OpenAI) -> None:
    body = chat_line("deep", "hi")
    text = json.dumps(body)[:-2] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    _failed_with(client, [text], "invalid_json_line")


def test_huge_line(cluster: Cluster) -> None:
    # The shared server keeps the default 4 MB line limit but only 2 MB uploads (see
    # test_auth.py for a server with a small limit); the validator alone…
    from io import BytesIO

    from batch_server.jobs.validation import validate

    line = json.dumps(chat_line("big", "x" * 5000)).encode() + b"\n"
    result = validate(
        BytesIO(line),
        endpoint="/v1/chat/completions",
        batch_model=None,
        aliases={"smollm2-135m-instruct": "smollm2-135m-instruct"},
        max_requests=10,
        unit_size=4,
        max_errors=10,
        max_line_bytes=1000,
    )
    assert [e["code"] for e in result.errors] == ["line_too_long"]
    # …and end to end: a huge line over the upload limit is refused before it is stored.
    big = json.dumps(chat_line("big", "x" * 3_000_000)).encode()
    r = cluster.http.post("/v1/files", files={"file": ("a.jsonl", big)}, data={"purpose": "batch"})
    assert r.status_code == 413


def test_non_utf8_bytes(client: openai.OpenAI, cluster: Cluster) -> None:
    raw = json.dumps(chat_line("bad", "hi")).encode().replace(b"hi", b"h\xff\xfe")
    file_id = upload(client, raw + b"\n")
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for(client, batch.id)
    assert done.status == "failed"
    assert done.errors.data[0].code == "invalid_encoding"
    r = cluster.http.post(
        "/v1/batches",
        content=b'{"input_file_id": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_deeply_nested_request_body(cluster: Cluster) -> None:
    r = cluster.http.post(
        "/v1/batches",
        content=b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert set(r.json()["error"]) == ERROR_KEYS


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b"input_file_id=x"),
        ("application/x-www-form-urlencoded", b"input_file_id=x"),
        ("application/xml", b"<batch/>"),
    ],
)
def test_wrong_content_types(cluster: Cluster, content_type: str, body: bytes) -> None:
    for path in ("/v1/batches", "/v1/files"):
        r = cluster.http.post(path, content=body, headers={"content-type": content_type})
        assert r.status_code == 415, (path, r.text)
        assert r.json()["error"]["code"] == "invalid_content_type"


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(17)},
        {"k": "v" * 513},
        {"k" * 65: "v"},
    ],
)
def test_oversized_metadata(client: openai.OpenAI, metadata: dict) -> None:
    file_id = upload(client, jsonl([chat_line("a", "hi")]))
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata=metadata,
        )
    assert info.value.body["param"] == "metadata"


def test_metadata_that_is_not_an_object_in_a_form(cluster: Cluster) -> None:
    r = cluster.http.post(
        "/v1/batches",
        files={"file": ("r.jsonl", jsonl([chat_line("a", "hi")]))},
        data={"metadata": "[1, 2, 3]"},
    )
    assert r.status_code == 400
    assert set(r.json()["error"]) == ERROR_KEYS


def test_cross_site_browser_requests_refused_on_an_open_server(cluster: Cluster) -> None:
    """Without keys, a web page on another site cannot make a visitor's browser upload
    files or cancel batches on this (local) server; this server's own pages and clients
    that are not browsers (no Origin) can."""
    files = {"file": ("a.jsonl", b'{"custom_id": "x"}\n', "application/jsonl")}
    form = {"purpose": "batch"}
    evil = cluster.http.post(
        "/v1/files", files=files, data=form, headers={"Origin": "http://evil.example"}
    )
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "permission_denied"
    referer = cluster.http.post(
        "/v1/batches/batch_x/cancel", headers={"Referer": "http://evil.example/page"}
    )
    assert referer.status_code == 403
    ours = cluster.http.post("/v1/files", files=files, data=form, headers={"Origin": cluster.url})
    assert ours.status_code == 200, ours.text
    assert cluster.http.post("/v1/files", files=files, data=form).status_code == 200
    read = cluster.http.get("/v1/files", headers={"Origin": "http://evil.example"})
    assert read.status_code == 200  # reads are not refused (the browser keeps the answer)
