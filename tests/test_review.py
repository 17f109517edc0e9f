"""The review workbench: ``GET /v1/batches/{id}/review`` and the keyboard-driven page
``/ui/batches/{id}/review`` in a real chromium, on a real batch of the real model. Every
request is reviewed with the keyboard only (no clicks): golden, wrong, skip, ratings, a
note, and one answer fixed through the editor; the annotation API then holds exactly
those verdicts. Screenshots go to test-artifacts/review-*.png; any console error fails."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from conftest import ROOT, Cluster, chat_line, jsonl, wait_for

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"
COLOUR = {
    "type": "json_schema",
    "json_schema": {
        "name": "colour",
        "schema": {
            "type": "object",
            "properties": {"colour": {"enum": ["red", "green", "blue"]}},
            "required": ["colour"],
        },
    },
}
WITH_LOGPROBS = {"q0", "q3", "q6", "q8"}
FIXED = "Blue, the colour of a clear sky."


@dataclass
class Reviewed:
    cluster: Cluster
    token: str  # the reviewer's (admin) key
    api: httpx.Client  # as the reviewer
    bob: httpx.Client  # another, non-admin key
    batch_id: str


def _client(cluster: Cluster, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=cluster.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def _lines() -> list[dict]:
    lines = []
    for i in range(10):
        extra: dict = {"max_tokens": 12}
        if f"q{i}" in WITH_LOGPROBS:
            extra["logprobs"] = True
        if i in (1, 7):  # answers that are JSON: shown as a tree
            extra = {"max_tokens": 16, "response_format": COLOUR}
        markup = " <b>not bold</b>" if i == 9 else ""  # shown as text, never as HTML
        lines.append(chat_line(f"q{i}", f"Name a colour and say why, {i}.{markup}", **extra))
    lines.append(chat_line("too-hot", "Hi", temperature=9))  # fails when it runs
    return lines


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reviewed]:
    cluster = Cluster(tmp_path_factory.mktemp("review"), {"unit_size": 4})
    token = cluster.cli("keys", "create", "reviewer", "--admin").strip().splitlines()[-1]
    bob_token = cluster.cli("keys", "create", "bob").strip().splitlines()[-1]
    sdk = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=token, max_retries=0)
    file_id = sdk.files.create(file=("in.jsonl", jsonl(_lines())), purpose="batch").id
    batch = sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert wait_for(sdk, batch.id, timeout=240).status == "completed"
    api, bob = _client(cluster, token), _client(cluster, bob_token)
    yield Reviewed(cluster, token, api, bob, batch.id)
    api.close()
    bob.close()
    cluster.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, reviewed: Reviewed) -> Iterator[Page]:
    """A logged-in page (the login's cookie) that fails the test on any console error."""
    context = browser.new_context(
        base_url=reviewed.cluster.url, viewport={"width": 1280, "height": 900}
    )
    context.add_cookies(
        [{"name": "batch_server_key", "value": reviewed.token, "url": reviewed.cluster.url}]
    )
    pg = context.new_page()
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(f"{pg.url}: {msg.text}")

    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: errors.append(f"{pg.url}: {exc}"))
    yield pg
    context.close()
    assert errors == [], errors


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"review-{name}.png"), full_page=True)


