"""Annotations on a batch's requests over HTTP, on a real batch of the real model: set,
correct, rate, history, delete, list with filters and cursor paging, and tenancy (another
key's batch and annotations are "not found")."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from conftest import Cluster, chat_line, jsonl, wait_for


@dataclass
class Reviewed:
    cluster: Cluster
    alice: httpx.Client
    bob: httpx.Client
    batch_id: str


def _client(cluster: Cluster, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=cluster.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reviewed]:
    cluster = Cluster(tmp_path_factory.mktemp("annotations"), {"unit_size": 2})
    tokens = {
        name: cluster.cli("keys", "create", name).strip().splitlines()[-1]
        for name in ("alice", "bob")
    }
    alice, bob = _client(cluster, tokens["alice"]), _client(cluster, tokens["bob"])
    lines = [chat_line(f"q/{i}", f"Name a colour, {i}.", max_tokens=8) for i in range(5)]
    file_id = alice.post(
        "/v1/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}
    ).json()["id"]
    batch = alice.post(
        "/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "model": "smollm2-135m-instruct",
        },
    ).json()
    import openai

    sdk = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=tokens["alice"], max_retries=0)
    assert wait_for(sdk, batch["id"]).status == "completed"
    yield Reviewed(cluster, alice, bob, batch["id"])
    alice.close()
    bob.close()
    cluster.close()


def path(batch_id: str, custom_id: str) -> str:
    return f"/v1/batches/{batch_id}/requests/{custom_id}/annotation"


def test_annotate_correct_and_keep_history(reviewed: Reviewed) -> None:
    alice, b = reviewed.alice, reviewed.batch_id
    r = alice.put(path(b, "q/0"), json={"label": "golden", "rating": 5})
    assert r.status_code == 200, r.text
    golden = r.json()
    assert golden["object"] == "annotation" and golden["label"] == "golden"
    assert golden["rater"] == "alice" and golden["request_index"] == 0
    assert golden["model"] == "smollm2-135m-instruct"

    fixed = alice.put(
        path(b, "q/1"), json={"label": "fixed", "fixed_answer": "Blue.", "note": "terse"}
    ).json()
    assert fixed["fixed_answer"] == "Blue." and fixed["request_index"] == 1
    changed = alice.put(path(b, "q/1"), json={"label": "wrong", "rating": 1}).json()
    assert changed["fixed_answer"] is None and changed["label"] == "wrong"

    one = alice.get(path(b, "q/1")).json()
    assert [h["action"] for h in one["history"]] == ["put", "put"]
    assert one["history"][0]["before"] is None
    assert one["history"][1]["before"]["label"] == "fixed"
    assert one["history"][1]["after"]["label"] == "wrong"


def test_bad_annotations_are_refused(reviewed: Reviewed) -> None:
    alice, b = reviewed.alice, reviewed.batch_id
    cases = [
        ({"label": "fixed"}, "fixed_answer"),
        ({"label": "great"}, "label"),
        ({"rating": 6}, "rating"),
        ({"labels": "golden"}, "labels"),
    ]
    for body, param in cases:
        r = alice.put(path(b, "q/2"), json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param
    assert alice.put(path(b, "nope"), json={"label": "skip"}).status_code == 404
    assert alice.put(path("batch_missing", "q/2"), json={"label": "skip"}).status_code == 404
    assert alice.get(path(b, "q/2")).status_code == 404  # nothing was stored


def test_delete_and_list_with_filters_and_paging(reviewed: Reviewed) -> None:
    alice, b = reviewed.alice, reviewed.batch_id
    for i in (2, 3, 4):
        assert alice.put(path(b, f"q/{i}"), json={"label": "skip"}).status_code == 200
    assert alice.delete(path(b, "q/4")).json()["deleted"] is True
    assert alice.delete(path(b, "q/4")).status_code == 404
    assert [h["action"] for h in alice.get(path(b, "q/3")).json()["history"]] == ["put"]

    everything = alice.get("/v1/annotations", params={"batch_id": b}).json()
    assert {a["custom_id"] for a in everything["data"]} == {"q/0", "q/1", "q/2", "q/3"}
    skipped = alice.get("/v1/annotations", params={"label": "skip"}).json()["data"]
    assert {a["custom_id"] for a in skipped} == {"q/2", "q/3"}
    assert alice.get("/v1/annotations", params={"rater": "bob"}).json()["data"] == []
    by_model = alice.get("/v1/annotations", params={"model": "smollm2"}).json()["data"]
    assert len(by_model) == 4

    seen, after = [], None
    while True:
        page = alice.get(
            "/v1/annotations", params={"limit": 3, **({"after": after} if after else {})}
        ).json()
        seen += [a["custom_id"] for a in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert sorted(seen) == ["q/0", "q/1", "q/2", "q/3"]


def test_another_key_cannot_see_or_annotate(reviewed: Reviewed) -> None:
    bob, b = reviewed.bob, reviewed.batch_id
    assert bob.get(path(b, "q/0")).status_code == 404
    assert bob.put(path(b, "q/0"), json={"label": "wrong"}).status_code == 404
    assert bob.delete(path(b, "q/0")).status_code == 404
    assert bob.get("/v1/annotations").json()["data"] == []
    assert bob.get("/v1/annotations", params={"batch_id": b}).json()["data"] == []
    mine = reviewed.alice.get("/v1/annotations").json()
    assert bob.get("/v1/annotations", params={"after": mine["first_id"]}).status_code == 404
    assert reviewed.alice.get(path(b, "q/0")).json()["label"] == "golden"
