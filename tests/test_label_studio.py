"""The Label Studio round trip against a real Label Studio server (the `label-studio`
package in its own virtual environment, `make labelstudio`), started on a free port with a
throwaway data directory, a known user and a legacy API token: a real batch of 5 requests
on the real model goes to a new project as 5 tasks with predictions; annotations are made
in Label Studio through its API as an annotator would; importing brings them back as
annotations here. A second export sends nothing; another key gets 404; errors never show
the token.

Label Studio's venv: $BATCH_SERVER_TEST_LABEL_STUDIO_VENV, else ./.venv-labelstudio. The
tests skip only when it is missing (`make test` installs it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from conftest import Cluster, chat_line, free_port, jsonl, wait_for

pytestmark = [pytest.mark.labelstudio, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("BATCH_SERVER_TEST_LABEL_STUDIO_VENV", ROOT / ".venv-labelstudio"))
EMAIL = "reviewer@example.com"
TOKEN = "ls-test-token-0123456789abcdef"
START_TIMEOUT = 480  # the first start runs Django's migrations (about 1.5 min on 2 cores)


@dataclass
class LabelStudioServer:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    started: float
    start_seconds: float | None = None

    def wait_up(self) -> float:
        """Seconds from the process's start until /health answers."""
        deadline = self.started + START_TIMEOUT
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    self.start_seconds = time.time() - self.started
                    return self.start_seconds
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"Label Studio did not start:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_label_studio(tmp: Path) -> LabelStudioServer:
    exe = VENV / "bin" / "label-studio"
    if not exe.exists():
        pytest.skip(f"Label Studio is not installed in {VENV} (run `make labelstudio`)")
    port = free_port()
    data = tmp / "label-studio"
    data.mkdir()
    # A clean environment: Label Studio also reads unprefixed HOST, PORT, USERNAME, …
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_USERNAME": EMAIL,
        "LABEL_STUDIO_PASSWORD": "reviewer-password-1",
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        # offline and quiet: no error reports, analytics or version check
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "LATEST_VERSION_CHECK": "false",
    }
    log = tmp / "label-studio.log"
    cmd = [
        str(exe),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        "--username",
        EMAIL,
        "--password",
        "reviewer-password-1",
        "--user-token",
        TOKEN,
        "--enable-legacy-api-token",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return LabelStudioServer(f"http://127.0.0.1:{port}", proc, log, time.time())


@dataclass
class RoundTrip:
    ls: LabelStudioServer
    lsapi: httpx.Client  # Label Studio's own API, as its annotator
    cluster: Cluster
    alice: httpx.Client
    bob: httpx.Client
    batch_id: str
    answers: dict[str, str]
    keys: dict[str, str]


def _client(cluster: Cluster, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=cluster.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
    )


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoundTrip]:
    tmp = tmp_path_factory.mktemp("label_studio")
    ls = start_label_studio(tmp)  # starts while the batch runs
    cluster: Cluster | None = None
    try:
        cluster = Cluster(
            tmp / "server",
            {"unit_size": 5, "label_studio_url": ls.url, "label_studio_token": TOKEN},
        )
        tokens = {
            name: cluster.cli("keys", "create", name).strip().splitlines()[-1]
            for name in ("alice", "bob")
        }
        alice, bob = _client(cluster, tokens["alice"]), _client(cluster, tokens["bob"])
        lines = [chat_line(f"q/{i}", f"Name a colour, {i}.", max_tokens=12) for i in range(5)]
        sdk = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key=tokens["alice"], max_retries=0)
        file_id = sdk.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch").id
        batch = sdk.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = wait_for(sdk, batch.id)
        assert done.status == "completed", done
        assert done.output_file_id is not None
        answers = {}
        for line in sdk.files.content(done.output_file_id).text.splitlines():
            obj = json.loads(line)
            answers[obj["custom_id"]] = obj["response"]["body"]["choices"][0]["message"]["content"]
        seconds = ls.wait_up()
        print(f"\nLabel Studio started in {seconds:.1f} s (with its first migrations)")
        sys.stderr.write(f"Label Studio start: {seconds:.1f} s\n")
        lsapi = httpx.Client(
            base_url=ls.url, headers={"Authorization": f"Token {TOKEN}"}, timeout=60
        )
        yield RoundTrip(ls, lsapi, cluster, alice, bob, batch.id, answers, tokens)
        lsapi.close()
        alice.close()
        bob.close()
    finally:
        if cluster is not None:
            cluster.close()
        ls.stop()


def _export(rt: RoundTrip, body: dict[str, Any], client: httpx.Client | None = None) -> Any:
    return (client or rt.alice).post(f"/v1/batches/{rt.batch_id}/label-studio/export", json=body)


