"""The HTTP edge under hostile input, on SQLite and on PostgreSQL: lone surrogates and NULs
in strings, body sizes, Host and proxy headers, Unicode file names, a create racing a
delete, the creation rate limit, out-of-range numbers and arbitrary input lines.

Each server here runs without a worker: batches stay ``validating``, so nothing competes
for the CPU and a batch created from a deleted file cannot be mistaken for one that ended.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import openai
import pytest

from conftest import DATABASES, Cluster, chat_line, database_url, jsonl, upload

pytestmark = DATABASES

ERROR_KEYS = {"message", "type", "param", "code"}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, database: str
) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp(f"edge-{database}"),
        in_process_worker=False,
        database_url=database_url(request, database),
    )
    yield c
    c.close()


def _error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == ERROR_KEYS
    if param is not None:
        assert error["param"] == param, error
    return error


def _input_file(c: Cluster) -> str:
    return upload(c.client, jsonl([chat_line("a", "hi")]))


def _create(c: Cluster, file_id: str, **fields: object) -> httpx.Response:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", **fields}
    return c.http.post("/v1/batches", json=body)


def _views_answer(c: Cluster) -> None:
    for path in (
        "/v1/batches",
        "/v1/jobs/history?status=all",
        "/v1/queue",
        "/ui/batches",
        "/ui/queue",
        "/v1/files",
    ):
        assert c.http.get(path).status_code == 200, path


# -- 1. lone surrogates (and NULs) never reach the database ------------------------------


def _raw(fields: dict, *escapes: str) -> str:
    """``fields`` as JSON text, with each ``@N`` replaced by the raw JSON escape
    ``escapes[N]`` (json.dumps would never write a lone surrogate)."""
    text = json.dumps(fields)
    for i, escape in enumerate(escapes):
        text = text.replace(f"@{i}", escape)
    return text


@pytest.mark.parametrize("key", ["k", "webhook_url"])
def test_lone_surrogate_in_json_body_is_refused(edge: Cluster, key: str) -> None:
    fields = {
        "input_file_id": _input_file(edge),
        "endpoint": "/v1/chat/completions",
        "metadata": {key: "https://x.example/@0"},
    }
    r = edge.http.post("/v1/batches", content=_raw(fields, "\\ud800"), headers=JSON)
    error = _error(r, 400, "metadata")
    assert error["code"] == "invalid_string" and f"metadata.{key}" in error["message"]
    history = edge.http.get("/v1/jobs/history?status=all").json()["data"]
    assert not any(b["metadata"] and key in b["metadata"] for b in history)
    _views_answer(edge)
    # a valid pair of surrogates is one character, stored as it came
    fields["metadata"] = {"emoji": "@0"}
    made = edge.http.post("/v1/batches", content=_raw(fields, "\\ud83d\\ude00"), headers=JSON)
    assert made.status_code == 200, made.text
    assert edge.client.batches.retrieve(made.json()["id"]).metadata == {"emoji": "😀"}
    _views_answer(edge)


def test_lone_surrogates_and_nuls_elsewhere(edge: Cluster) -> None:
    base = {"input_file_id": _input_file(edge), "endpoint": "/v1/chat/completions"}
    for fields, escape in (
        (base | {"input_file_id": "@0"}, "\\u0000"),
        (base | {"model": "@0"}, "\\udfff"),
        (base | {"metadata": {"@0": "v"}}, "\\ud800"),
    ):
        r = edge.http.post("/v1/batches", content=_raw(fields, escape), headers=JSON)
        assert _error(r, 400)["code"] == "invalid_string"
    # a JSON body of any route, content type or none
    for headers in (JSON, {"content-type": "application/merge-patch+json"}, {}):
        r = edge.http.post(
            "/v1/batches/batch_x/priority", content='{"priority": "\\ud800"}', headers=headers
        )
        _error(r, 400, "priority")
    # a JSON form field, and multipart text decoded from UTF-7 (which can hold surrogates)
    form = {"metadata": '{"k": "\\ud800"}', "model": "smollm2"}
    files = {"file": ("r.jsonl", jsonl([chat_line("a", "hi")]))}
    _error(edge.http.post("/v1/batches", data=form, files=files), 400, "metadata")
    utf7 = (
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="+2AA-.jsonl"\r\n\r\n'
        b"{}\n\r\n--B--\r\n"
    )
    r = edge.http.post(
        "/v1/files",
        content=utf7,
        headers={"content-type": "multipart/form-data; boundary=B; charset=utf-7"},
    )
    _error(r, 400, "file")
    # URLs: percent-escapes that are not UTF-8 (an encoded surrogate) or decode to a NUL
    for path in (
        "/v1/batches?after=%ED%A0%80",
        "/v1/jobs/history?q=%ED%A0%80",
        "/v1/files/%ED%A0%80",
        "/v1/files/%00",
        "/v1/jobs/history?q=a%00",
        "/ui/batches?q=%ED%A0%80",
    ):
        error = _error(edge.http.get(path), 400)
        assert error["code"] in ("invalid_encoding", "invalid_string"), path
    _views_answer(edge)


# -- 2. bodies other than uploads are bounded ---------------------------------------------


def _raw_request(c: Cluster, head: str) -> str:
    """Send request headers only; the answer (a server that waited for the body would
    not answer within the timeout)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as sock:
        sock.sendall(head.encode())
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode(errors="replace")


