"""Webhooks end to end: a real HTTP receiver verifies every delivery with the
``standardwebhooks`` library; failures are retried, then dead-lettered; a server restart
mid-retry loses nothing; malformed URLs and addresses that are not public are refused
(at creation and before each attempt), and an attempt connects only to the address it
checked."""

from __future__ import annotations

import ipaddress
import json
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from webhook_receiver import SECRET, Receiver

from batch_server import webhooks
from batch_server.config import Settings
from batch_server.errors import APIError
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


def test_delivered_to_a_host_name(hooks: Cluster, receiver: Receiver) -> None:
    """The allowed path by name: ``localhost`` is resolved once and the event sent to one of
    its addresses (the receiver listens on 127.0.0.1 only, not on ::1)."""
    receiver.failing = False
    url = f"http://localhost:{receiver.server.server_address[1]}/hook"
    batch = submit(hooks.client, [chat_line("x", "Say hi.")], metadata={"webhook_url": url})
    assert wait_for(hooks.client, batch.id).status == "completed"
    receiver.wait(lambda: receiver.events(batch.id) == ["batch.completed"])


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


# Addresses that are not globally routable unicast; the first ones are forms of the
# receiver's own address (127.0.0.1), which must see no connection.
REFUSED = [
    "127.0.0.1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "64:ff9b::7f00:1",  # NAT64
    "2002:7f00:1::",  # 6to4
    "::127.0.0.1",  # IPv4-compatible
    "0.0.0.0",
    "::",
    "::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "224.0.0.1",
    "ff02::1",
    "ff0e::1",
    "169.254.169.254",  # cloud metadata
    "fe80::1",
    "fec0::1",
    "10.1.2.3",
    "fc00::1",
    "100.64.0.1",  # shared
    "240.0.0.1",
    "192.0.2.1",
]
PUBLIC = ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::"]


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/hook" if ":" in host else f"http://{host}:{port}/hook"


# Not URLs a webhook can go to (the first two answered 500 before).
MALFORMED = [
    "http://[::1",
    "http://example.com:99999/hook",
    "http://example.com:0/hook",
    "http://[not-an-address]/hook",
    "file:///etc/passwd",
    "ftp://example.com/x",
    "http:///hook",
    "http://user:secret@example.com/hook",
    "http://@example.com/hook",
    "http://example.com/a b",
    r"http://example.com\@127.0.0.1/hook",
    "http://127.1/hook",  # resolvers read these three as 127.0.0.1
    "http://2130706433/hook",
    "http://0x7f000001/hook",
    "http://-bad-.example.com/hook",
]


def test_address_classes() -> None:
    assert [a for a in PUBLIC if webhooks.refusal(ipaddress.ip_address(a))] == []
    assert [a for a in REFUSED if not webhooks.refusal(ipaddress.ip_address(a))] == []