def _import(rt: RoundTrip, body: dict[str, Any], client: httpx.Client | None = None) -> Any:
    return (client or rt.alice).post(f"/v1/batches/{rt.batch_id}/label-studio/import", json=body)


def _annotate(rt: RoundTrip, task_id: int, result: list[dict[str, Any]], **extra: Any) -> None:
    r = rt.lsapi.post(f"/api/tasks/{task_id}/annotations", json={"result": result, **extra})
    assert r.status_code == 201, r.text


def choice(value: str) -> dict[str, Any]:
    return {
        "from_name": "label",
        "to_name": "answer",
        "type": "choices",
        "value": {"choices": [value]},
    }


def rating(stars: int) -> dict[str, Any]:
    return {
        "from_name": "rating",
        "to_name": "answer",
        "type": "rating",
        "value": {"rating": stars},
    }


def text(name: str, value: str) -> dict[str, Any]:
    return {"from_name": name, "to_name": "answer", "type": "textarea", "value": {"text": [value]}}


def test_round_trip_five_tasks(rt: RoundTrip) -> None:
    t0 = time.time()
    r = _export(rt, {})
    assert r.status_code == 200, r.text
    exported = r.json()
    assert exported["object"] == "label_studio.export"
    assert exported["project_created"] is True and exported["tasks_created"] == 5
    assert exported["already_sent"] == 0 and len(exported["task_ids"]) == 5
    project = exported["project_id"]
    assert exported["project_url"] == f"{rt.ls.url}/projects/{project}/data"
    print(f"export of 5 tasks: {time.time() - t0:.2f} s")

    # what Label Studio holds, read through its own API
    info = rt.lsapi.get(f"/api/projects/{project}").json()
    assert info["task_number"] == 5 and info["total_predictions_number"] == 5
    tasks = rt.lsapi.get(
        f"/api/projects/{project}/export",
        params={"exportType": "JSON", "download_all_tasks": "true"},
    ).json()
    by_id = {t["data"]["custom_id"]: t for t in tasks}
    assert sorted(by_id) == [f"q/{i}" for i in range(5)]
    for custom_id, task in by_id.items():
        assert task["data"]["batch_id"] == rt.batch_id
        assert task["data"]["prompt"] == f"user: Name a colour, {custom_id[2:]}."
        assert task["data"]["answer"] == rt.answers[custom_id]
        prediction = rt.lsapi.get(f"/api/predictions/{task['predictions'][0]}").json()
        assert prediction["model_version"] == "smollm2-135m-instruct"
        assert prediction["result"][0]["value"]["text"] == [rt.answers[custom_id]]
    ids = {c: t["id"] for c, t in by_id.items()}

    # the annotator's work in Label Studio
    _annotate(rt, ids["q/0"], [choice("golden"), rating(5)])
    _annotate(
        rt,
        ids["q/1"],
        [choice("fixed"), text("fixed_answer", "Blue is a colour."), rating(4)],
    )
    _annotate(rt, ids["q/2"], [choice("wrong"), rating(2), text("note", "not a colour")])
    _annotate(rt, ids["q/3"], [], was_cancelled=True)  # Label Studio's "Skip" button
    # q/4 is left unannotated

    t0 = time.time()
    r = _import(rt, {"project_id": project})
    assert r.status_code == 200, r.text
    pulled = r.json()
    assert pulled["object"] == "label_studio.import"
    assert (pulled["imported"], pulled["unchanged"], pulled["not_annotated"]) == (4, 0, 1)
    assert pulled["skipped"] == 0, pulled
    print(f"import of 5 tasks: {time.time() - t0:.2f} s")

    listed = rt.alice.get("/v1/annotations", params={"batch_id": rt.batch_id}).json()["data"]
    got = {a["custom_id"]: a for a in listed}
    assert sorted(got) == ["q/0", "q/1", "q/2", "q/3"]
    assert {a["source"] for a in listed} == {"label_studio"}
    assert {a["rater"] for a in listed} == {EMAIL}
    assert all(a["model"] == "smollm2-135m-instruct" for a in listed)
    view = {c: (a["label"], a["fixed_answer"], a["rating"], a["note"]) for c, a in got.items()}
    assert view == {
        "q/0": ("golden", None, 5, None),
        "q/1": ("fixed", "Blue is a colour.", 4, None),
        "q/2": ("wrong", None, 2, "not a colour"),
        "q/3": ("skip", None, None, None),
    }
    assert got["q/1"]["request_index"] == 1

    # nothing new on a second import or a second export
    again = _import(rt, {}).json()
    assert (again["imported"], again["unchanged"], again["not_annotated"]) == (0, 4, 1)
    second = _export(rt, {"project_id": project})
    assert second.status_code == 200, second.text
    assert second.json()["tasks_created"] == 0 and second.json()["already_sent"] == 5
    assert rt.lsapi.get(f"/api/projects/{project}").json()["task_number"] == 5

    # a correction made later in Label Studio comes back on the next import
    _annotate(rt, ids["q/4"], [text("fixed_answer", "Green.")])
    later = _import(rt, {"project_id": project}).json()
    assert (later["imported"], later["unchanged"], later["not_annotated"]) == (1, 4, 0)
    q4 = rt.alice.get(f"/v1/batches/{rt.batch_id}/requests/q/4/annotation").json()
    assert (q4["label"], q4["fixed_answer"], q4["source"]) == ("fixed", "Green.", "label_studio")


