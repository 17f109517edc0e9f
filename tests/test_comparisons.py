"""Comparisons (two real models on the same input, rows side by side, agreement, picks),
the price table behind every batch's ``cost``, and the comparison page in chromium."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, expect, sync_playwright

from batch_server.models import prices
from conftest import Cluster, chat_line, jsonl, submit, upload, wait_for

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

SMOL = "smollm2-135m-instruct"
GEMMA = "gemma-3-270m"
CHROMIUM = Path("/usr/bin/chromium")
QUESTIONS = [
    "What is 2 + 2?",
    "Name a colour.",
    "Say hello.",
    "What is the capital of France?",
    "Name an animal.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("comparisons"), {"unit_size": 8})
    yield c
    c.close()


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


def wait_comparison(server: Cluster, cid: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        c = ok(server.http.get(f"/v1/comparisons/{cid}"))
        if c["status"] != "in_progress":
            return c
        time.sleep(0.5)
    raise AssertionError(f"comparison {cid} still running: {c}")


def all_rows(server: Cluster, cid: str, **params: Any) -> list[dict[str, Any]]:
    """Every row, page by page (a small page size, to test the paging)."""
    out: list[dict[str, Any]] = []
    after = -1
    while True:
        page = ok(
            server.http.get(
                f"/v1/comparisons/{cid}/rows", params={"after": after, "limit": 7, **params}
            )
        )
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["next_after"]


@pytest.fixture(scope="module")
def chat(server: Cluster) -> dict[str, Any]:
    """A finished comparison of the two models on 20 chat requests."""
    lines = [
        chat_line(f"q{i}", QUESTIONS[i % len(QUESTIONS)] + f" ({i})", max_tokens=8 + i % 5)
        for i in range(20)
    ]
    file_id = upload(server.client, jsonl(lines))
    started = time.time()
    created = ok(
        server.http.post(
            "/v1/comparisons",
            json={"input_file_id": file_id, "models": [SMOL, GEMMA], "metadata": {"run": "t"}},
        )
    )
    assert created["object"] == "comparison" and created["models"] == [SMOL, GEMMA]
    assert created["agreement"] is None
    done = wait_comparison(server, created["id"])
    done["seconds"] = time.time() - started
    return done


def test_comparison_of_two_models_completes(server: Cluster, chat: dict[str, Any]) -> None:
    assert chat["status"] == "completed", chat
    assert [r["model"] for r in chat["runs"]] == [SMOL, GEMMA]
    table = prices.build()
    for run in chat["runs"]:
        batch = server.client.batches.retrieve(run["batch_id"])
        assert batch.status == "completed" and batch.model == run["model"]
        assert run["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
        assert run["tokens"]["output_tokens"] > 0 and run["tokens"]["input_tokens"] > 0
        assert run["throughput"]["requests_per_second"] > 0
        assert run["throughput"]["output_tokens_per_second"] > 0
        assert run["throughput"]["engine_seconds"] > 0
        ref = run["cost"]["reference"]
        assert ref["reference"] == "gpt-4o-mini" and ref["table_date"] == table.date
        expected = table.prices["gpt-4o-mini"].cost(
            run["tokens"]["input_tokens"], run["tokens"]["output_tokens"]
        )
        assert ref["estimated"] == pytest.approx(expected)
        assert run["cost"]["own"] is None  # the table has no price for a local model
        # every batch's own cost field: its tokens at the reference price
        cost = batch.model_extra["cost"]
        assert cost["reference"] == "gpt-4o-mini" and cost["currency"] == "USD"
        assert cost["input_per_1m"] == 0.075 and cost["output_per_1m"] == 0.30
        assert cost["estimated"] == pytest.approx(
            (batch.usage.input_tokens * 0.075 + batch.usage.output_tokens * 0.30) / 1e6
        )
    assert chat["prices"]["date"] == table.date and "OpenAI" in chat["prices"]["source"]
    listed = ok(server.http.get("/v1/comparisons"))["data"]
    assert chat["id"] in [c["id"] for c in listed]


def test_rows_side_by_side_and_agreement(server: Cluster, chat: dict[str, Any]) -> None:
    rows = all_rows(server, chat["id"])
    assert [r["custom_id"] for r in rows] == [f"q{i}" for i in range(20)]
    assert [r["index"] for r in rows] == list(range(20))
    for r in rows:
        assert r["prompt"].startswith(QUESTIONS[r["index"] % len(QUESTIONS)])
        assert [a["model"] for a in r["answers"]] == [SMOL, GEMMA]
        assert all(a["done"] and a["error"] is None and a["text"] is not None for a in r["answers"])
    # the agreement figures, computed here from the rows
    same = [r["answers"][0]["text"].strip() == r["answers"][1]["text"].strip() for r in rows]
    assert [r["agree"] for r in rows] == same
    agreement = chat["agreement"]
    assert agreement["requests"] == 20
    assert agreement["exact_match"] == pytest.approx(sum(same) / 20)
    assert agreement["pairwise"] == [
        {"models": [SMOL, GEMMA], "exact_match": pytest.approx(sum(same) / 20)}
    ]
    # a 135M and a 270M base model answer differently at least sometimes
    assert not all(same)
    disagree = all_rows(server, chat["id"], disagree="true")
    assert [r["custom_id"] for r in disagree] == [r["custom_id"] for r in rows if not r["agree"]]


def test_json_outputs_agree_per_field(server: Cluster) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "yn", "schema": schema, "strict": True}}
    questions = ["Is water wet?", "Is fire cold?", "Is the sky blue?", "Do fish fly?"]
    lines = [
        chat_line(f"j{i}", q + " Answer yes or no in JSON.", max_tokens=16, response_format=fmt)
        for i, q in enumerate(questions)
    ]
    file_id = upload(server.client, jsonl(lines))
    cid = ok(
        server.http.post(
            "/v1/comparisons", json={"input_file_id": file_id, "models": ["smollm2", GEMMA]}
        )
    )["id"]
    done = wait_comparison(server, cid)
    assert done["status"] == "completed", done
    rows = all_rows(server, cid)
    answers = [[a["text"] for a in r["answers"]] for r in rows]
    fields = done["agreement"]["json_fields"]
    assert fields is not None and fields["requests"] == 4, answers
    import json

    same = sum(json.loads(a)["answer"] == json.loads(b)["answer"] for a, b in answers)
    assert fields["fields"] == {"answer": pytest.approx(same / 4)}


def test_picks_tie_and_undo(server: Cluster, chat: dict[str, Any]) -> None:
    cid = chat["id"]
    url = f"/v1/comparisons/{cid}/picks"
    first = ok(server.http.put(f"{url}/q0", json={"model": SMOL}))
    assert first["object"] == "comparison.pick" and first["model"] == SMOL
    assert first["rater"] is None and first["comparison_id"] == cid  # keys are off
    ok(server.http.put(f"{url}/q1", json={"model": "smollm2"}))  # an alias
    ok(server.http.put(f"{url}/q1", json={"model": GEMMA}))  # changed
    assert ok(server.http.put(f"{url}/q2", json={"model": None}))["model"] is None  # a tie
    page = ok(server.http.get(f"/v1/comparisons/{cid}/rows", params={"limit": 4}))
    picks = {r["custom_id"]: r["pick"] and r["pick"]["model"] for r in page["data"]}
    assert picks == {"q0": SMOL, "q1": GEMMA, "q2": None, "q3": None}
    assert page["data"][2]["pick"] is not None and page["data"][3]["pick"] is None
    counts = ok(server.http.get(f"/v1/comparisons/{cid}"))["picks"]
    assert counts == {"total": 3, "ties": 1, "by_model": {SMOL: 1, GEMMA: 1}}
    # undo
    assert ok(server.http.delete(f"{url}/q2"))["deleted"] is True
    assert ok(server.http.delete(f"{url}/q2"))["deleted"] is False
    assert ok(server.http.get(f"/v1/comparisons/{cid}"))["picks"]["total"] == 2
    # a model that is not in the comparison, a request that is not in its input
    bad = server.http.put(f"{url}/q3", json={"model": "smollm2-135m-instruct-vllm"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "model"
    missing = server.http.put(f"{url}/nope", json={"model": SMOL})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    for extra in ({}, {"model": SMOL, "x": 1}):
        assert server.http.put(f"{url}/q3", json=extra).status_code == 400


def test_picks_export_as_preference_jsonl(server: Cluster, chat: dict[str, Any]) -> None:
    """The picks so far (q0: SmolLM2, q1: Gemma) become OpenAI preference fine-tuning
    lines: the request's messages, the picked answer preferred over the other."""
    cid = chat["id"]
    rows = {r["custom_id"]: r for r in all_rows(server, cid)}
    exported = ok(server.http.post(f"/v1/comparisons/{cid}/exports", json={}))
    assert exported["object"] == "comparison.export" and exported["purpose"] == "fine-tune"
    differing = [c for c in ("q0", "q1") if not rows[c]["agree"]]
    assert exported["count"] == len(differing) and exported["skipped"] == 2 - len(differing)
    lines = [
        json.loads(x) for x in server.client.files.content(exported["file_id"]).text.splitlines()
    ]
    assert len(lines) == exported["count"]
    for line, custom_id in zip(lines, differing, strict=True):
        answers = {a["model"]: a["text"] for a in rows[custom_id]["answers"]}
        winner = SMOL if custom_id == "q0" else GEMMA
        loser = GEMMA if winner == SMOL else SMOL
        assert line["input"]["messages"][-1]["role"] == "user"
        assert rows[custom_id]["prompt"][:20] in line["input"]["messages"][-1]["content"]
        assert line["preferred_output"] == [{"role": "assistant", "content": answers[winner]}]
        assert line["non_preferred_output"] == [{"role": "assistant", "content": answers[loser]}]
    bad = server.http.post(f"/v1/comparisons/{cid}/exports", json={"format": "csv"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "format"


def test_comparison_from_an_existing_batch(server: Cluster) -> None:
    lines = [chat_line(f"b{i}", QUESTIONS[i], max_tokens=8) for i in range(3)]
    batch = submit(server.client, lines)
    c = ok(
        server.http.post("/v1/comparisons", json={"batch_id": batch.id, "models": [GEMMA, SMOL]})
    )
    assert c["input_file_id"] == batch.input_file_id
    assert c["endpoint"] == "/v1/chat/completions" and c["models"] == [GEMMA, SMOL]
    done = wait_comparison(server, c["id"])
    assert done["status"] == "completed"
    rows = all_rows(server, c["id"])
    assert [r["custom_id"] for r in rows] == ["b0", "b1", "b2"]
    assert all(a["done"] for r in rows for a in r["answers"])
    wait_for(server.client, batch.id)


def test_bad_input_in_openais_shape(server: Cluster) -> None:
    file_id = upload(server.client, jsonl([chat_line("x", "Hi")]))
    cases = [
        ({"input_file_id": file_id, "models": [SMOL]}, 400, "models", "invalid_value"),
        ({"input_file_id": file_id, "models": [SMOL, "no-such-model"]}, 404, "models", "not_found"),
        ({"input_file_id": file_id, "models": [SMOL, "smollm2"]}, 400, "models", "duplicate_model"),
        ({"input_file_id": "file-missing", "models": [SMOL, GEMMA]}, 404, "file_id", "not_found"),
        ({"batch_id": "batch_missing", "models": [SMOL, GEMMA]}, 404, "batch_id", "not_found"),
        ({"models": [SMOL, GEMMA]}, 400, "input_file_id", "invalid_value"),
        ({"input_file_id": file_id}, 400, "models", "missing_required_parameter"),
        (
            {"input_file_id": file_id, "models": [SMOL, GEMMA], "completion_window": "1y"},
            400,
            "completion_window",
            "invalid_value",
        ),
    ]
    for body, status, param, code in cases:
        r = server.http.post("/v1/comparisons", json=body)
        assert r.status_code == status, (body, r.text)
        error = r.json()["error"]
        assert (error["param"], error["code"]) == (param, code), (body, error)
        assert error["type"] == "invalid_request_error" and error["message"]
    assert server.http.get("/v1/comparisons/cmp_nope").status_code == 404
    assert server.http.get("/v1/comparisons/cmp_nope/rows").status_code == 404
    assert server.http.get("/v1/comparisons", params={"limit": 0}).status_code == 400


def test_comparison_page_in_chromium(server: Cluster, chat: dict[str, Any]) -> None:
    cid = chat["id"]
    disagree = [r["custom_id"] for r in all_rows(server, cid) if not r["agree"]]
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_context(
            base_url=server.url, viewport={"width": 1280, "height": 900}
        ).new_page()

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                errors.append(f"{page.url}: {msg.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))

        page.goto("/ui")
        page.get_by_role("link", name="Compare").click()
        expect(page.locator("#comparisons-table")).to_contain_text(cid[:20])
        page.locator(f'a[href="/ui/comparisons/{cid}"]').click()

        rows = page.locator("#rows-table tbody tr[data-index]")
        expect(rows).to_have_count(20)
        expect(page.locator("#rows-table thead")).to_contain_text(SMOL)
        expect(page.locator("#rows-table thead")).to_contain_text(GEMMA)
        expect(page.locator("#runs-table")).to_contain_text("completed")
        expect(page.locator("#agreement")).to_contain_text("%")
        # differences marked: second-model cells that differ from the first, with words marked
        expect(page.locator("td.answer.differs")).to_have_count(len(disagree))
        assert page.locator("td.answer.differs mark").count() > 0
        expect(page.locator("#pick-progress")).to_have_text("picked 2 of 20")  # from the API test
        page.screenshot(path=str(ARTIFACTS / "comparison.png"), full_page=True)

        # keyboard only: the 4th row (q3) gets model 2, the 5th (q4) a tie, then undo it
        for key in ("j", "j", "j", "j"):
            page.keyboard.press(key)
        expect(page.locator("tr.current")).to_have_attribute("data-custom-id", "q3")
        page.keyboard.press("2")
        expect(page.locator('tr[data-custom-id="q3"] td.pick')).to_have_text(GEMMA)
        expect(page.locator("tr.current")).to_have_attribute("data-custom-id", "q4")
        page.keyboard.press("0")
        expect(page.locator('tr[data-custom-id="q4"] td.pick')).to_have_text("tie")
        expect(page.locator("#pick-progress")).to_have_text("picked 4 of 20")
        page.keyboard.press("k")
        page.keyboard.press("u")
        expect(page.locator('tr[data-custom-id="q4"] td.pick')).to_have_text("–")
        expect(page.locator("#pick-progress")).to_have_text("picked 3 of 20")
        page.keyboard.press("ArrowUp")
        page.keyboard.press("1")
        expect(page.locator('tr[data-custom-id="q3"] td.pick')).to_have_text(SMOL)

        page_rows = ok(server.http.get(f"/v1/comparisons/{cid}/rows", params={"limit": 5}))["data"]
        picks = {r["custom_id"]: r["pick"] for r in page_rows}
        assert picks["q3"]["model"] == SMOL and picks["q4"] is None

        # the disagree filter
        page.get_by_role("link", name="Models disagree").click()
        expect(rows).to_have_count(len(disagree))
        for cid_ in disagree[:5]:
            expect(page.locator(f'tr[data-custom-id="{cid_}"]')).to_have_attribute(
                "data-agree", "false"
            )

        # the batch page shows what its tokens would have cost, next to the engine time,
        # and links to the form that starts a comparison on its input
        small = submit(server.client, [chat_line("s0", "Hi", max_tokens=8)])
        page.goto(f"/ui/batches/{small.id}")
        expect(page.locator("#batch-cost")).to_contain_text("gpt-4o-mini")
        page.get_by_role("link", name="start a comparison on this input").click()
        expect(page.locator("#c-source")).to_have_value(small.id)
        page.get_by_label(SMOL, exact=True).check()
        page.get_by_role("button", name="Start comparison").click()
        expect(page.locator("#compare-error")).to_contain_text("2 to 8 models")
        page.get_by_label(GEMMA, exact=True).check()
        page.get_by_role("button", name="Start comparison").click()
        page.wait_for_url(re.compile(r"/ui/comparisons/cmp_"))
        expect(page.locator("#rows-table tbody tr[data-index]")).to_have_count(1)
        started = ok(server.http.get(f"/v1/comparisons/{page.url.rsplit('/', 1)[1]}"))
        assert set(started["models"]) == {SMOL, GEMMA}  # in the registry's order
        assert started["input_file_id"] == small.input_file_id
        browser.close()
    assert errors == [], errors


def client_cli(server: Cluster, *args: str) -> str:
    """``batch-server ARGS --url`` against the server (a client command: no config)."""
    done = subprocess.run(
        [sys.executable, "-m", "batch_server", *args, "--url", server.url],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_compare_from_the_cli(server: Cluster, chat: dict[str, Any], tmp_path: Path) -> None:
    """`compare create FILE -m A -m B --wait` runs and prints the runs side by side; list,
    show and export see it."""
    path = tmp_path / "small.jsonl"
    path.write_bytes(jsonl([chat_line(f"c{i}", QUESTIONS[i], max_tokens=6) for i in range(2)]))
    shown = client_cli(server, "compare", "create", str(path), "-m", SMOL, "-m", GEMMA, "--wait")
    assert "agreement over 2 requests" in shown, shown
    made = json.loads(client_cli(server, "compare", "list", "--json"))[0]
    assert made["models"] == [SMOL, GEMMA] and made["status"] == "completed"
    detail = json.loads(client_cli(server, "compare", "show", made["id"], "--json"))
    assert detail["agreement"]["requests"] == 2
    assert [r["request_counts"]["completed"] for r in detail["runs"]] == [2, 2]
    # the picks of the module's comparison, as preference JSONL downloaded
    differing = [r["custom_id"] for r in all_rows(server, chat["id"]) if not r["agree"]]
    assert differing, "the two models answered everything alike"
    ok(server.http.put(f"/v1/comparisons/{chat['id']}/picks/{differing[-1]}", json={"model": SMOL}))
    out = tmp_path / "prefs.jsonl"
    file_id = client_cli(server, "compare", "export", chat["id"], "--out", str(out)).strip()
    assert file_id.startswith("file-")
    assert out.read_bytes() == server.client.files.content(file_id).content


def test_another_key_cannot_see_a_comparison(server: Cluster) -> None:
    """Last in the module: it turns API keys on."""
    tokens = {
        name: server.cli("keys", "create", name).strip().splitlines()[-1]
        for name in ("alice", "bob")
    }
    http = {
        name: httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {t}"}, timeout=60
        )
        for name, t in tokens.items()
    }
    files = http["alice"].post(
        "/v1/files",
        files={"file": ("in.jsonl", jsonl([chat_line("a0", "Hi", max_tokens=8)]))},
        data={"purpose": "batch"},
    )
    file_id = ok(files)["id"]
    # bob cannot use alice's file
    r = http["bob"].post(
        "/v1/comparisons", json={"input_file_id": file_id, "models": [SMOL, GEMMA]}
    )
    assert r.status_code == 404
    c = ok(
        http["alice"].post(
            "/v1/comparisons", json={"input_file_id": file_id, "models": [SMOL, GEMMA]}
        )
    )
    cid = c["id"]
    for run in c["runs"]:
        assert http["bob"].get(f"/v1/batches/{run['batch_id']}").status_code == 404
        assert http["alice"].get(f"/v1/batches/{run['batch_id']}").status_code == 200
    assert http["bob"].get(f"/v1/comparisons/{cid}").status_code == 404
    assert http["bob"].get(f"/v1/comparisons/{cid}/rows").status_code == 404
    assert (
        http["bob"].put(f"/v1/comparisons/{cid}/picks/a0", json={"model": SMOL}).status_code == 404
    )
    assert http["bob"].delete(f"/v1/comparisons/{cid}/picks/a0").status_code == 404
    assert cid not in [x["id"] for x in ok(http["bob"].get("/v1/comparisons"))["data"]]
    assert cid in [x["id"] for x in ok(http["alice"].get("/v1/comparisons"))["data"]]
    pick = ok(http["alice"].put(f"/v1/comparisons/{cid}/picks/a0", json={"model": GEMMA}))
    assert pick["rater"] == "alice"
    for client in http.values():
        client.close()


def test_price_table_overrides_and_reference() -> None:
    table = prices.build({"my-model": prices.Price(0.5, 1.5)}, reference="gpt-4.1-mini")
    assert table.reference == "gpt-4.1-mini" and table.date == "2026-12-07"
    assert table.estimate(1_000_000, 2_000_000) == {
        "reference": "gpt-4.1-mini",
        "input_per_1m": 0.2,
        "output_per_1m": 0.8,
        "currency": "USD",
        "estimated": pytest.approx(1.8),
        "table_date": "2026-12-07",
    }
    assert table.estimate(2_000_000, 0, name="my-model")["estimated"] == 1.0
    assert table.estimate(1, 1, name="unknown") is None
    assert "my-model" in table.source
    with pytest.raises(ValueError, match="not in the price table"):
        prices.build(reference="gpt-9")


def test_rows_join_running_results_and_finished_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row stream on a real database and file store: one model's batch still running
    (answers in the results table, read a chunk at a time), the other finalized (answers in
    its output and error files); requests not answered yet are gaps, not shifts."""
    import json

    from batch_server.config import Settings
    from batch_server.db.session import Database
    from batch_server.db.tables import BatchRow, ResultRow
    from batch_server.models import comparison_rows
    from batch_server.storage import make_store

    monkeypatch.setattr(comparison_rows, "CHUNK", 2)
    settings = Settings(data_dir=tmp_path, default_model=None)
    db = Database(settings.effective_database_url)
    db.migrate()
    store = make_store(settings)

    def put(key: str, lines: list[dict[str, Any]]) -> None:
        with store.writer(key) as w:
            w.write(jsonl(lines))

    def answer(custom_id: str, text: str) -> dict[str, Any]:
        body = {"object": "chat.completion", "choices": [{"message": {"content": text}}]}
        return {"id": "x", "custom_id": custom_id, "response": {"status_code": 200, "body": body}}

    failed = {
        "id": "x",
        "custom_id": "r2",
        "response": None,
        "error": {"code": "e", "message": "boom"},
    }
    put("input", [chat_line(f"r{i}", f"question {i}") for i in range(6)])
    put("out", [answer(f"r{i}", f"A{i}") for i in (0, 1, 3, 4, 5)])
    put("err", [failed])
    batch = dict(endpoint="/v1/chat/completions", input_file_id="input", completion_window="24h")
    with db.write() as s:
        s.add(
            BatchRow(
                id="b_done",
                status="completed",
                output_file_id="out",
                error_file_id="err",
                created_at=0,
                expires_at=1,
                **batch,
            )
        )
        s.add(BatchRow(id="b_live", status="in_progress", created_at=0, expires_at=1, **batch))
        for i, text in ((0, "A0"), (1, "B1"), (3, "A3 "), (5, "B5")):  # 2 and 4 not done yet
            s.add(
                ResultRow(
                    batch_id="b_live",
                    request_index=i,
                    is_error=False,
                    payload=json.dumps(answer(f"r{i}", text)),
                )
            )
    with db.read() as s:
        batches = [s.get(BatchRow, 1), s.get(BatchRow, 2)]
    rows = list(comparison_rows.iter_rows(db, store, "input", batches))
    seen = [(r.custom_id, [a and (a.text or a.error) for a in r.answers], r.agree) for r in rows]
    assert seen == [
        ("r0", ["A0", "A0"], True),
        ("r1", ["A1", "B1"], False),
        ("r2", ["boom", None], None),
        ("r3", ["A3", "A3 "], True),
        ("r4", ["A4", None], None),
        ("r5", ["A5", "B5"], False),
    ]
    assert rows[2].prompt == "question 2"
    later = list(comparison_rows.iter_rows(db, store, "input", batches, after=3))
    assert [r.custom_id for r in later] == ["r4", "r5"] and later[1].answers[1].text == "B5"
    counter = comparison_rows.AgreementCounter(["a", "b"])
    for r in rows:
        counter.add(r)
    assert counter.result()["requests"] == 4 and counter.result()["exact_match"] == 0.5