def test_declared_large_body_is_refused_at_once(edge: Cluster) -> None:
    answer = _raw_request(
        edge,
        f"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1:{edge.port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 157286400\r\n\r\n",
    )
    assert answer.startswith("HTTP/1.1 413"), answer
    assert '"code":"request_too_large"' in answer


def _rss_peak_kib(c: Cluster) -> int:
    status = Path(f"/proc/{c.server.popen.pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1])


def test_streamed_large_body_is_refused_in_flat_memory(edge: Cluster) -> None:
    before = _rss_peak_kib(edge)

    def chunks() -> Iterator[bytes]:
        yield b'{"metadata": {"k": "'
        for _ in range(100):
            yield b"x" * 1024 * 1024
        yield b'"}}'

    try:  # no Content-Length: the limit holds while the body streams
        r = httpx.post(f"{edge.url}/v1/batches", content=chunks(), headers=JSON, timeout=60)
        _error(r, 413)
    except httpx.TransportError:
        pass  # the server may close the connection instead of reading 100 MB it refused
    assert _rss_peak_kib(edge) - before < 30 * 1024
    assert edge.http.get("/v1/batches").status_code == 200


def test_every_non_upload_body_is_bounded(edge: Cluster) -> None:
    big = b"x" * (1024 * 1024 + 1)
    _error(edge.http.post("/v1/batches", content=big, headers=JSON), 413)
    _error(edge.http.patch("/v1/admin/limits", content=big, headers=JSON), 413)
    multipart = {"content-type": "multipart/form-data; boundary=B"}
    _error(edge.http.post("/v1/batches/batch_x/priority", content=big, headers=multipart), 413)
    _error(edge.http.post("/ui/login", content=big), 413)
    # uploads stream under their own, larger limit
    data = jsonl([chat_line(f"r{i}", "x" * 1000) for i in range(1500)])
    assert len(data) > 1024 * 1024
    assert upload(edge.client, data)


# -- 3. Host and proxy headers --------------------------------------------------------------


def test_dns_rebinding_host_is_refused_on_an_open_server(edge: Cluster) -> None:
    evil = f"attacker.example:{edge.port}"
    headers = {"Host": evil, "Origin": f"http://{evil}"}
    files = {"file": ("a.jsonl", jsonl([chat_line("a", "hi")]))}
    r = edge.http.post("/v1/files", files=files, data={"purpose": "batch"}, headers=headers)
    assert _error(r, 400)["code"] == "host_not_allowed"
    assert _error(edge.http.get("/v1/batches", headers={"Host": evil}), 400)
    assert edge.http.get("/ui/queue", headers={"Host": evil}).status_code == 400
    for host in (f"127.0.0.1:{edge.port}", f"localhost:{edge.port}", f"[::1]:{edge.port}"):
        assert edge.http.get("/v1/batches", headers={"Host": host}).status_code == 200, host


def test_forwarded_headers_ignored_from_an_untrusted_peer(edge: Cluster) -> None:
    """X-Forwarded-Host named a site that the Origin matched: the cross-site guard let it
    through from any client."""
    headers = {
        "X-Forwarded-Host": "attacker.example",
        "Origin": "http://attacker.example",
        "X-Forwarded-For": "203.0.113.9",
    }
    r = edge.http.post("/v1/batches/batch_x/cancel", headers=headers)
    assert _error(r, 403)["code"] == "permission_denied"
    assert "203.0.113.9" not in edge.server.output()


def test_forwarded_headers_honoured_from_a_trusted_proxy(
    tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    c = Cluster(
        tmp_path,
        {"trusted_proxies": "10.0.0.0/8, 127.0.0.1", "allowed_hosts": "batch.example"},
        in_process_worker=False,
        database_url=database_url(request, database),
    )
    try:
        assert _error(c.http.get("/v1/batches"), 400)["code"] == "host_not_allowed"
        proxied = {
            "X-Forwarded-Host": "batch.example",
            "X-Forwarded-For": "203.0.113.7, 10.1.2.3",
            "X-Forwarded-Proto": "https",
        }
        assert c.http.get("/v1/batches", headers=proxied).status_code == 200
        cancel = c.http.post(
            "/v1/batches/batch_x/cancel", headers=proxied | {"Origin": "https://batch.example"}
        )
        assert _error(cancel, 404)["code"] == "not_found"  # past the cross-site guard
        time.sleep(0.5)
        assert '203.0.113.7:0 - "GET /v1/batches HTTP/1.1" 200' in c.server.output()
        # X-Forwarded-Proto: https makes the login cookie Secure
        key = c.cli("keys", "create", "root", "--admin").strip().splitlines()[-1]
        for proto, secure in (("https", True), ("http", False)):
            login = c.http.post(
                "/ui/login",
                data={"key": key},
                headers=proxied | {"X-Forwarded-Proto": proto},
            )
            assert login.status_code == 303, login.text
            assert ("secure" in login.headers["set-cookie"].lower()) is secure
    finally:
        c.close()


# -- 4. Unicode file names ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["文件.jsonl", "😀.jsonl", "plain.jsonl"])
def test_unicode_file_names_download(edge: Cluster, name: str) -> None:
    data = jsonl([chat_line("a", "hi")])
    created = edge.client.files.create(file=(name, data), purpose="batch")
    r = edge.http.get(f"/v1/files/{created.id}/content")
    assert r.status_code == 200 and r.content == data
    disposition = r.headers["content-disposition"]
    assert disposition.isascii() and disposition.startswith("attachment; filename=")
    assert edge.client.files.retrieve(created.id).filename == name
    if name.isascii():
        assert disposition == f'attachment; filename="{name}"'
    else:
        assert disposition.endswith(f"; filename*=UTF-8''{quote(name, safe='')}")
    assert edge.client.files.content(created.id).content == data


# -- 5. a create racing the deletion of its input file ----------------------------------------


def test_create_and_delete_of_its_input_never_both_succeed(edge: Cluster) -> None:
    outcomes = []
    for _ in range(25):
        file_id = _input_file(edge)
        barrier = threading.Barrier(2)
        result: dict[str, int] = {}

        def create(fid: str = file_id, out: dict = result, gate: threading.Barrier = barrier):
            with httpx.Client(base_url=edge.url, timeout=60) as http:
                body = {"input_file_id": fid, "endpoint": "/v1/chat/completions"}
                gate.wait()
                out["create"] = http.post("/v1/batches", json=body).status_code

        def delete(fid: str = file_id, out: dict = result, gate: threading.Barrier = barrier):
            with httpx.Client(base_url=edge.url, timeout=60) as http:
                gate.wait()
                out["delete"] = http.delete(f"/v1/files/{fid}").status_code

        threads = [threading.Thread(target=create), threading.Thread(target=delete)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert result["create"] in (200, 404) and result["delete"] in (200, 409), result
        assert (result["create"], result["delete"]) != (200, 200)
        outcomes.append((result["create"], result["delete"]))
    assert set(outcomes) <= {(200, 409), (404, 200)}


# -- 6. every upload counts against the creation rate -------------------------------------


def test_creation_rate_counts_uploads_of_every_purpose(
    tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    c = Cluster(
        tmp_path,
        {"create_rate_per_minute": 2},
        in_process_worker=False,
        database_url=database_url(request, database),
    )
    try:
        token = c.cli("keys", "create", "erin").strip().splitlines()[-1]
        erin = openai.OpenAI(base_url=f"{c.url}/v1", api_key=token, max_retries=0)
        for _ in range(2):
            erin.files.create(file=("o.jsonl", b"{}\n"), purpose="batch_output")
        with pytest.raises(openai.RateLimitError) as info:
            erin.files.create(file=("o.jsonl", b"{}\n"), purpose="batch_output")
        assert info.value.body["code"] == "rate_limit_exceeded"
    finally:
        c.close()


# -- 7. numbers out of range, arbitrary input lines ----------------------------------------


def test_out_of_range_numbers_are_400_on_a_live_connection(edge: Cluster) -> None:
    file_id = _input_file(edge)
    batch = _create(edge, file_id).json()["id"]
    huge = 10**30

    def create(**fields: object) -> dict:
        return {"input_file_id": file_id, "endpoint": "/v1/chat/completions", **fields}

    with httpx.Client(base_url=edge.url, timeout=60) as http:
        for method, path, body, param in (
            ("POST", "/v1/batches", create(completion_window="99999999999999999999d"), None),
            ("POST", "/v1/batches", create(completion_window="31d"), None),
            ("POST", "/v1/batches", create(completion_window="0000000000000000024h"), None),
            ("POST", "/v1/batches", create(priority=huge), "priority"),
            ("POST", "/v1/batches", create(metadata={"priority": str(huge)}), "metadata"),
            ("POST", f"/v1/batches/{batch}/priority", {"priority": huge}, "priority"),
            ("POST", f"/v1/batches/{batch}/priority", {"priority": -huge}, "priority"),
            ("GET", f"/v1/batches/{batch}/failed?offset={10**20}", None, "offset"),
            ("GET", f"/v1/batches/{batch}/requests?offset={10**20}", None, "offset"),
            ("GET", f"/v1/batches/{batch}/requests?limit={huge}", None, "limit"),
            ("GET", f"/v1/jobs/history?since={huge}", None, "since"),
            ("GET", f"/v1/jobs/history?until={-huge}", None, "until"),
            ("GET", f"/v1/batches?limit={huge}", None, "limit"),
            ("GET", f"/v1/files?limit={huge}", None, "limit"),
            ("GET", f"/v1/webhooks/dead-letter?limit={huge}", None, "limit"),
            ("GET", f"/v1/stats/throughput?window={huge}", None, None),
            ("GET", f"/ui/batches/{batch}?offset={10**20}", None, "offset"),
        ):
            r = http.request(method, path, json=body)
            _error(r, 400, param or (body and "completion_window"))
            assert r.headers.get("connection") != "close", path
            assert http.get("/health").status_code == 200
    ok = _create(edge, file_id, completion_window="30d", priority=1_000_000)
    assert ok.status_code == 200, ok.text
    assert ok.json()["expires_at"] - ok.json()["created_at"] == 30 * 86400


def test_views_read_any_input_line(edge: Cluster) -> None:
    lines = [
        "[1, 2, 3]",
        '"just a string"',
        json.dumps({"custom_id": {"a": 1}, "method": "POST", "url": "/v1/chat/completions"}),
        json.dumps({"custom_id": 5, "body": 5}),
        json.dumps({"custom_id": ["x"], "body": {"messages": 5}}),
        json.dumps({"custom_id": "m", "body": {"messages": [{"role": "user", "content": 7}]}}),
        '{"custom_id": "\\ud800", "body": {"prompt": "lone \\udfff surrogate"}}',
        "not json at all",
        json.dumps(chat_line("fine", "hi")),
    ]
    first = json.dumps(chat_line("inf", "hi", max_tokens=1))
    first = first.replace('"max_tokens": 1', '"max_tokens": 1e999')
    for content in (lines, [first, *lines]):
        file_id = upload(edge.client, jsonl(content))
        batch = _create(edge, file_id).json()["id"]
        pairs = edge.http.get(f"/v1/batches/{batch}/requests", params={"limit": 20})
        assert pairs.status_code == 200, pairs.text
        data = pairs.json()["data"]
        assert [p["custom_id"] for p in data][-3:] == ["\ud800", None, "fine"]
        assert edge.http.get(f"/v1/batches/{batch}/failed").status_code == 200
        page = edge.http.get(f"/ui/batches/{batch}")
        assert page.status_code == 200, page.text
        assert "fine" in page.text
        _views_answer(edge)


# -- 8. output_expires_after is validated as OpenAI does -------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"anchor": "created_at", "seconds": -1},
        {"anchor": "created_at", "seconds": 3599},
        {"anchor": "created_at", "seconds": 30 * 86400 + 1},
        {"anchor": "created_at", "seconds": "3600"},
        {"anchor": "created_at", "seconds": 3600.5},
        {"anchor": "completed_at", "seconds": 3600},
        {"seconds": 3600},
        {"anchor": "created_at", "seconds": 3600, "extra": 1},
        "1h",
        3600,
    ],
)
def test_output_expires_after_is_validated(edge: Cluster, value: object) -> None:
    file_id = _input_file(edge)
    error = _error(_create(edge, file_id, output_expires_after=value), 400)
    assert error["param"] == "output_expires_after"
    assert error["code"] in ("invalid_value", "missing_required_parameter")


def test_output_expires_after_within_bounds_is_accepted(edge: Cluster) -> None:
    file_id = _input_file(edge)
    for seconds in (3600, 30 * 86400):
        batch = edge.client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            output_expires_after={"anchor": "created_at", "seconds": seconds},
        )
        assert batch.status == "validating"