def _cli(rt: RoundTrip, *args: str) -> Any:
    env = dict(
        os.environ,
        BATCH_SERVER_URL=rt.cluster.url,
        BATCH_SERVER_API_KEY=rt.keys["alice"],
        NO_COLOR="1",
    )
    run = subprocess.run(
        [sys.executable, "-m", "batch_server", "label-studio", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_filter_selects_requests_from_the_cli(rt: RoundTrip) -> None:
    out = _cli(
        rt, "export", rt.batch_id, "--custom-id", "q/0", "--custom-id", "q/3", "--limit", "1"
    )
    assert out["tasks_created"] == 1 and out["project_created"] is True
    project = out["project_id"]
    tasks = rt.lsapi.get(
        f"/api/projects/{project}/export",
        params={"exportType": "JSON", "download_all_tasks": "true"},
    ).json()
    assert [t["data"]["custom_id"] for t in tasks] == ["q/0"]
    r = _export(rt, {"project_id": project, "filter": {"failed": True}})
    assert r.json()["tasks_created"] == 0  # every request was answered
    r = _export(rt, {"project_id": project, "filter": {"labels": ["fixed", "none"]}})
    assert r.json()["tasks_created"] == 2  # q/1 (fixed) and q/4 (fixed later) are here
    pulled = _cli(rt, "import", rt.batch_id, "--project", str(project))
    assert pulled["not_annotated"] == 3 and pulled["imported"] == 0
    bad = _export(rt, {"filter": {"labels": ["excellent"]}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "filter"


def test_other_key_and_errors(rt: RoundTrip) -> None:
    for call in (_export, _import):
        r = call(rt, {}, rt.bob)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "not_found"
    missing = _export(rt, {"project_id": 999999})
    assert missing.status_code == 400, missing.text
    assert missing.json()["error"]["param"] == "project_id"
    assert TOKEN not in missing.text
    assert TOKEN not in (rt.cluster.tmp / "server.log").read_text()


def test_unreachable_label_studio_is_a_clear_error(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cluster = Cluster(tmp_path, {"label_studio_url": dead, "label_studio_token": TOKEN})
    try:
        file_id = cluster.client.files.create(
            file=("in.jsonl", jsonl([chat_line("a", "Hi", max_tokens=4)])), purpose="batch"
        ).id
        batch = cluster.client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        r = cluster.http.post(f"/v1/batches/{batch.id}/label-studio/export", json={})
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert error["code"] == "label_studio_unreachable"
        assert dead in error["message"] and TOKEN not in r.text
    finally:
        cluster.close()


def test_verdict_mapping() -> None:
    """The rules of docs/label-studio.md "What maps to what" beyond the round trip."""
    from batch_server.curation.label_studio import verdict

    def v(*result: dict[str, Any], answer: str = "Red.", **extra: Any) -> Any:
        return verdict({"result": list(result), **extra}, answer)

    # a corrected answer wins over "golden" (the annotator edited it), not over "wrong"
    golden_edited = v(choice("golden"), text("fixed_answer", "Blue."))
    assert (golden_edited.label, golden_edited.fixed_answer) == ("fixed", "Blue.")
    wrong = v(choice("wrong"), text("fixed_answer", "Blue."))
    assert (wrong.label, wrong.fixed_answer) == ("wrong", None)
    # the prediction left as it was is no correction
    same = v(choice("golden"), text("fixed_answer", " Red. "))
    assert (same.label, same.fixed_answer) == ("golden", None)
    with pytest.raises(ValueError, match="fixed"):
        v(choice("fixed"), text("fixed_answer", "Red."))
    with pytest.raises(ValueError, match="without a verdict"):
        v()
    only_rating = v(rating(3))
    assert (only_rating.label, only_rating.rating) == (None, 3)
    assert v(was_cancelled=True).label == "skip"