def review(api: httpx.Client, batch_id: str, **params: object) -> dict:
    r = api.get(f"/v1/batches/{batch_id}/review", params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    return r.json()


def test_review_api_before_any_verdict(reviewed: Reviewed) -> None:
    everything = review(reviewed.api, reviewed.batch_id)
    assert everything["counts"] == {
        "total": 11,
        "reviewed": 0,
        "labels": {"golden": 0, "fixed": 0, "wrong": 0, "skip": 0},
        "failed": 1,
        "matching": 11,
    }
    items = {i["custom_id"]: i for i in everything["data"]}
    assert [i["index"] for i in everything["data"]] == list(range(11))
    q0 = items["q0"]
    assert q0["prompt"] == [{"role": "user", "content": "Name a colour and say why, 0."}]
    assert isinstance(q0["answer_text"], str) and q0["answer_text"]
    assert q0["annotation"] is None and q0["disagreement"] is None
    for cid, item in items.items():  # confidence where logprobs were asked for, only there
        assert (item["confidence"] is not None) == (cid in WITH_LOGPROBS), cid
        if item["confidence"] is not None:
            assert item["confidence"] <= 0
    assert items["too-hot"]["error"] and items["too-hot"]["answer"] is None
    for cid in ("q1", "q7"):
        if items[cid]["answer_is_json"]:
            assert items[cid]["answer"]["colour"] in ("red", "green", "blue")

    failed = review(reviewed.api, reviewed.batch_id, filter="failed")
    assert [i["custom_id"] for i in failed["data"]] == ["too-hot"]
    page = review(reviewed.api, reviewed.batch_id, offset=8, limit=2)
    assert [i["index"] for i in page["data"]] == [8, 9] and page["has_more"] is True

    # least confident first: ascending mean logprob, requests without logprobs last
    ordered = review(reviewed.api, reviewed.batch_id, order="least_confident")["data"]
    confidences = [i["confidence"] for i in ordered]
    known = [c for c in confidences if c is not None]
    assert known == sorted(known) and len(known) == len(WITH_LOGPROBS)
    assert confidences[len(known) :] == [None] * (11 - len(known))
    lowest = min(
        items.values(), key=lambda i: math.inf if i["confidence"] is None else i["confidence"]
    )
    assert ordered[0]["custom_id"] == lowest["custom_id"]


def test_review_api_tenancy_and_bad_parameters(reviewed: Reviewed) -> None:
    r = reviewed.bob.get(f"/v1/batches/{reviewed.batch_id}/review")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"  # not bob's
    assert reviewed.api.get("/v1/batches/batch_nope/review").status_code == 404
    for params, param in (({"filter": "great"}, "filter"), ({"order": "random"}, "order")):
        r = reviewed.api.get(f"/v1/batches/{reviewed.batch_id}/review", params=params)
        assert r.status_code == 400 and r.json()["error"]["param"] == param
    r = reviewed.api.get(f"/v1/batches/{reviewed.batch_id}/review", params={"limit": 101})
    assert r.status_code == 400


def test_disagreement_between_the_models_of_a_comparison(reviewed: Reviewed) -> None:
    """Two batches linked as a comparison (the row another module writes, inserted here):
    a request is flagged where the other batch answered it differently."""
    sdk = openai.OpenAI(base_url=f"{reviewed.cluster.url}/v1", api_key=reviewed.token)
    ids = []
    for variant in ("a", "b"):
        lines = [
            chat_line(
                f"c{i}", f"Say a word about {'cats' if i < 2 or variant == 'a' else 'ships'}."
            )
            for i in range(4)
        ]
        file_id = sdk.files.create(file=("c.jsonl", jsonl(lines)), purpose="batch").id
        batch = sdk.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert wait_for(sdk, batch.id, timeout=240).status == "completed"
        ids.append(batch.id)
    with sqlite3.connect(reviewed.cluster.tmp / "data" / "batch_server.db") as db:
        db.execute(
            "INSERT INTO comparisons (id, owner, created_at, input_file_id, endpoint, batches)"
            " VALUES ('cmp_test', NULL, 0, 'file-x', '/v1/chat/completions', ?)",
            (json.dumps({"model-a": ids[0], "model-b": ids[1]}),),
        )
    mine = review(reviewed.api, ids[0])["data"]
    theirs = {i["custom_id"]: i["answer_text"] for i in review(reviewed.api, ids[1])["data"]}
    flags = {i["custom_id"]: i["disagreement"] for i in mine}
    assert flags == {i["custom_id"]: i["answer_text"] != theirs[i["custom_id"]] for i in mine}
    assert flags["c2"] or flags["c3"]  # another prompt, another answer
    # (the same prompt can be answered differently too: batched decoding is not bit-exact)
    # without logprobs, least confident first puts the disagreements first
    ordered = review(reviewed.api, ids[0], order="least_confident")["data"]
    disagreeing = [i["disagreement"] for i in ordered]
    assert disagreeing == sorted(disagreeing, reverse=True)


def test_review_everything_with_the_keyboard(page: Page, reviewed: Reviewed) -> None:
    b = reviewed.batch_id
    page.goto(f"/ui/batches/{b}")  # the batch page links to the review
    expect(page.get_by_role("link", name="Review answers")).to_have_attribute(
        "href", f"/ui/batches/{b}/review"
    )
    page.goto(f"/ui/batches/{b}/review")
    progress = page.locator("#review-progress")
    expect(progress).to_have_text("0 of 11 reviewed")
    where = page.locator("#review-position")
    expect(where).to_contain_text("Request 1 of 11 · q0")
    expect(page.locator("#review-prompt")).to_contain_text("Name a colour and say why, 0.")
    expect(page.locator("#review-meta")).to_contain_text("mean logprob")
    shot(page, "request")

    keys = page.keyboard

    def step(*presses: str, then: str) -> None:
        for key in presses:
            keys.press(key)
        expect(where).to_contain_text(then)

    step("g", then="Request 2 of 11 · q1")
    if page.locator("#review-answer table.j-object").count():
        shot(page, "json-answer")  # a JSON answer as a table, not a wall of text
    step("2", "w", then="Request 3 of 11 · q2")  # rated 2, wrong
    step("s", then="Request 4 of 11 · q3")
    step("5", "g", then="Request 5 of 11 · q4")

    # fix q4: the editor opens with the answer, Ctrl+Enter saves it as fixed
    keys.press("f")
    editor = page.locator("#fix-text")
    expect(editor).to_be_focused()
    assert editor.input_value() != ""  # pre-filled with the model's answer
    keys.press("Control+a")
    keys.type(FIXED)
    shot(page, "fix-editor")
    step("Control+Enter", then="Request 6 of 11 · q5")

    keys.press("n")  # a note stays on the request
    expect(page.locator("#note-text")).to_be_focused()
    keys.type("check the spelling")
    keys.press("Enter")
    expect(page.locator("#review-verdict")).to_contain_text("Note: check the spelling")
    step("g", then="Request 7 of 11 · q6")
    step("ArrowRight", then="Request 8 of 11 · q7")
    step("ArrowLeft", then="Request 7 of 11 · q6")
    step("k", then="Request 6 of 11 · q5")
    expect(page.locator("#review-verdict [data-label]")).to_have_text("Golden")
    expect(page.get_by_role("button", name="Golden")).to_have_attribute("aria-pressed", "true")
    step("j", then="Request 7 of 11 · q6")
    step("g", then="Request 8 of 11 · q7")
    step("w", then="Request 9 of 11 · q8")
    step("3", "s", then="Request 10 of 11 · q9")
    expect(page.locator("#review-prompt")).to_contain_text("9. <b>not bold</b>")
    expect(page.locator("#review-prompt b")).to_have_count(0)
    step("g", then="Request 11 of 11 · too-hot")
    expect(page.locator("#review-answer .error")).to_be_visible()  # a failed request
    keys.press("w")
    expect(page.locator("#review-empty")).to_contain_text("End of the list")
    expect(progress).to_have_text("11 of 11 reviewed")
    expect(page.locator("#review-labels")).to_have_text("Golden 5 · Fixed 1 · Wrong 3 · Skipped 2")
    shot(page, "done")

    keys.press("?")  # the help overlay lists the keys
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.get_by_role("dialog")).to_contain_text("Ctrl")
    shot(page, "help")
    keys.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()

    # everything is stored through the annotation API, as the reviewer
    r = reviewed.api.get("/v1/annotations", params={"batch_id": b, "limit": 100})
    stored = {a["custom_id"]: a for a in r.json()["data"]}
    labels = {cid: a["label"] for cid, a in stored.items()}
    assert labels == {
        "q0": "golden",
        "q1": "wrong",
        "q2": "skip",
        "q3": "golden",
        "q4": "fixed",
        "q5": "golden",
        "q6": "golden",
        "q7": "wrong",
        "q8": "skip",
        "q9": "golden",
        "too-hot": "wrong",
    }
    assert stored["q4"]["fixed_answer"] == FIXED
    assert {cid: a["rating"] for cid, a in stored.items() if a["rating"]} == {
        "q1": 2,
        "q3": 5,
        "q8": 3,
    }
    assert stored["q5"]["note"] == "check the spelling"
    assert {a["rater"] for a in stored.values()} == {"reviewer"}
    counts = review(reviewed.api, b)["counts"]
    assert counts["reviewed"] == 11
    assert counts["labels"] == {"golden": 5, "fixed": 1, "wrong": 3, "skip": 2}
    assert review(reviewed.api, b, filter="fixed")["data"][0]["annotation"]["fixed_answer"] == FIXED

    # the unreviewed filter is now empty, on the page and in the API
    assert review(reviewed.api, b, filter="unreviewed")["data"] == []
    page.goto(f"/ui/batches/{b}/review?filter=unreviewed")
    expect(page.locator("#review-empty")).to_have_text("No request matches this filter.")
    expect(page.locator("#review-filter")).to_have_value("unreviewed")

    # least confident first: the page follows the API's order of confidences
    ordered = review(reviewed.api, b, order="least_confident")["data"]
    page.goto(f"/ui/batches/{b}/review?order=least_confident")
    for n, item in enumerate(ordered[:5]):
        expect(where).to_contain_text(f"Request {n + 1} of 11 · {item['custom_id']}")
        if item["confidence"] is not None:
            expect(page.locator("#review-meta")).to_contain_text(f"{item['confidence']:.3f}")
        if n == 0:
            shot(page, "least-confident")
        keys.press("j")


def test_phone_width(page: Page, reviewed: Reviewed) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/ui/batches/{reviewed.batch_id}/review?filter=fixed")
    expect(page.locator("#review-position")).to_contain_text("q4")
    expect(page.locator(".fixed-answer")).to_have_text(FIXED)
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{overflow}px of horizontal overflow at 390px"
    box = page.locator("#review-prompt").bounding_box()
    answer = page.locator("#review-answer").bounding_box()
    assert box and answer and answer["y"] > box["y"]  # stacked, not side by side
    shot(page, "phone")
