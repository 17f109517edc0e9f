"""The dashboard in a real browser: Playwright driving Debian's chromium against a running
server with real batches. Screenshots go to test-artifacts/; any console error fails."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from conftest import ROOT, Cluster, chat_line, jsonl, submit, wait_for

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("dashboard"), {"unit_size": 4})
    yield c
    c.close()


@pytest.fixture
def page(browser: Browser, server: Cluster) -> Iterator[Page]:
    """A page on the server that records console errors and fails the test on any."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
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


def shot(page: Page, name: str, full: bool = True) -> None:
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=full)


def story_lines(prefix: str, n: int, max_tokens: int) -> list[dict]:
    return [
        chat_line(
            f"{prefix}{i}", f"Tell me a story about a {prefix} number {i}.", max_tokens=max_tokens
        )
        for i in range(n)
    ]


def test_pages_with_real_batches(page: Page, server: Cluster) -> None:
    client = server.client
    lines = story_lines("cat", 5, 12) + [chat_line("too-hot", "Hi", temperature=9)]
    done = wait_for(client, submit(client, lines, metadata={"project": "zoo"}).id)
    assert done.status == "completed"
    invalid = wait_for(client, submit(client, ["{broken", chat_line("ok", "Hi")]).id)
    assert invalid.status == "failed"

    page.goto("/ui")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("#status")).to_contain_text("smollm2-135m-instruct")  # loaded model
    expect(page.locator("#throughput-chart svg rect.bar")).to_have_count(60)
    expect(page.locator("#throughput-summary")).to_contain_text("requests")
    shot(page, "overview")

    page.keyboard.press("Tab")  # the first stop is the skip link
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"

    page.get_by_role("link", name="Batches", exact=True).click()
    expect(page.locator("#batches-table")).to_contain_text(done.id[:18])
    expect(page.locator("#batches-table")).to_contain_text("Line 1")  # the failure reason
    page.get_by_label("Search").fill("zoo")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#batches-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("completed")
    shot(page, "batches")

    rows.first.get_by_role("link").click()
    expect(page.get_by_role("heading", name=re.compile("Batch"))).to_contain_text(done.id)
    expect(page.locator("progress")).to_have_attribute("value", "6")
    expect(page.get_by_role("link", name="Output file")).to_have_attribute(
        "href", f"/v1/files/{done.output_file_id}/content"
    )
    expect(page.get_by_role("link", name="Error file")).to_be_visible()
    expect(page.locator("#fail-h + div")).to_contain_text("too-hot")
    expect(page.locator("article.pair")).to_have_count(6)
    expect(page.locator("article.pair").first).to_contain_text("Tell me a story")
    expect(page.locator("article.pair").first.locator(".resp")).to_contain_text("tokens")
    expect(page.locator("table.log")).to_contain_text("status → completed")
    shot(page, "batch")

    page.goto(f"/ui/batches/{invalid.id}")
    expect(page.locator("ol.errors")).to_contain_text("Line 1")
    shot(page, "batch-invalid")

    page.get_by_role("link", name="Models").click()
    table = page.locator("#models-table")
    expect(table).to_contain_text("smollm2-135m-instruct")
    smollm2 = table.locator("tr").filter(has_text="llamacpp").filter(has_text="smollm2")
    expect(smollm2).not_to_contain_text("unknown")
    # measured from the work above; models that have not run say "unknown"
    shot(page, "models")

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.goto(f"/ui/batches/{done.id}")
    shot(page, "batch-phone")


def test_submit_form_and_watch_progress(page: Page, server: Cluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl([chat_line("a", "Hi"), "not json", chat_line("a", "Hi again")]))
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(story_lines("dog", 12, 24)))

    page.goto("/ui/submit")
    page.get_by_label("Requests file").set_input_files(str(bad))
    errors = page.locator("#validation ol.errors li")
    expect(errors).to_have_count(2)
    expect(errors.nth(0)).to_contain_text("Line 2")
    expect(errors.nth(1)).to_contain_text("Line 3")
    shot(page, "submit-errors")

    page.get_by_label("Requests file").set_input_files(str(good))
    expect(page.locator("#validation")).to_contain_text("12 requests, no errors")
    page.get_by_label("Priority").fill("2")
    page.get_by_role("button", name="Submit batch").click()
    page.wait_for_url(re.compile(r"/ui/batches/batch_"))
    batch_id = page.url.rsplit("/", 1)[1]

    bar = page.locator(f'progress[data-progress="{batch_id}"]')
    seen: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline:
        if page.locator(f'[data-status="{batch_id}"]').text_content() == "completed":
            break
        with contextlib.suppress(PlaywrightError):  # the page reloads when the batch ends
            seen.append(int(float(bar.get_attribute("value", timeout=2000) or 0)))
        if len(seen) == 8:
            shot(page, "batch-running")
        time.sleep(0.25)
    expect(page.locator(f'[data-status="{batch_id}"]')).to_have_text("completed")
    assert any(0 < v < 12 for v in seen), seen  # the bar moved through intermediate values
    assert seen == sorted(seen)
    expect(bar).to_have_attribute("value", "12")
    expect(page.get_by_role("link", name="Output file")).to_be_visible()
    assert server.client.batches.retrieve(batch_id).model_extra["priority"] == 2
    shot(page, "batch-completed")