@pytest.mark.parametrize("host", [*REFUSED, "localhost"])
def test_addresses_that_are_not_public_are_refused(
    client: openai.OpenAI, receiver: Receiver, host: str
) -> None:
    before = receiver.attempts
    url = _url(host, receiver.server.server_address[1])
    with pytest.raises(openai.BadRequestError) as info:
        submit(client, [chat_line("a", "hi")], metadata={"webhook_url": url})
    assert info.value.body["code"] == "invalid_webhook_url"
    assert info.value.body["param"] == "metadata.webhook_url"
    assert receiver.attempts == before


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_urls_are_invalid_values(client: openai.OpenAI, url: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        submit(client, [chat_line("a", "hi")], metadata={"webhook_url": url})
    assert info.value.body["code"] == "invalid_value", info.value.body
    assert info.value.body["param"] == "metadata.webhook_url"


@pytest.mark.parametrize(
    "metadata",
    [
        *({"webhook_url": url} for url in MALFORMED),
        {"webhook_url": "https://example.com/" + "a" * 2100},
        {"webhook_url": "https://example.com/\ud800"},
        {"webhook_url": "https://bücher.example/hook"},
        {"webhook_url": 42},
        {"webhook_url": "https://example.com/hook", "webhook_events": 42},
    ],
)
def test_subscription_raises_only_api_errors(metadata: dict) -> None:
    """Every malformed subscription is a 400 with the OpenAI error shape, whatever the
    settings (the server default URL goes through the same check)."""
    for allow_private in (False, True):
        settings = Settings(webhook_allow_private_urls=allow_private)
        with pytest.raises(APIError) as info:
            webhooks.subscription(settings, metadata)
        assert info.value.status_code == 400
        assert info.value.code == "invalid_value"
        assert info.value.param.startswith("metadata.webhook_")


def test_subscription_accepts_public_and_allowed_private_urls() -> None:
    public = Settings(webhook_allow_private_urls=False)
    url = "https://93.184.215.14:8443/hooks?source=batch#x"
    assert webhooks.subscription(public, {"webhook_url": url})[0] == url
    private = Settings(webhook_allow_private_urls=True)
    for url in ("http://127.0.0.1:9/hook", "http://[::1]:9/hook", "http://localhost/hook"):
        assert webhooks.subscription(private, {"webhook_url": url})[0] == url


def test_refused_at_delivery_too(tmp_path: Path, receiver: Receiver) -> None:
    """URLs that were accepted and then point somewhere refused (written into the
    database here; DNS may do it for real) are refused before any connection."""
    c = Cluster(
        tmp_path,
        {"webhook_secret": SECRET, "webhook_max_attempts": 2, "webhook_retry_base_seconds": 0.2},
        in_process_worker=False,
    )
    try:
        port = receiver.server.server_address[1]
        before = receiver.attempts
        hosts = [*REFUSED[:5], "localhost"]
        batches = [
            submit(
                c.client,
                [chat_line("a", "Hi.")],
                metadata={"webhook_url": f"http://93.184.215.14:{port}/hook"},
            )
            for _ in hosts
        ]
        with sqlite3.connect(tmp_path / "data" / "batch_server.db") as db:
            for batch, host in zip(batches, hosts, strict=True):
                db.execute(
                    "UPDATE batches SET webhook_url = ? WHERE id = ?", (_url(host, port), batch.id)
                )
        c.start_worker()
        for batch in batches:
            assert wait_for(c.client, batch.id).status == "completed"
        deadline = time.time() + 60
        while time.time() < deadline and len(_all_dead(c)) < len(batches):
            time.sleep(0.2)
        dead = _all_dead(c)
        assert sorted(d["batch_id"] for d in dead) == sorted(b.id for b in batches)
        assert all(d["attempts"] == 1 and d["last_error"].startswith("refused:") for d in dead), (
            dead
        )
        assert receiver.attempts == before
    finally:
        c.close()


def _all_dead(c: Cluster) -> list[dict[str, Any]]:
    return c.http.get("/v1/webhooks/dead-letter").json()["data"]


class Endpoint:
    """An HTTP (or, with a TLS context, HTTPS) endpoint on 127.0.0.1 that answers 204 and
    records the ``Host`` header of each request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        hosts: list[str] = []
        self.hosts = hosts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                hosts.append(self.headers["host"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _post(url: str, addresses: list[str]) -> httpx.Response:
    target = webhooks.parse_url(url)
    pinned = [ipaddress.ip_address(a) for a in addresses]
    with webhooks.delivery_client(5) as http:
        return webhooks.post_pinned(
            http, target, pinned, b"{}", {"content-type": "application/json"}
        )


def test_an_attempt_connects_only_to_the_checked_address() -> None:
    """``.invalid`` names never resolve: the request reaches the endpoint only because it
    goes to the address that was checked, with the URL's host in its Host header."""
    endpoint = Endpoint()
    try:
        response = _post(f"http://hooks.example.invalid:{endpoint.port}/hook", ["127.0.0.1"])
        assert response.status_code == 204
        assert endpoint.hosts == [f"hooks.example.invalid:{endpoint.port}"]
        # A name is resolved once and every address is checked before anything is sent.
        target = webhooks.parse_url(f"http://localhost:{endpoint.port}/hook")
        with pytest.raises(webhooks.UrlRefused):
            webhooks.checked_addresses(target, allow_private=False)
        addresses = webhooks.checked_addresses(target, allow_private=True)
        assert all(a.is_loopback for a in addresses)
        with webhooks.delivery_client(5) as http:  # ::1 (refused by the endpoint), then 127.0.0.1
            assert webhooks.post_pinned(http, target, addresses, b"{}", {}).status_code == 204
        assert endpoint.hosts[-1] == f"localhost:{endpoint.port}"
    finally:
        endpoint.close()


def test_https_to_a_pinned_address_verifies_the_url_host_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The certificate names ``localhost`` only: sent to 127.0.0.1, the request is verified
    against the URL's host name (SNI), so it passes for ``localhost`` and fails for any
    other name or for the bare address."""
    cert, key = _self_signed(tmp_path, "localhost")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the dispatcher trusts what the host trusts
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    endpoint = Endpoint(tls)
    try:
        port = endpoint.port
        assert _post(f"https://localhost:{port}/hook", ["127.0.0.1"]).status_code == 204
        assert endpoint.hosts == [f"localhost:{port}"]
        for url in (f"https://other.example.invalid:{port}/hook", f"https://127.0.0.1:{port}/"):
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                _post(url, ["127.0.0.1"])
        assert len(endpoint.hosts) == 1
    finally:
        endpoint.close()


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for the DNS name ``name`` (and no IP address)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


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
