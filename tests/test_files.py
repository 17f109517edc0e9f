"""Files API with the official SDK, plus limits and hostile input."""

from __future__ import annotations

import httpx
import openai
import pytest

from conftest import Cluster, chat_line, jsonl, submit


def test_upload_list_retrieve_download_delete(client: openai.OpenAI) -> None:
    data = jsonl([chat_line("a", "hi")])
    created = client.files.create(file=("mine.jsonl", data), purpose="batch")
    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(data)
    assert created.filename == "mine.jsonl"
    assert created.purpose == "batch"
    assert created.status == "processed"
    assert isinstance(created.created_at, int)

    assert client.files.retrieve(created.id).bytes == len(data)
    assert client.files.content(created.id).content == data
    assert created.id in [f.id for f in client.files.list(purpose="batch")]

    deleted = client.files.delete(created.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)


def test_list_pagination_and_order(client: openai.OpenAI) -> None:
    ids = [
        client.files.create(file=(f"p{i}.jsonl", b"{}\n"), purpose="user_data").id for i in range(3)
    ]
    page = client.files.list(purpose="user_data", limit=2)
    assert [f.id for f in page.data] == ids[::-1][:2]
    assert page.has_more
    rest = client.files.list(purpose="user_data", limit=2, after=page.data[-1].id)
    assert [f.id for f in rest.data] == [ids[0]]
    ascending = client.files.list(purpose="user_data", order="asc")
    assert [f.id for f in ascending.data][:3] == ids


def test_oversized_upload_is_refused_with_413(cluster: Cluster) -> None:
    big = b"x" * 2_500_000  # the shared server allows 2,000,000 bytes
    r = cluster.http.post(
        "/v1/files", files={"file": ("big.jsonl", big)}, data={"purpose": "batch"}
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "file_too_large"

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(30):
            yield b"y" * 100_000

    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="s.jsonl"\r\n\r\n'
    ).encode()

    def body():
        yield head
        yield from chunks()
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(
        f"{cluster.url}/v1/files",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 413


def test_path_like_filename_is_neutralised(cluster: Cluster) -> None:
    r = cluster.http.post(
        "/v1/files", files={"file": ("../../etc/passwd", b"{}\n")}, data={"purpose": "batch"}
    )
    assert r.status_code == 200
    assert r.json()["filename"] == "passwd"


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": {"purpose": "nonsense"}, "files": {"file": ("a.jsonl", b"{}")}}, 400),
        ({"data": {"purpose": "batch"}, "files": {"other": ("a.jsonl", b"{}")}}, 400),
        ({"data": {"purpose": "batch"}}, 415),
        ({"files": {"file": ("a.jsonl", b"{}")}}, 400),
        ({"json": {"purpose": "batch"}}, 415),
    ],
)
def test_bad_uploads(cluster: Cluster, kwargs: dict, status: int) -> None:
    r = cluster.http.post("/v1/files", **kwargs)
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_input_of_a_live_batch_cannot_be_deleted(client: openai.OpenAI) -> None:
    batch = submit(client, [chat_line(f"r{i}", "Tell a story.", max_tokens=40) for i in range(6)])
    with pytest.raises(openai.ConflictError):
        client.files.delete(batch.input_file_id)
    client.batches.cancel(batch.id)


def test_unknown_route_is_openai_shaped(cluster: Cluster) -> None:
    r = cluster.http.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_models_health_ready(cluster: Cluster) -> None:
    models = cluster.client.models.list()
    assert [m.id for m in models.data] == [
        "smollm2-135m-instruct",
        "smollm2-135m-instruct-vllm",
        "gemma-3-270m",
        "all-minilm-l6-v2",
        "toxic-comment-classifier",
    ]
    assert cluster.client.models.retrieve("smollm2").id == "smollm2-135m-instruct"
    assert cluster.http.get("/health").json()["status"] == "ok"
    ready = cluster.http.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["workers"] >= 1
