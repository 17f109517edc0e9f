"""Plugins (issue 16) on real server and worker processes and the real model: the example
package (plugins/candidate-evaluator, pip-installed by `make test`) is found through its
entry point; a 20-record templated batch runs end to end (fields parsed and stored, shown
in the review page in chromium and in the batch page, filtered in the requests API,
exported by a built-in format and by the plugin's exporter); bad templated lines fail
validation with their line numbers; a broken plugin in ``plugins_dir`` (raising in its
template, parser, renderer and exporter) and one that fails to import are isolated; and
disable/enable reaches a separate worker process and the API.

SmolLM2-135M answers under a JSON-schema grammar (the llama.cpp engine honours
``response_format``), but an answer cut at ``max_tokens`` or with a score outside 1-10
does not pass the output schema: the tests assert what holds for every request (fields
that pass the schema, or a ``plugin_error`` naming the plugin), not that all parse."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from conftest import Cluster, jsonl, read_lines, submit, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
PLUGIN = "candidate_evaluator"
TEMPLATE = "candidate_evaluation"
MODEL = "smollm2-135m-instruct"
VERDICTS = ("hire", "maybe", "reject")

FLAKY = '''
"""A plugin that raises in every hook it can (a test of isolation)."""
from batch_server.plugins import Exporter, Template, hookimpl


def build(record):
    if record.get("explode"):
        raise RuntimeError("template exploded")
    return {"messages": [{"role": "user", "content": record["text"]}], "max_tokens": 4,
            "temperature": 0}


def write(examples):
    raise RuntimeError("exporter exploded")


@hookimpl
def batch_server_templates():
    schema = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
    return [Template("flaky_echo", build, schema)]


@hookimpl
def batch_server_parse(template, text):
    raise ValueError("parser exploded")


@hookimpl
def batch_server_render(template):
    raise RuntimeError("renderer exploded")


@hookimpl
def batch_server_exporters():
    return [Exporter("flaky-export", write)]
'''

SKILLS = ["python", "sql", "kubernetes", "react", "go", "statistics", "rust", "terraform"]


def record(i: int) -> dict[str, Any]:
    return {
        "candidate": {
            "name": f"Candidate {i}",
            "title": ["Backend engineer", "Data analyst", "Frontend developer"][i % 3],
            "years_experience": i % 12,
            "skills": SKILLS[i % 5 : i % 5 + 3],
            "summary": f"Worked {i % 12} years on {SKILLS[i % 8]} projects.",
        },
        "role": {"title": "Senior backend engineer", "requirements": ["python", "sql"]},
    }


def templated(custom_id: str, template: str, data: Any, **extra: Any) -> dict[str, Any]:
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
    return {**line, "template": template, "input": data, **extra}


@dataclass
class Setup:
    cluster: Cluster
    batch_id: str  # the 20-record candidate batch, completed


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("plugins")
    plugins_dir = tmp / "plugins"
    plugins_dir.mkdir()
    (plugins_dir / "flaky.py").write_text(FLAKY)
    (plugins_dir / "broken_import.py").write_text("raise RuntimeError('boom at import')\n")
    (plugins_dir / "notes.txt").write_text("not a plugin\n")
    cluster = Cluster(tmp, {"plugins_dir": plugins_dir, "unit_size": 5}, in_process_worker=False)
    cluster.start_worker()  # a worker process of its own: it must obey the switches too
    lines = [templated(f"cand-{i}", TEMPLATE, record(i)) for i in range(20)]
    started = time.monotonic()
    batch = submit(cluster.client, lines, extra_body={"model": MODEL})
    done = wait_for(cluster.client, batch.id, timeout=480)
    assert done.status == "completed", done
    print(f"\n20 templated requests in {time.monotonic() - started:.1f} s")
    yield Setup(cluster, batch.id)
    cluster.close()


def plugins(cluster: Cluster) -> dict[str, dict[str, Any]]:
    data = cluster.http.get("/v1/plugins").json()["data"]
    return {p["name"]: p for p in data}


def pairs(cluster: Cluster, batch_id: str, **params: Any) -> list[dict[str, Any]]:
    r = cluster.http.get(f"/v1/batches/{batch_id}/requests", params={"limit": 200, **params})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_installed_plugin_is_listed(setup: Setup) -> None:
    found = plugins(setup.cluster)
    mine = found[PLUGIN]
    assert mine["source"] == "entry_point" and mine["version"] == "0.1.0"
    assert mine["enabled"] and mine["loaded"] and mine["error"] is None
    assert [t["name"] for t in mine["templates"]] == [TEMPLATE]
    assert mine["templates"][0]["output_schema"]["required"] == [
        "score",
        "verdict",
        "strengths",
        "concerns",
    ]
    assert mine["exporters"] == ["candidate-csv"] and mine["ratings"] == ["strong_candidate"]
    assert set(mine["hooks"]) == {
        "batch_server_templates",
        "batch_server_parse",
        "batch_server_render",
        "batch_server_exporters",
        "batch_server_ratings",
    }
    assert "notes" not in found  # only .py modules and packages are plugins
    listed = json.loads(setup.cluster.cli("plugins", "list", "--json", "--url", setup.cluster.url))
    assert {p["name"] for p in listed["data"]} == {PLUGIN, "flaky", "broken_import"}


def test_templated_batch_end_to_end(setup: Setup) -> None:
    cluster, b = setup.cluster, setup.batch_id
    batch = cluster.client.batches.retrieve(b)
    assert batch.request_counts.total == 20 and batch.request_counts.failed == 0
    # the output file keeps OpenAI's line shape: nothing of the plugins in it
    out = read_lines(cluster.client, batch.output_file_id)
    assert len(out) == 20
    assert all(set(line) == {"id", "custom_id", "response", "error"} for line in out)
    assert all(line["response"]["body"]["object"] == "chat.completion" for line in out)

    items = pairs(cluster, b)
    assert len(items) == 20
    parsed = [i for i in items if i["fields"] is not None]
    unparsed = [i for i in items if i["fields"] is None]
    assert len(parsed) + len(unparsed) == 20
    print(f"\n{len(parsed)} of 20 answers parsed into fields")
    assert parsed, "not one answer of 20 passed the output schema under the JSON grammar"
    for item in items:
        assert item["template"] == TEMPLATE
        # the request side shows the record the body was built from
        assert item["request"]["input"]["candidate"]["name"].startswith("Candidate")
    for item in parsed:
        f = item["fields"]
        assert set(f) == {"score", "verdict", "strengths", "concerns"}
        assert isinstance(f["score"], int) and 1 <= f["score"] <= 10
        assert f["verdict"] in VERDICTS
        assert item["plugin_error"] is None
        strong = f["score"] >= 7 and bool(f["strengths"])
        assert item["ratings"] == {"strong_candidate": {"value": strong, "plugin": PLUGIN}}
    for item in unparsed:
        assert item["plugin_error"].startswith(f"plugin {PLUGIN}"), item["plugin_error"]
        assert item["ratings"] is None

    # filters on the fields
    verdict = parsed[0]["fields"]["verdict"]
    same = pairs(cluster, b, field=f"verdict:{verdict}")
    assert [i["custom_id"] for i in same] == [
        i["custom_id"] for i in parsed if i["fields"]["verdict"] == verdict
    ]
    high = pairs(cluster, b, field=["score>=7", f"verdict:{verdict}"])
    assert [i["custom_id"] for i in high] == [
        i["custom_id"]
        for i in parsed
        if i["fields"]["score"] >= 7 and i["fields"]["verdict"] == verdict
    ]
    paged = cluster.http.get(f"/v1/batches/{b}/requests", params={"field": "score>=1", "limit": 1})
    assert paged.json()["has_more"] == (len(parsed) > 1)
    bad = cluster.http.get(f"/v1/batches/{b}/requests", params={"field": "score>=lots"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "field"

    # the review API and the batch page carry the plugin's fragment
    review = cluster.http.get(f"/v1/batches/{b}/review", params={"limit": 20}).json()["data"]
    by_id = {r["custom_id"]: r for r in review}
    for item in parsed:
        shown = by_id[item["custom_id"]]
        assert shown["fields"] == item["fields"]
        assert 'class="candidate-evaluation"' in shown["rendered"]
        assert f'data-score="{item["fields"]["score"]}"' in shown["rendered"]
    page = cluster.http.get(f"/ui/batches/{b}")
    assert page.status_code == 200
    # the batch page shows its first 10 requests, each with its plugin's fragment
    assert page.text.count('class="plugin-view"') == 10
    shown = [i for i in items[:10] if i["fields"] is not None]
    assert page.text.count('class="candidate-evaluation"') == len(shown)
    for item in shown:
        assert f'data-score="{item["fields"]["score"]}"' in page.text


def test_exports_include_fields(setup: Setup) -> None:
    cluster, b = setup.cluster, setup.batch_id
    http = cluster.http
    items = pairs(cluster, b)
    for item in items:
        r = http.put(
            f"/v1/batches/{b}/requests/{item['custom_id']}/annotation", json={"label": "golden"}
        )
        assert r.status_code == 200, r.text
    coll = http.post("/v1/collections", json={"name": "candidates"}).json()["id"]
    r = http.post(
        f"/v1/collections/{coll}/versions", json={"add": [{"batch_id": b, "labels": ["golden"]}]}
    )
    assert r.status_code in (200, 201), r.text
    parsed = {i["custom_id"]: i["fields"] for i in items if i["fields"] is not None}

    def export(fmt: str) -> tuple[dict[str, Any], str]:
        r = http.post(f"/v1/collections/{coll}/exports", json={"format": fmt})
        assert r.status_code in (200, 201), r.text
        done = r.json()
        return done, http.get(f"/v1/files/{done['file_id']}/content").text

    # the built-in CSV: a column per field
    done, text = export("csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 20
    for row in rows:
        fields = parsed.get(row["custom_id"])
        assert row["field.score"] == ("" if fields is None else str(fields["score"]))
        assert row["field.verdict"] == ("" if fields is None else fields["verdict"])
    # the plugin's exporter
    done, text = export("candidate-csv")
    assert done["format"] == "candidate-csv" and done["filename"].endswith(".candidates.csv")
    assert done["count"] == 20
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["custom_id"] for r in rows] == [i["custom_id"] for i in items]
    for row in rows:
        fields = parsed.get(row["custom_id"])
        assert row["candidate"].startswith("Candidate ")
        assert row["score"] == ("" if fields is None else str(fields["score"]))
        assert row["strengths"] == ("" if fields is None else "; ".join(fields["strengths"]))
    # a fine-tuning export learns from the chat request the template built
    done, text = export("openai-finetune-jsonl")
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 20
    for line in lines:
        roles = [m["role"] for m in line["messages"]]
        assert roles == ["system", "user", "assistant"], roles
        assert "Candidate " in line["messages"][1]["content"]
    unknown = http.post(f"/v1/collections/{coll}/exports", json={"format": "nope"})
    assert unknown.status_code == 400 and "candidate-csv" in unknown.json()["error"]["message"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, setup: Setup) -> Iterator[Page]:
    context = browser.new_context(base_url=setup.cluster.url)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors


@pytest.mark.browser
def test_review_page_shows_fields(setup: Setup, page: Page) -> None:
    items = pairs(setup.cluster, setup.batch_id)
    page.goto(f"/ui/batches/{setup.batch_id}/review")
    keys = page.keyboard
    for n, item in enumerate(items[:8]):
        expect(page.locator("#review-position")).to_contain_text(f"· {item['custom_id']}")
        view = page.locator("#review-answer .plugin-view")
        expect(view).to_have_attribute("data-template", TEMPLATE)
        if item["fields"] is not None:
            f = item["fields"]
            expect(view.locator(".score")).to_have_text(f"{f['score']}/10")
            expect(view.locator(".candidate-evaluation")).to_have_attribute(
                "data-verdict", f["verdict"]
            )
            rating = view.locator('[data-plugin-rating="strong_candidate"]')
            expect(rating).to_contain_text(json.dumps(item["ratings"]["strong_candidate"]["value"]))
        else:
            expect(view).to_contain_text("No evaluation: plugin candidate_evaluator")
        if n < 7:
            keys.press("j")
    page.goto("/ui/plugins")
    expect(page.locator(f'tr[data-plugin="{PLUGIN}"] [data-state]')).to_have_text("enabled")
    expect(page.locator('tr[data-plugin="broken_import"]')).to_contain_text("boom at import")


def test_bad_templated_lines_fail_validation(setup: Setup) -> None:
    good = record(1)
    no_name = json.loads(json.dumps(good))
    del no_name["candidate"]["name"]
    wrong_type = json.loads(json.dumps(good))
    wrong_type["candidate"]["years_experience"] = "six"
    lines = [
        templated("ok", TEMPLATE, good),
        templated("unknown", "no_such_template", good),
        templated("missing", TEMPLATE, no_name),
        templated("typed", TEMPLATE, wrong_type),
        templated("not-object", TEMPLATE, ["a"]),
        templated("bad-body", TEMPLATE, good, body={"stream": True}),
    ]
    batch = submit(setup.cluster.client, lines, extra_body={"model": MODEL})
    failed = wait_for(setup.cluster.client, batch.id, timeout=120)
    assert failed.status == "failed"
    errors = {e.line: e for e in failed.errors.data}
    assert sorted(errors) == [2, 3, 4, 5, 6]
    assert errors[2].code == "template_not_found" and errors[2].param == "template"
    assert (
        errors[3].code == "invalid_input" and "'name' is a required property" in errors[3].message
    )
    assert "candidate" in errors[3].message
    assert errors[4].code == "invalid_input" and "years_experience" in errors[4].message
    assert errors[5].code == "invalid_input" and errors[5].param == "input"
    assert errors[6].param == "body.stream"
    # the dry run (in the API process) says the same
    r = setup.cluster.http.post(
        "/v1/batches/validate", files={"file": ("x.jsonl", jsonl(lines))}, data={"model": MODEL}
    )
    assert sorted(e["line"] for e in r.json()["errors"]) == [2, 3, 4, 5, 6]


def test_broken_plugins_are_isolated(setup: Setup) -> None:
    cluster = setup.cluster
    found = plugins(cluster)
    broken = found["broken_import"]
    assert not broken["loaded"] and not broken["enabled"] and broken["source"] == "plugins_dir"
    assert "RuntimeError: boom at import" in broken["error"]
    r = cluster.http.post("/v1/admin/plugins/broken_import/enable")
    assert r.status_code == 400 and r.json()["error"]["code"] == "plugin_not_loaded"
    assert found["flaky"]["enabled"] and found["flaky"]["templates"][0]["name"] == "flaky_echo"

    lines = [
        templated("calm-1", "flaky_echo", {"text": "Say hi"}, body={"model": MODEL}),
        templated("boom", "flaky_echo", {"text": "Say hi", "explode": True}),
        templated("calm-2", "flaky_echo", {"text": "Say bye"}),
        templated("cand", TEMPLATE, record(3)),  # another plugin's line, in the same batch
    ]
    batch = submit(cluster.client, lines, extra_body={"model": MODEL})
    done = wait_for(cluster.client, batch.id, timeout=240)
    assert done.status == "completed", done  # the batch, the worker and the server go on
    assert done.request_counts.completed == 3 and done.request_counts.failed == 1
    errors = read_lines(cluster.client, done.error_file_id)
    assert [e["custom_id"] for e in errors] == ["boom"]
    error = errors[0]["response"]["body"]["error"]
    assert error["code"] == "plugin_error"
    assert error["message"] == "plugin flaky: template flaky_echo: RuntimeError: template exploded"

    items = {i["custom_id"]: i for i in pairs(cluster, batch.id)}
    for cid in ("calm-1", "calm-2"):
        assert items[cid]["status_code"] == 200 and items[cid]["fields"] is None
        assert items[cid]["plugin_error"] == (
            "plugin flaky: batch_server_parse: ValueError: parser exploded"
        )
    assert items["cand"]["status_code"] == 200
    assert (items["cand"]["fields"] is None) != (items["cand"]["plugin_error"] is None)

    # the renderer's exception is an error box naming the plugin; the pages still render
    review = cluster.http.get(f"/v1/batches/{batch.id}/review").json()["data"]
    rendered = {r["custom_id"]: r["rendered"] for r in review}
    assert (
        "plugin flaky: batch_server_render: RuntimeError: renderer exploded" in rendered["calm-1"]
    )
    assert 'class="plugin-error"' in rendered["calm-1"]
    assert "candidate-evaluation" in rendered["cand"] or "No evaluation" in rendered["cand"]
    page = cluster.http.get(f"/ui/batches/{batch.id}")
    assert page.status_code == 200 and "renderer exploded" in page.text
    assert cluster.http.get(f"/ui/batches/{batch.id}/review").status_code == 200

    # the exporter's exception fails that export only
    http = cluster.http
    assert (
        http.put(
            f"/v1/batches/{batch.id}/requests/calm-1/annotation", json={"label": "golden"}
        ).status_code
        == 200
    )
    coll = http.post("/v1/collections", json={"name": "flaky"}).json()["id"]
    http.post(f"/v1/collections/{coll}/versions", json={"add": [{"batch_id": batch.id}]})
    r = http.post(f"/v1/collections/{coll}/exports", json={"format": "flaky-export"})
    assert r.status_code == 500
    assert r.json()["error"]["message"] == (
        "plugin flaky: exporter flaky-export: RuntimeError: exporter exploded"
    )
    assert http.post(f"/v1/collections/{coll}/exports", json={"format": "csv"}).status_code in (
        200,
        201,
    )
    assert http.get("/health").status_code == 200
    assert all(w.popen.poll() is None for w in cluster.workers)


def _switch(cluster: Cluster, action: str) -> float:
    """Switch the example plugin with the CLI; the seconds until the API says so."""
    started = time.monotonic()
    out = cluster.cli("plugins", action, PLUGIN, "--url", cluster.url)
    assert f"{PLUGIN}: {action}d" in out
    assert plugins(cluster)[PLUGIN]["enabled"] == (action == "enable")
    return time.monotonic() - started


def test_disable_and_enable_reach_server_and_worker(setup: Setup) -> None:
    cluster = setup.cluster
    lines = [templated(f"c{i}", TEMPLATE, record(i), body={"max_tokens": 24}) for i in range(2)]
    try:
        _switch(cluster, "disable")
        # the API's dry run at once
        r = cluster.http.post(
            "/v1/batches/validate", files={"file": ("x.jsonl", jsonl(lines))}, data={"model": MODEL}
        )
        assert [e["code"] for e in r.json()["errors"]] == ["template_disabled"] * 2
        time.sleep(1.2)  # the worker process's snapshot of the states is at most 1 s old
        batch = submit(cluster.client, lines, extra_body={"model": MODEL})
        failed = wait_for(cluster.client, batch.id, timeout=120)  # validated by the worker
        assert failed.status == "failed"
        assert [(e.line, e.code) for e in failed.errors.data] == [
            (1, "template_disabled"),
            (2, "template_disabled"),
        ]
        assert "is disabled" in failed.errors.data[0].message
        page = cluster.http.get("/ui/plugins")
        assert 'data-action="enable"' in page.text
    finally:
        _switch(cluster, "enable")
    time.sleep(1.2)
    batch = submit(cluster.client, lines, extra_body={"model": MODEL})
    done = wait_for(cluster.client, batch.id, timeout=240)
    assert done.status == "completed" and done.request_counts.completed == 2
    # admin routes only: an unknown plugin is not found
    assert cluster.http.post("/v1/admin/plugins/nope/disable").status_code == 404


def test_every_hook_is_documented() -> None:
    """As Datasette's tests do: each hook specification has its section in docs/plugins.md
    (with its arguments) and a docstring."""
    import inspect

    from batch_server.plugins import hookspecs

    text = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    hooks = [n for n in dir(hookspecs) if n.startswith("batch_server_")]
    assert len(hooks) == 5
    for name in hooks:
        fn = getattr(hookspecs, name)
        args = ", ".join(inspect.signature(fn).parameters)
        assert f"### `{name}({args})`" in text, name
        assert fn.__doc__ and fn.__doc__.strip(), name


def test_only_states_writes_plugin_states() -> None:
    """One writer per table: ``plugins/states.py`` is the only module that makes or
    changes a ``PluginStateRow``."""
    import ast

    src = Path(__file__).resolve().parent.parent / "src" / "batch_server"
    writers = set()
    for path in src.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else None
                args = [a.id for a in node.args if isinstance(a, ast.Name)]
                if name == "PluginStateRow" or (
                    name in ("insert", "update", "delete") and "PluginStateRow" in args
                ):
                    writers.add(str(path.relative_to(src)))
    assert writers == {"plugins/states.py"}
