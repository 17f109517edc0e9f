"""API keys, tenant isolation on every file and batch endpoint, admin endpoints, per-key
limits, and the refusal to listen beyond loopback without keys."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from batch_server import keys
from batch_server.db.session import Database
from conftest import Cluster, Proc, chat_line, free_port, jsonl, submit, upload, wait_for


class Tenants:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.tokens = {
            name: cluster.cli("keys", "create", name, *(["--admin"] if name == "root" else []))
            .strip()
            .splitlines()[-1]
            for name in ("alice", "bob", "root", "dave", "erin")
        }
        keys = self.http("root").get("/v1/admin/keys").json()["data"]
        self.ids = {k["name"]: k["id"] for k in keys}

    def client(self, name: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.cluster.url}/v1", api_key=self.tokens[name], max_retries=0
        )

    def http(self, name: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.cluster.url,
            headers={"Authorization": f"Bearer {self.tokens[name]}"},
            timeout=60,
        )


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    c = Cluster(tmp_path_factory.mktemp("auth"), {"unit_size": 2, "max_line_bytes": 20_000})
    yield Tenants(c)
    c.close()


def test_keys_are_required_once_one_exists(tenants: Tenants) -> None:
    url = tenants.cluster.url
    for headers in ({}, {"Authorization": "Bearer bsk-wrong"}, {"Authorization": "Basic eA=="}):
        r = httpx.get(f"{url}/v1/files", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        tenants.cluster.client.files.list()  # api_key="test"
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 200
    assert tenants.client("alice").files.list().data == []


def test_keys_are_stored_hashed_and_listed(tenants: Tenants) -> None:
    db = (tenants.cluster.tmp / "data" / "batch_server.db").read_bytes()
    assert all(token.encode() not in db for token in tenants.tokens.values())
    listing = tenants.cluster.cli("keys", "list")
    assert "alice" in listing and "admin" in listing
    assert tenants.tokens["alice"] not in listing


def test_tenant_isolation_on_every_endpoint(tenants: Tenants) -> None:
    alice, bob, root = tenants.client("alice"), tenants.client("bob"), tenants.client("root")
    file_id = upload(alice, jsonl([chat_line("a", "Tell a long story.", max_tokens=60)] * 1))
    spare = upload(alice, jsonl([chat_line("b", "hi")]))
    batch = alice.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    for call in (
        lambda: bob.files.retrieve(file_id),
        lambda: bob.files.content(file_id),
        lambda: bob.files.delete(spare),
        lambda: bob.batches.retrieve(batch.id),
        lambda: bob.batches.cancel(batch.id),
        lambda: bob.batches.create(
            input_file_id=spare, endpoint="/v1/chat/completions", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    bob_http = tenants.http("bob")
    for method, path, kwargs in (
        ("GET", f"/v1/batches/{batch.id}/logs", {}),
        ("GET", f"/v1/batches/{batch.id}/failed", {}),
        ("GET", f"/v1/batches/{batch.id}/requests", {}),
        ("POST", f"/v1/batches/{batch.id}/priority", {"json": {"priority": 5}}),
        ("GET", f"/v1/queue/{batch.id}", {}),
    ):
        assert bob_http.request(method, path, **kwargs).status_code == 404, path
    assert batch.id not in [e["id"] for e in bob_http.get("/v1/queue").json()["data"]]
    history = bob_http.get("/v1/jobs/history", params={"status": "all"}).json()["data"]
    assert batch.id not in [e["id"] for e in history]
    assert tenants.http("alice").get(f"/v1/queue/{batch.id}").status_code in (200, 404)
    # the dashboard shows every batch: admins only once keys exist
    assert bob_http.get("/ui").status_code == 403
    assert tenants.http("root").get("/ui").status_code == 200
    assert file_id not in [f.id for f in bob.files.list()]
    for path, cursor in (("/v1/batches", batch.id), ("/v1/files", file_id)):
        assert tenants.http("bob").get(path, params={"after": cursor}).status_code == 404
    assert batch.id not in [b.id for b in bob.batches.list()]
    # The owner still has everything, and an admin sees it all.
    assert alice.files.retrieve(spare).id == spare
    assert batch.id in [b.id for b in alice.batches.list()]
    assert batch.id in [b.id for b in root.batches.list()]
    assert file_id in [f.id for f in root.files.list()]

    done = wait_for(alice, batch.id)
    assert done.status == "completed"
    finished = tenants.http("alice").get("/v1/jobs/history").json()["data"]
    assert batch.id in [e["id"] for e in finished]
    finished = tenants.http("bob").get("/v1/jobs/history").json()["data"]
    assert batch.id not in [e["id"] for e in finished]
    assert alice.files.content(done.output_file_id).text  # output files belong to the owner
    with pytest.raises(openai.NotFoundError):
        bob.files.content(done.output_file_id)
    assert root.files.retrieve(done.output_file_id).id == done.output_file_id


def test_admin_endpoints_need_an_admin_key(tenants: Tenants) -> None:
    for path in ("/v1/admin/workers", "/v1/admin/limits", "/v1/admin/keys"):
        r = tenants.http("alice").get(path)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "permission_denied"
    root = tenants.http("root")
    workers = root.get("/v1/admin/workers").json()["data"]
    assert any(w["alive"] for w in workers)
    reset = root.post("/v1/admin/reset-stuck").json()
    assert reset["units_released"] == 0
    assert root.get("/v1/admin/webhook-secret").json()["secret"].startswith("whsec_")


def test_revoked_key_is_refused(tenants: Tenants) -> None:
    token = tenants.cluster.cli("keys", "create", "carol").strip().splitlines()[-1]
    r = httpx.get(f"{tenants.cluster.url}/v1/files", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    key_id = next(
        k["id"]
        for k in tenants.http("root").get("/v1/admin/keys").json()["data"]
        if k["name"] == "carol"
    )
    assert key_id in tenants.cluster.cli("keys", "revoke", key_id)
    time.sleep(keys.CACHE_SECONDS)  # how long an API process trusts what it read of a key
    r = httpx.get(f"{tenants.cluster.url}/v1/files", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_key_cache_trusts_an_answer_for_its_ttl_only(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'keys.db'}")
    db.migrate()
    now = [0.0]
    cache = keys.KeyCache(db, ttl=1.0, clock=lambda: now[0])
    assert not cache.any_active()
    row, token = keys.create_key(db, "alice")
    now[0] = 0.999
    assert not cache.any_active()  # read at 0.0
    now[0] = 1.0
    assert cache.any_active()
    assert cache.lookup("bsk-wrong") is None
    assert cache.lookup(token) == keys.ActiveKey(row.id, False, "alice")
    assert keys.revoke_key(db, row.id)
    now[0] = 1.999
    assert cache.lookup(token) is not None  # read at 1.0
    now[0] = 2.0
    assert cache.lookup(token) is None


def _set_limits(tenants: Tenants, name: str, **limits: int | None) -> None:
    r = tenants.http("root").patch(f"/v1/admin/keys/{tenants.ids[name]}", json={"limits": limits})
    assert r.status_code == 200, r.text


def test_per_key_upload_and_batch_size_limits(tenants: Tenants) -> None:
    _set_limits(tenants, "bob", max_upload_bytes=2000, max_requests_per_batch=2)
    bob = tenants.client("bob")
    r = tenants.http("bob").post(
        "/v1/files", files={"file": ("big.jsonl", b"x" * 5000)}, data={"purpose": "batch"}
    )
    assert r.status_code == 413
    batch = submit(bob, [chat_line(f"r{i}", "hi") for i in range(3)])
    failed = wait_for(bob, batch.id)
    assert failed.status == "failed"
    assert failed.errors.data[0].code == "too_many_requests"
    # Alice is not limited.
    assert (
        wait_for(
            tenants.client("alice"),
            submit(tenants.client("alice"), [chat_line(f"r{i}", "hi") for i in range(3)]).id,
        ).status
        == "completed"
    )
    bad = tenants.http("root").patch(
        f"/v1/admin/keys/{tenants.ids['bob']}", json={"limits": {"max_upload_bytes": -1}}
    )
    assert bad.status_code == 400


def test_max_queued_requests(tenants: Tenants) -> None:
    _set_limits(tenants, "dave", max_queued_requests=2)
    dave = tenants.client("dave")
    first = submit(
        dave, [chat_line(f"r{i}", "Tell a long story.", max_tokens=80) for i in range(4)]
    )
    wait_for(dave, first.id, ("in_progress",), predicate=lambda b: b.request_counts.total == 4)
    with pytest.raises(openai.RateLimitError) as info:
        submit(dave, [chat_line("x", "hi")])
    assert info.value.body["code"] == "queue_limit_exceeded"
    dave.batches.cancel(first.id)
    wait_for(dave, first.id)


def test_rate_limit_on_creation_calls(tenants: Tenants) -> None:
    _set_limits(tenants, "erin", create_rate_per_minute=3)
    erin = tenants.client("erin")
    for _ in range(3):
        upload(erin, jsonl([chat_line("a", "hi")]))
    with pytest.raises(openai.RateLimitError) as info:
        upload(erin, jsonl([chat_line("a", "hi")]))
    assert info.value.status_code == 429
    assert info.value.body["code"] == "rate_limit_exceeded"
    assert "per minute" in info.value.body["message"]
    erin.files.list()  # reads are not rate limited


def test_runtime_server_limits(tenants: Tenants) -> None:
    root = tenants.http("root")
    assert root.get("/v1/admin/limits").json()["max_queued_requests"] is None
    r = root.patch("/v1/admin/limits", json={"max_requests_per_batch": 1000})
    assert r.json()["max_requests_per_batch"] == 1000
    assert root.patch("/v1/admin/limits", json={"nonsense": 1}).status_code == 400


def test_refuses_to_listen_beyond_loopback_without_keys(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "BATCH_SERVER_DATA_DIR": str(tmp_path / "data"),
        "BATCH_SERVER_PORT": str(port),
    }
    args = [sys.executable, "-m", "batch_server", "serve", "--host", "0.0.0.0", "--no-worker"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "without API keys" in done.stderr

    proc = Proc(
        ["serve", "--host", "0.0.0.0", "--no-worker", "--allow-open"], env, tmp_path / "s.log"
    )
    try:
        Cluster._wait_up_url(proc, f"http://127.0.0.1:{port}")
    finally:
        proc.stop()


def test_huge_line_fails_validation(tenants: Tenants) -> None:
    """Hostile input on this module's server, which has a small ``max_line_bytes``."""
    alice = tenants.client("alice")
    batch = submit(alice, [chat_line("ok", "hi"), chat_line("big", "x" * 50_000)])
    done = wait_for(alice, batch.id)
    assert done.status == "failed"
    assert [(e.code, e.line) for e in done.errors.data] == [("line_too_long", 2)]