def test_queue_reprioritise_and_cancel(page: Page, server: Cluster) -> None:
    client = server.client
    first = submit(client, story_lines("owl", 20, 64))
    second = submit(client, story_lines("fox", 20, 64))
    third = submit(client, story_lines("elk", 20, 64))

    page.goto("/ui/queue")
    for b in (first, second, third):
        expect(page.locator(f'tr[data-batch="{b.id}"]')).to_be_visible()
    expect(page.locator(f'[data-state="{first.id}"]')).to_have_text("running", timeout=30000)

    # re-prioritise the last batch: it moves ahead of the second
    page.get_by_label(f"Priority of {third.id}").fill("7")
    page.locator(f'[data-priority-form="{third.id}"] button').click()
    expect(page.locator("#queue-rows tr").nth(1)).to_have_attribute("data-batch", third.id)
    expect(page.locator(f'[data-position="{third.id}"]')).to_have_text("2")
    shot(page, "queue")

    page.once("dialog", lambda d: d.accept())
    page.locator(f'[data-cancel="{second.id}"]').click()
    expect(page.locator(f'tr[data-batch="{second.id}"]')).to_have_count(0, timeout=30000)
    assert wait_for(client, second.id).status == "cancelled"
    for b in (first, third):
        page.once("dialog", lambda d: d.accept())
        page.locator(f'[data-cancel="{b.id}"]').click()
        expect(page.locator(f'tr[data-batch="{b.id}"]')).to_have_count(0, timeout=30000)
    expect(page.locator("#queue-rows")).to_contain_text("The queue is empty")
    shot(page, "queue-empty")


def test_login_with_an_admin_key(browser: Browser, tmp_path: Path) -> None:
    """Once keys exist a browser logs in with an admin key (kept in an HttpOnly cookie);
    the pages' actions work with it, and the cookie is refused for cross-site requests."""
    c = Cluster(tmp_path, {"unit_size": 4})
    try:
        root = c.cli("keys", "create", "root", "--admin").strip().splitlines()[-1]
        bob = c.cli("keys", "create", "bob").strip().splitlines()[-1]
        client = openai.OpenAI(base_url=f"{c.url}/v1", api_key=root, max_retries=0)
        batch = submit(client, story_lines("yak", 12, 64))

        context = browser.new_context(base_url=c.url, viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto("/ui/queue")
        expect(pg).to_have_url(re.compile(r"/ui/login\?next=%2Fui%2Fqueue$"))
        expect(pg.get_by_role("heading", name="Log in")).to_be_visible()
        shot(pg, "login")

        pg.get_by_label("Admin API key").fill(bob)
        pg.get_by_role("button", name="Log in").click()
        expect(pg.get_by_role("alert")).to_contain_text("needs an admin API key")
        pg.get_by_label("Admin API key").fill("sk-wrong")
        pg.get_by_role("button", name="Log in").click()
        expect(pg.get_by_role("alert")).to_contain_text("not valid")

        pg.get_by_label("Admin API key").fill(root)
        pg.get_by_role("button", name="Log in").click()
        expect(pg).to_have_url(re.compile(r"/ui/queue$"))
        expect(pg.locator(f'tr[data-batch="{batch.id}"]')).to_be_visible()
        cookie = next(k for k in context.cookies() if k["name"] == "batch_server_key")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

        # the cookie alone does not let another site change anything
        jar = {"batch_server_key": cookie["value"]}
        for headers in ({"Origin": "http://evil.example"}, {}):
            r = httpx.post(f"{c.url}/v1/batches/{batch.id}/cancel", cookies=jar, headers=headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
        assert client.batches.retrieve(batch.id).status in ("validating", "in_progress")
        assert httpx.get(f"{c.url}/v1/queue", cookies=jar).status_code == 200  # reads are fine

        # the dashboard's own cancel button works with the cookie
        pg.once("dialog", lambda d: d.accept())
        pg.locator(f'[data-cancel="{batch.id}"]').click()
        expect(pg.locator(f'tr[data-batch="{batch.id}"]')).to_have_count(0, timeout=30000)
        assert wait_for(client, batch.id).status == "cancelled"

        pg.get_by_role("button", name="Log out").click()
        expect(pg).to_have_url(re.compile(r"/ui/login$"))
        pg.goto("/ui")
        expect(pg).to_have_url(re.compile(r"/ui/login\?next=%2Fui$"))
        assert errors == [], errors
        context.close()
    finally:
        c.close()
