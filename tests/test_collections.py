"""Collections and exports over HTTP, on a real batch of the real model: annotate through
the annotation API, build a frozen version from the golden and fixed answers, export it as
OpenAI fine-tuning JSONL (every line checked against the format, fetched with the SDK),
Parquet (read back with pyarrow), CSV and few-shot examples (token budget, near-duplicate
prompts dropped); a version's export stays byte-identical after the annotations change;
the CLI's export; another key sees nothing; the collection page in chromium."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pyarrow.parquet as pq
import pytest
from playwright.sync_api import ConsoleMessage, expect, sync_playwright

from batch_server.curation.finetune_format import file_errors
from conftest import Cluster, chat_line, jsonl, wait_for

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

FIXED = '{"colour": "blue", "sure": true}'
PROMPTS = [
    "Name a colour of the sea.",  # q/0 golden
    "Which colour is grass?",  # q/1 fixed
    "Say something wrong about apples.",  # q/2 wrong
    "Skip this question about pears.",  # q/3 skip
    "Tell me the colour of the sky at noon please.",  # q/4 golden
    "Tell me the colour of the sky at noon, please!",  # q/5 golden, near-identical to q/4
    "Count from one to three.",  # q/6 golden
    "Nobody reviews this one.",  # q/7 not annotated
]
VERDICTS = {
    "q/0": {"label": "golden", "rating": 5},
    "q/1": {"label": "fixed", "fixed_answer": FIXED, "note": "as JSON"},
    "q/2": {"label": "wrong", "rating": 1},
    "q/3": {"label": "skip"},
    "q/4": {"label": "golden"},
    "q/5": {"label": "golden"},
    "q/6": {"label": "golden", "rating": 4},
}
LEARNED = ("q/0", "q/1", "q/4", "q/5", "q/6")


@dataclass
class Setup:
    cluster: Cluster
    tokens: dict[str, str]
    alice: httpx.Client
    bob: httpx.Client
    batch_id: str
    collection_id: str = ""
    v1_jsonl: bytes = b""


def _client(cluster: Cluster, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=cluster.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    cluster = Cluster(tmp_path_factory.mktemp("collections"), {"unit_size": 4})
    tokens = {
        name: cluster.cli("keys", "create", name, *extra).strip().splitlines()[-1]
        for name, extra in (("alice", ()), ("bob", ()), ("root", ("--admin",)))
    }
    alice, bob = _client(cluster, tokens["alice"]), _client(cluster, tokens["bob"])
    lines = [chat_line(f"q/{i}", p, max_tokens=12) for i, p in enumerate(PROMPTS)]
    lines[0]["body"]["messages"].insert(0, {"role": "system", "content": "Answer briefly."})
    file_id = alice.post(
        "/v1/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}
    ).json()["id"]
    batch = alice.post(
        "/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    ).json()
    sdk = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=tokens["alice"], max_retries=0)
    assert wait_for(sdk, batch["id"]).status == "completed"
    for custom_id, verdict in VERDICTS.items():
        r = alice.put(f"/v1/batches/{batch['id']}/requests/{custom_id}/annotation", json=verdict)
        assert r.status_code == 200, r.text
    yield Setup(cluster, tokens, alice, bob, batch["id"])
    alice.close()
    bob.close()
    cluster.close()


def export(s: Setup, fmt: str, version: int | None = None, **options: object) -> dict:
    r = s.alice.post(
        f"/v1/collections/{s.collection_id}/exports",
        json={"format": fmt, "version": version, "options": options},
    )
    assert r.status_code == 200, r.text
    return r.json()


def content(s: Setup, file_id: str) -> bytes:
    sdk = openai.OpenAI(base_url=f"{s.cluster.url}/v1", api_key=s.tokens["alice"], max_retries=0)
    return sdk.files.content(file_id).read()


def test_build_a_version_and_export_fine_tuning_jsonl(setup: Setup) -> None:
    s = setup
    r = s.alice.post("/v1/collections", json={"name": "golden-colours", "description": "test"})
    assert r.status_code == 200, r.text
    s.collection_id = r.json()["id"]
    assert s.alice.post("/v1/collections", json={"name": "golden-colours"}).status_code == 409
    assert s.alice.post("/v1/collections", json={"name": "bad name!"}).status_code == 400

    rule = {"add": [{"batch_id": s.batch_id, "labels": ["golden", "fixed"]}], "base": "latest"}
    r = s.alice.post(f"/v1/collections/{s.collection_id}/versions", json=rule)
    assert r.status_code == 200, r.text
    v1 = r.json()
    assert v1["version"] == 1 and v1["count"] == 5 and v1["stats"]["added"] == 5

    one = s.alice.get("/v1/collections/golden-colours").json()  # by name too
    assert one["id"] == s.collection_id and one["version"] == 1
    assert [v["version"] for v in one["versions"]] == [1]
    assert one["versions"][0]["rule"]["add"][0]["batch_id"] == s.batch_id
    assert s.alice.get("/v1/collections").json()["data"][0]["id"] == s.collection_id

    seen, after = [], None
    while True:
        params = {"limit": 2, "version": 1, **({"after": after} if after else {})}
        page = s.alice.get(f"/v1/collections/{s.collection_id}/items", params=params).json()
        seen += [i["custom_id"] for i in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == list(LEARNED)  # request order, frozen
    fixed = s.alice.get(f"/v1/collections/{s.collection_id}/items", params={"limit": 5}).json()
    item = next(i["example"] for i in fixed["data"] if i["custom_id"] == "q/1")
    assert item["target"] == FIXED and item["fields"] == {"colour": "blue", "sure": True}
    assert item["answer"] and item["answer"] != FIXED and item["rater"] == "alice"

    done = export(s, "openai-finetune-jsonl")
    assert done["object"] == "collection.export" and done["purpose"] == "fine-tune"
    assert done["count"] == 5 and done["version"] == 1
    data = content(s, done["file_id"])
    s.v1_jsonl = data
    lines = data.decode().splitlines()
    assert file_errors(lines) == []
    rows = [json.loads(x) for x in lines]
    assert len(rows) == 5
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles[-1] == "assistant" and set(roles) <= {"system", "user", "assistant"}
        assert all(isinstance(m["content"], str) for m in row["messages"])
        assert row["messages"][-1]["content"].strip()
    assert rows[0]["messages"][0] == {"role": "system", "content": "Answer briefly."}
    answers = [r["messages"][-1]["content"] for r in rows]
    assert FIXED in answers
    prompts = {r["messages"][-2]["content"] for r in rows}
    assert PROMPTS[2] not in prompts and PROMPTS[3] not in prompts and PROMPTS[7] not in prompts
    # the format check catches what OpenAI's would refuse
    bad = ['{"messages": [{"role": "user", "content": "hi"}]}', '{"messages": []}']
    bad += ['{"messages": [{"role": "bot", "content": "x", "extra": 1}]}', "not json"]
    assert {n for n, _ in file_errors(bad)} == {1, 2, 3, 4}


def test_parquet_and_csv(setup: Setup) -> None:
    s = setup
    done = export(s, "parquet", labels=["golden", "fixed", "wrong"])
    table = pq.read_table(io.BytesIO(content(s, done["file_id"])))
    assert table.num_rows == 5  # the version holds golden and fixed ones only
    names = table.column_names
    for column in ("batch_id", "custom_id", "model", "prompt", "answer", "fixed_answer"):
        assert column in names
    assert {"label", "rating", "note", "rater", "field.colour", "field.sure"} <= set(names)
    rows = table.to_pylist()
    fixed = next(r for r in rows if r["custom_id"] == "q/1")
    assert fixed["fixed_answer"] == FIXED and fixed["field.colour"] == "blue"
    assert fixed["field.sure"] == "true" and fixed["label"] == "fixed"
    assert next(r for r in rows if r["custom_id"] == "q/0")["rating"] == 5
    assert {r["model"] for r in rows} == {"smollm2-135m-instruct"}

    done = export(s, "csv")
    assert done["purpose"] == "user_data" and done["filename"].endswith(".csv")
    read = list(csv.DictReader(io.StringIO(content(s, done["file_id"]).decode())))
    assert [r["custom_id"] for r in read] == list(LEARNED)
    assert next(r for r in read if r["custom_id"] == "q/1")["fixed_answer"] == FIXED
    assert read[0]["prompt"] == PROMPTS[0] and read[0]["field.colour"] == ""


def test_few_shot_with_budget_and_diversity(setup: Setup) -> None:
    s = setup
    everything = export(s, "few-shot-json")
    assert everything["count"] == 5 and everything["token_estimate"] == "ceil(chars/4)"
    diverse = export(s, "few-shot-json", diverse=True)
    chosen = json.loads(content(s, diverse["file_id"]))
    inputs = [c["input"] for c in chosen]
    assert diverse["count"] == 4 and len(chosen) == 4 and diverse["skipped"] == 1
    assert PROMPTS[4] in inputs and PROMPTS[5] not in inputs  # the near-duplicate is dropped
    assert next(c["output"] for c in chosen if c["input"] == PROMPTS[1]) == FIXED

    budget = 40
    small = export(s, "few-shot-prompt", diverse=True, token_budget=budget)
    text = content(s, small["file_id"]).decode()
    assert 1 <= small["count"] < 4 and small["tokens"] <= budget
    assert text.startswith(f"Example 1\nInput: {PROMPTS[0]}\nOutput: ")
    assert len(re.findall(r"^Example \d+$", text, re.MULTILINE)) == small["count"]


def test_versions_are_frozen(setup: Setup) -> None:
    s = setup
    path = f"/v1/batches/{s.batch_id}/requests/q/1/annotation"
    changed = {"label": "fixed", "fixed_answer": "Green, like grass."}
    assert s.alice.put(path, json=changed).status_code == 200
    again = export(s, "openai-finetune-jsonl", version=1)
    assert content(s, again["file_id"]) == s.v1_jsonl  # byte-identical

    rule = {"add": [{"batch_id": s.batch_id}], "remove": [{"batch_id": s.batch_id,
            "custom_ids": ["q/6"]}]}  # fmt: skip
    v2 = s.alice.post(f"/v1/collections/{s.collection_id}/versions", json=rule).json()
    assert v2["version"] == 2 and v2["count"] == 4
    newer = content(s, export(s, "openai-finetune-jsonl")["file_id"])
    assert newer != s.v1_jsonl and b"Green, like grass." in newer and FIXED.encode() not in newer
    assert content(s, export(s, "openai-finetune-jsonl", version=1)["file_id"]) == s.v1_jsonl
    v3 = s.alice.post(
        f"/v1/collections/{s.collection_id}/versions", json={"base": 1, "remove": []}
    ).json()
    assert v3["version"] == 3 and v3["stats"] == {"added": 0, "kept": 5, "removed": 0}
    assert content(s, export(s, "openai-finetune-jsonl", version=3)["file_id"]) == s.v1_jsonl
    missing = s.alice.post(
        f"/v1/collections/{s.collection_id}/exports", json={"format": "csv", "version": 9}
    )
    assert missing.status_code == 404


def test_cli_export(setup: Setup, tmp_path: Path) -> None:
    s = setup
    env = dict(
        os.environ,
        BATCH_SERVER_URL=s.cluster.url,
        BATCH_SERVER_API_KEY=s.tokens["alice"],
        COLUMNS="300",
        NO_COLOR="1",
    )
    out = tmp_path / "v1.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "batch_server", "export", "golden-colours"]
        + ["--format", "openai-finetune-jsonl", "--version", "1", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    file_id, printed = run.stdout.split()
    assert file_id.startswith("file-") and Path(printed) == out
    assert out.read_bytes() == s.v1_jsonl

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "batch_server", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert cli("collections", "create", "cli-set").strip().startswith("coll_")
    assert "cli-set v1: 5 items" in cli("collections", "add", "cli-set", s.batch_id)
    file_id, printed = cli(
        "export", "cli-set", "-f", "few-shot-prompt", "--labels", "golden",
        "--token-budget", "1000", "--diverse",
    ).split()  # fmt: skip
    text = (tmp_path / printed).read_text()
    assert printed == "cli-set-v1.few-shot.txt" and text.count("Example ") == 3
    assert "cli-set" in cli("collections", "list")


def test_another_key_gets_not_found(setup: Setup) -> None:
    s, bob = setup, setup.bob
    c = s.collection_id
    assert bob.get(f"/v1/collections/{c}").status_code == 404
    assert bob.get("/v1/collections/golden-colours").status_code == 404
    assert bob.get(f"/v1/collections/{c}/items").status_code == 404
    assert bob.post(f"/v1/collections/{c}/exports", json={"format": "csv"}).status_code == 404
    assert bob.delete(f"/v1/collections/{c}").status_code == 404
    assert bob.get("/v1/collections").json()["data"] == []
    mine = bob.post("/v1/collections", json={"name": "golden-colours"})
    assert mine.status_code == 200  # names are per key
    steal = {"add": [{"batch_id": s.batch_id}]}
    r = bob.post(f"/v1/collections/{mine.json()['id']}/versions", json=steal)
    assert r.status_code == 404 and r.json()["error"]["param"] == "batch_id"
    exported = export(s, "csv")
    assert bob.get(f"/v1/files/{exported['file_id']}/content").status_code == 404


@pytest.mark.browser
def test_collection_page(setup: Setup) -> None:
    s = setup
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"]
        )
        context = browser.new_context(base_url=s.cluster.url, accept_downloads=True)
        pg = context.new_page()

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                errors.append(f"{pg.url}: {msg.text}")

        pg.on("console", on_console)
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto("/ui/collections")
        pg.get_by_label("Admin API key").fill(s.tokens["root"])
        pg.get_by_role("button", name="Log in").click()
        expect(pg.locator("#collections-table")).to_contain_text("golden-colours")
        pg.get_by_role("link", name="Collections").first.click()
        pg.locator(f'a[href="/ui/collections/{s.collection_id}"]').click()
        expect(pg.get_by_role("heading", name="Collection golden-colours")).to_be_visible()
        expect(pg.locator("#versions-table tbody tr")).to_have_count(3)
        expect(pg.locator("#items-table tbody tr")).to_have_count(5)  # v3 = v1
        pg.get_by_role("button", name="Export csv").click()
        link = pg.get_by_role("link", name=re.compile(r"Download golden-colours-v3\.csv"))
        expect(link).to_be_visible()
        with pg.expect_download() as download:
            link.click()
        saved = Path(download.value.path()).read_text()
        assert saved.splitlines()[0].startswith("batch_id,custom_id,model,prompt")
        pg.screenshot(path=str(ARTIFACTS / "collection.png"), full_page=True)
        context.close()
        browser.close()
    assert errors == [], errors
