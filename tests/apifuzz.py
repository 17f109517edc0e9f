"""Fuzz the HTTP API with schemathesis against a real server, and say what broke.

Shared by ``tests/test_fuzz_api.py`` (the quick profile of the test suite) and
``benchmarks/bench_fuzz.py`` (the long profile). Schemathesis runs as its command-line
tool in a subprocess (``python -m schemathesis.cli run``): its public, stable interface,
which runs every phase (explicit examples, the coverage phase's boundary values and
unexpected methods, and Hypothesis fuzzing) and writes a HAR file (every request and
response) and an NDJSON event stream (every test case with its operation and checks).
This module turns those and the server's log into findings: each distinct 5xx with the
last line of the server's traceback, each response that breaks its declared schema, and
any other error the server logged, with one reproduction each (method, URL, body).

The server runs with API keys: an admin key and a normal key are created with the CLI
(``batch-server keys create``) and every operation is fuzzed with each (tenant paths, and
403 on admin paths for the normal key). Real ids are seeded before the run (files, batches
in every state, a dead-letter webhook delivery, a throwaway key) and offered to the
fuzzer next to generated values (as schema examples, and by tests/apifuzz_hooks.py), so
the code behind "not found" is reached too. The hooks also upload near-valid batch files
(tests/batch_files.py) and mix in values that break storage and parsing (integers past
64 bits, long digit runs, lone surrogates).

What could end the fuzzing itself is sandboxed: there is no API to revoke or delete keys
(only the CLI), ``PATCH /v1/admin/keys/{key_id}`` is pointed at a throwaway key, and
cancel (which ends the live batches) and the server-wide ``PATCH /v1/admin/limits`` are
fuzzed last, in runs of their own, after which the limits are restored. Every network
target is on 127.0.0.1: webhook URLs in the generated metadata name only loopback hosts,
and the server's outgoing HTTP goes through a proxy address on 127.0.0.1 where nothing
listens.

Where the server's ``/openapi.json`` declares no request body (the multipart uploads and
the batch creation parse their bodies by hand) or only a free-form object, the fuzzer
would send nothing worth sending; those bodies are supplemented from docs/api.md and
listed as :attr:`Report.schema_gaps`. Everything else, and every response schema, is the
server's own.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from batch_server.limits import Limits
from batch_server.openai_types import FILE_PURPOSES, SUPPORTED_ENDPOINTS
from conftest import Cluster, chat_line, free_port, jsonl

CHECKS = "not_a_server_error,response_schema_conformance"
CANCEL = "POST /v1/batches/{batch_id}/cancel"
LIMITS = "PATCH /v1/admin/limits"
HOOKS = Path(__file__).with_name("apifuzz_hooks.py")
JSONL = "application/x-ndjson"  # uploaded files: batch files from the hooks' strategy
PHASES = "examples,coverage,fuzzing"
LIMIT_NAMES = [f for f in Limits.__dataclass_fields__]
# Outgoing HTTP of the server (webhook deliveries) goes to this proxy: nothing listens
# there, so no generated URL can reach beyond this machine.
DEAD_PROXY = "http://127.0.0.1:9"
# The longest ?wait= the fuzzer sends (the server allows 30 s).
FUZZ_WAIT = 0.2


@dataclass(frozen=True)
class Profile:
    """How much to fuzz: examples per operation and phase, and an optional time budget
    (seconds for all runs together; schemathesis repeats fuzzing until it is spent)."""

    max_examples: int
    seconds: float | None = None
    phases: str = PHASES
    seed: int | None = None
    shrink: bool = False
    workers: int = 1  # 1: 5xx responses pair exactly with the server's tracebacks, in order


QUICK = Profile(max_examples=120, seed=20261203)


# -- the server under test and its seeded data ---------------------------------------------


@dataclass
class Tenant:
    name: str
    token: str
    key_id: str = ""
    files: list[str] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)
    live: str = ""  # a batch in_progress until the last runs (cancel comes last)
    dead_letters: list[str] = field(default_factory=list)


class Target:
    """A real server with API keys on, seeded with data for the fuzzer.

    Seeding runs with the worker running normally (batches complete, a webhook to a closed
    local port becomes a dead letter); the server is then restarted with its worker
    holding new work (``host_max_memory_percent``), so batches created while fuzzing are
    validated and then stay ``in_progress``: no model runs during the fuzzing, and
    cancel and priority changes meet live batches.
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        proxies = {k: DEAD_PROXY for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
        proxies.update({k.lower(): v for k, v in proxies.items()})
        local = "127.0.0.1,localhost,::1"
        proxies.update({"NO_PROXY": local, "no_proxy": local})
        self.cluster = Cluster(
            tmp,
            {
                "webhook_allow_private_urls": "true",  # for the seeded dead letter only
                "webhook_max_attempts": 1,
                "unit_size": 2,
            },
            env=proxies,
        )
        try:
            self._seed()
        except BaseException:
            self.cluster.close()
            raise

    @property
    def url(self) -> str:
        return self.cluster.url

    def http(self, tenant: Tenant) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {tenant.token}"}, timeout=60
        )

    def _key(self, name: str, admin: bool = False) -> Tenant:
        out = self.cluster.cli("keys", "create", name, *(["--admin"] if admin else []))
        return Tenant(name, out.strip().splitlines()[-1])

    def _seed(self) -> None:
        self.admin = self._key("fuzz-admin", admin=True)
        self.user = self._key("fuzz-user")
        self.throwaway = self._key("fuzz-throwaway")
        with self.http(self.admin) as root:
            keys = {k["name"]: k["id"] for k in root.get("/v1/admin/keys").json()["data"]}
            self.models = [m for e in root.get("/v1/models").json()["data"] for m in _names(e)]
        for tenant in (self.admin, self.user, self.throwaway):
            tenant.key_id = keys[tenant.name]

        closed = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: a dead letter
        for tenant in (self.admin, self.user):
            with self.http(tenant) as http:
                good = _upload(http, jsonl([chat_line(f"r{i}", "Hi", max_tokens=1) for i in "12"]))
                bad = _upload(http, b'{"custom_id": 1}\nnot json\n\n{"custom_id": "x"}\n')
                notes = _upload(http, b"notes\n", purpose="user_data")
                hook = {"webhook_url": closed, "webhook_events": "batch.completed"}
                done = _create(http, good, metadata=hook)
                failed = _create(http, bad)
                ended = _wait(http, done, ("completed",))
                _wait(http, failed, ("failed",))
                outputs = [ended[k] for k in ("output_file_id", "error_file_id") if ended[k]]
                tenant.files += [good, bad, notes, *outputs]
                tenant.batches += [done, failed]
                deadline = time.time() + 60
                while not tenant.dead_letters and time.time() < deadline:
                    dead = http.get("/v1/webhooks/dead-letter").json()["data"]
                    tenant.dead_letters = [d["id"] for d in dead]
                    time.sleep(0.2)
                assert tenant.dead_letters, "the seeded webhook did not become a dead letter"

        # From here on the worker holds new work, and webhooks to private hosts are refused.
        self.cluster.env["BATCH_SERVER_WEBHOOK_ALLOW_PRIVATE_URLS"] = "false"
        self.cluster.env["BATCH_SERVER_HOST_MAX_MEMORY_PERCENT"] = "0.01"
        self.cluster.restart()
        for tenant in (self.admin, self.user):
            with self.http(tenant) as http:
                live, running, cancelled = (_create(http, tenant.files[0]) for _ in range(3))
                for batch in (live, running, cancelled):
                    _wait(http, batch, ("in_progress",))
                http.post(f"/v1/batches/{cancelled}/cancel").raise_for_status()
                _wait(http, cancelled, ("cancelled",))
                tenant.batches += [running, cancelled]
                tenant.live = live

    def alive(self) -> str | None:
        """Why the server is not well (None: it runs and ``/health`` answers 200)."""
        if self.cluster.server.popen.poll() is not None:
            return f"the server exited with {self.cluster.server.popen.returncode}"
        try:
            health = httpx.get(f"{self.url}/health", timeout=30)
        except httpx.HTTPError as exc:
            return f"GET /health failed: {exc!r}"
        if health.status_code != 200:
            return f"GET /health answered {health.status_code}: {health.text[:500]}"
        for tenant in (self.admin, self.user):
            with self.http(tenant) as http:
                r = http.get("/v1/files")
                if r.status_code != 200:
                    return f"GET /v1/files as {tenant.name} answered {r.status_code}: {r.text}"
        return None

    def close(self) -> None:
        self.cluster.close()


def _names(model: dict[str, Any]) -> list[str]:
    return [model["id"], *(model.get("aliases") or [])]


def _upload(http: httpx.Client, data: bytes, purpose: str = "batch") -> str:
    r = http.post("/v1/files", files={"file": ("seed.jsonl", data)}, data={"purpose": purpose})
    r.raise_for_status()
    return r.json()["id"]


def _create(http: httpx.Client, file_id: str, **extra: Any) -> str:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", **extra}
    r = http.post("/v1/batches", json={"completion_window": "24h", **body})
    r.raise_for_status()
    return r.json()["id"]


def _wait(http: httpx.Client, batch_id: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.time() + 120
    while time.time() < deadline:
        batch = http.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] in statuses:
            return batch
        time.sleep(0.1)
    raise AssertionError(f"seed batch {batch_id} is {batch['status']}, not in {statuses}")


# -- the schema the fuzzer works from -----------------------------------------------------


def _limits_object() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {n: {"type": ["integer", "null"]} for n in LIMIT_NAMES},
        "additionalProperties": True,
    }


# Loopback hosts only (see the module's docstring), with malformed brackets and ports.
_WEBHOOK_URL = r"^(https?|ftp)://(127\.0\.0\.1|localhost|\[?::1\]?)(:[0-9]{0,7})?(/[a-z]*)?$"


def _metadata_object(as_text: bool) -> dict[str, Any]:
    schema = {
        "type": ["object", "null"],
        "maxProperties": 16,
        "propertyNames": {"maxLength": 64},
        "additionalProperties": {"type": "string", "maxLength": 512},
        "properties": {
            "webhook_url": {"type": "string", "pattern": _WEBHOOK_URL},
            "webhook_events": {"type": "string"},
            "priority": {"type": "string", "pattern": r"^-?[0-9]+$"},
        },
    }
    # in a multipart form metadata is JSON text
    return {"type": "string", "contentMediaType": "application/json"} if as_text else schema


def supplemented_bodies(
    ids: dict[str, list[str]] | None = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Request bodies as docs/api.md describes them, for operations whose schema has none
    (or only a free-form object); ``ids`` offers real file ids and models.

    Uploaded files are ``application/x-ndjson`` parts: tests/apifuzz_hooks.py gives
    schemathesis tests/batch_files.py's strategy for them (near-valid batch files)."""
    ids = ids or {}
    window = {"type": "string", "pattern": r"^[0-9]+[smhd]$"}
    endpoint = {"type": "string", "enum": list(SUPPORTED_ENDPOINTS)}
    model = _or_real({"type": "string"}, ids.get("model_id"))
    jsonl_file = {"type": "string", "format": "binary"}
    create_json = {
        "type": "object",
        "required": ["input_file_id", "endpoint"],
        "additionalProperties": False,
        "properties": {
            "input_file_id": _or_real({"type": "string"}, ids.get("file_id")),
            "endpoint": endpoint,
            "completion_window": window,
            "metadata": _metadata_object(as_text=False),
            "model": _or_real({"type": ["string", "null"]}, ids.get("model_id")),
            "priority": {"type": ["integer", "null"]},
            "output_expires_after": {"type": ["object", "null"]},
        },
    }
    create_form = {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": jsonl_file,
            "model": model,
            "endpoint": endpoint,
            "completion_window": window,
            "metadata": _metadata_object(as_text=True),
            "priority": {"type": "string", "pattern": r"^-?[0-9]+$"},
        },
    }
    return {
        ("post", "/v1/files"): _form(
            {
                "type": "object",
                "required": ["file", "purpose"],
                "properties": {
                    "file": jsonl_file,
                    "purpose": {"type": "string", "enum": list(FILE_PURPOSES)},
                },
            },
        ),
        ("post", "/v1/batches"): {
            "required": True,
            "content": {
                "application/json": {"schema": create_json},
                **_form(create_form)["content"],
            },
        },
        ("post", "/v1/batches/validate"): _form(
            {
                "type": "object",
                "required": ["file"],
                "properties": {"file": jsonl_file, "model": model, "endpoint": endpoint},
            },
        ),
        ("patch", "/v1/admin/limits"): _body("application/json", _limits_object()),
        ("patch", "/v1/admin/keys/{key_id}"): _body(
            "application/json",
            {"type": "object", "properties": {"limits": _limits_object()}},
        ),
    }


def _body(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {media_type: {"schema": schema}}}


def _form(schema: dict[str, Any]) -> dict[str, Any]:
    media = {"schema": schema, "encoding": {"file": {"contentType": JSONL}}}
    return {"required": True, "content": {"multipart/form-data": media}}


def _or_real(schema: dict[str, Any], values: list[str] | None) -> dict[str, Any]:
    """``schema`` with real ``values`` as its examples (an ``anyOf`` with an ``enum`` would
    be folded into the plain string by the generator; tests/apifuzz_hooks.py offers them
    while fuzzing)."""
    return {**schema, "examples": values} if values else schema


def schema_gaps(doc: dict[str, Any]) -> list[str]:
    """Operations whose request body the server's schema does not describe (none, or a
    free-form object): the fuzzer can only guess at them."""
    gaps = []
    for (method, path), _ in supplemented_bodies().items():
        op = doc["paths"].get(path, {}).get(method)
        if op is None:
            continue
        body = op.get("requestBody")
        if body is None:
            gaps.append(f"{method.upper()} {path}: no request body declared")
            continue
        for media, content in body.get("content", {}).items():
            schema = _resolve(doc, content.get("schema", {}))
            if schema.get("type") == "object" and not schema.get("properties"):
                gaps.append(f"{method.upper()} {path}: {media} body is a free-form object")
    return gaps


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def _mark_jsonl_parts(op: dict[str, Any]) -> None:
    """Give the binary ``file`` part of a multipart body the content type
    ``application/x-ndjson`` (when the schema names none), so tests/apifuzz_hooks.py
    fills it with batch files rather than schemathesis' sample bytes."""
    media = op.get("requestBody", {}).get("content", {}).get("multipart/form-data")
    if not media:
        return
    prop = media.get("schema", {}).get("properties", {}).get("file", {})
    if prop.get("format") == "binary":
        media.setdefault("encoding", {}).setdefault("file", {"contentType": JSONL})


def fuzz_schema(doc: dict[str, Any], ids: dict[str, list[str]]) -> dict[str, Any]:
    """The server's schema with the request bodies of :func:`schema_gaps` supplemented,
    uploaded files marked as JSONL, long polls (``wait``) cut to :data:`FUZZ_WAIT`, and
    real ids (``ids``: parameter name → values;
    ``after`` by path) as the examples of id parameters: the explicit examples and the
    coverage phase start from them."""
    doc = copy.deepcopy(doc)
    supplements = supplemented_bodies(ids)
    gaps = {g.split(":")[0] for g in schema_gaps(doc)}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if f"{method.upper()} {path}" in gaps:
                op["requestBody"] = supplements[(method, path)]
            _mark_jsonl_parts(op)
            for param in op.get("parameters", []):
                name = param["name"]
                if name == "wait" and param["in"] == "query":
                    # a long poll (a model's test load) is slow by design: its bounds are
                    # checked, not its length, in a fuzz of thousands of requests
                    param["schema"]["maximum"] = min(param["schema"]["maximum"], FUZZ_WAIT)
                if name == "after":
                    name = "file_id" if path.startswith("/v1/files") else "batch_id"
                if ids.get(name) and param["in"] in ("path", "query"):
                    param["example"] = ids[name][0]
    return doc


# -- running schemathesis -----------------------------------------------------------------


@dataclass
class Run:
    """One schemathesis run: one key, a set of operations."""

    name: str
    tenant: Tenant
    include: list[str] = field(default_factory=list)  # --include-name (e.g. "PATCH /v1/x")
    exclude: list[str] = field(default_factory=list)
    share: float = 1.0  # of the profile's time budget


@dataclass
class Finding:
    kind: str  # "server_error" | a check's name | "request_error" | "log_error"
    operation: str
    detail: str  # status and the traceback's last line, or the check's message
    reproduction: str
    key: str = ""  # for a 500: the exception's type and where the server raised it
    runs: set[str] = field(default_factory=set)
    count: int = 0
    entry: dict[str, Any] | None = None  # the HAR entry of the reproduction
    tenant: Tenant | None = None  # whose key sent it
    resent: str = ""  # what re-sending the reproduction (minimized) did

    def describe(self) -> str:
        where = ", ".join(sorted(self.runs))
        again = f"\n    re-sent: {self.resent}" if self.resent else ""
        return (
            f"[{self.kind}] {self.operation}: {self.detail}\n"
            f"    seen {self.count}x ({where}); e.g. {self.reproduction}{again}"
        )


@dataclass
class Report:
    operations: list[str]  # every operation in the server's schema
    requests: Counter = field(default_factory=Counter)  # operation → requests sent
    statuses: Counter = field(default_factory=Counter)
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)
    schema_gaps: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # one line per run
    duration: float = 0.0
    seed: int | None = None

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def untested(self) -> list[str]:
        return [op for op in self.operations if not self.requests[op]]

    def add(
        self,
        kind: str,
        operation: str,
        detail: str,
        repro: str,
        run: Run,
        key: str = "",
        entry: dict[str, Any] | None = None,
    ) -> None:
        """Count a failure; one finding per kind, operation and ``key`` (the detail when
        empty; for a 500 the exception's type and where the server raised it)."""
        finding = self.findings.setdefault(
            (kind, operation, key or detail), Finding(kind, operation, detail, repro, key)
        )
        finding.count += 1
        finding.runs.add(run.name)
        # keep the shortest reproduction
        if finding.entry is None or len(repro) < len(finding.reproduction):
            finding.reproduction, finding.entry, finding.tenant = repro, entry, run.tenant

    def summary(self) -> str:
        kinds = Counter(f.kind for f in self.findings.values())
        lines = [
            f"operations: {len(self.operations) - len(self.untested())}/{len(self.operations)} "
            f"covered; requests sent: {self.total_requests}; failures found: "
            f"{len(self.findings)} distinct ({', '.join(f'{k}: {n}' for k, n in kinds.items())})"
            f"; duration {self.duration:.0f} s; seed {self.seed}",
            *(f"  run {r}" for r in self.runs),
        ]
        if self.untested():
            lines.append(f"operations never called: {', '.join(self.untested())}")
        if self.schema_gaps:
            lines.append("request bodies supplemented (the server's schema lacks them):")
            lines += [f"  {g}" for g in self.schema_gaps]
        lines += [f.describe() for f in sorted(self.findings.values(), key=_order)]
        return "\n".join(lines)


def _order(f: Finding) -> tuple[str, str, str]:
    return (f.kind, f.operation, f.detail)


def fuzz(target: Target, profile: Profile, workdir: Path) -> Report:
    """Fuzz every operation as the normal key and as the admin key, then the server-wide
    limits (restored afterwards); a report of what was sent and what broke."""
    started = time.time()
    doc = httpx.get(f"{target.url}/openapi.json", timeout=30).json()
    operations = [f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops]
    if profile.seed is None:  # a fresh one, printed with the report to run it again
        profile = dataclasses.replace(profile, seed=random.randrange(2**32))
    report = Report(operations, schema_gaps=schema_gaps(doc), seed=profile.seed)
    # Last, in runs of their own: what ends the live batches (cancel), and the
    # server-wide limits (restored afterwards).
    last = [CANCEL, LIMITS]
    runs = [
        Run("user", target.user, exclude=last, share=0.4),
        Run("admin", target.admin, exclude=last, share=0.4),
        Run("user-last", target.user, include=last, share=0.1),
        Run("admin-last", target.admin, include=last, share=0.1),
    ]
    with target.http(target.admin) as root:
        limits_before = root.get("/v1/admin/limits").json()
    limits_before.pop("object", None)
    try:
        for run in runs:
            _run(target, doc, run, profile, workdir, report)
    finally:
        with target.http(target.admin) as root:
            r = root.patch("/v1/admin/limits", json=limits_before)
            if r.status_code != 200:
                restore = Run("restore", target.admin)
                report.add("restore", "PATCH /v1/admin/limits", r.text[:300], "", restore)
    report.duration = time.time() - started
    return report


def _ids(target: Target, tenant: Tenant) -> dict[str, list[str]]:
    """Real ids for a run: the key's own, then the other tenant's (which must be 404)."""
    other = target.user if tenant is target.admin else target.admin
    return {
        "file_id": tenant.files + other.files[:1],
        "batch_id": [tenant.live, *tenant.batches, other.batches[0]],
        "delivery_id": tenant.dead_letters + other.dead_letters[:1],
        "model_id": target.models,
        "model": target.models,
        "key_id": [target.throwaway.key_id],
        "purpose": list(FILE_PURPOSES),
    }


def _run(
    target: Target, doc: dict[str, Any], run: Run, profile: Profile, workdir: Path, report: Report
) -> None:
    out = workdir / run.name
    out.mkdir(parents=True, exist_ok=True)
    schema = out / "openapi.json"
    ids = _ids(target, run.tenant)
    schema.write_text(json.dumps(fuzz_schema(doc, ids)))
    (out / "ids.json").write_text(json.dumps({"ids": ids}))
    args = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        str(schema),
        "--url",
        target.url,
        "--header",
        f"Authorization: Bearer {run.tenant.token}",
        "--checks",
        CHECKS,
        "--phases",
        profile.phases,
        "--max-examples",
        str(profile.max_examples),
        "--workers",
        str(profile.workers),
        "--continue-on-failure",
        "--generation-unique-inputs",
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "60",
        "--report",
        "har,ndjson",
        "--report-har-path",
        str(out / "requests.har"),
        "--report-ndjson-path",
        str(out / "events.ndjson"),
        "--warnings",
        "off",
        "--no-color",
    ]
    if not profile.shrink:
        args.append("--no-shrink")
    if profile.seed is not None:
        args += ["--seed", str(profile.seed)]
    if profile.seconds:
        args += ["--max-time", str(max(1, int(profile.seconds * run.share)))]
    for name in run.include:
        args += ["--include-name", name]
    for name in run.exclude:
        args += ["--exclude-name", name]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    path = [str(HOOKS.parent), env.get("PYTHONPATH", "")]
    env.update(
        SCHEMATHESIS_HOOKS=str(HOOKS),
        APIFUZZ_IDS=str(out / "ids.json"),
        PYTHONPATH=os.pathsep.join(filter(None, path)),
    )
    log = target.cluster.server.log
    log_start = log.stat().st_size
    started = time.time()
    done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=out)
    (out / "schemathesis.out").write_text(done.stdout + done.stderr)
    if not (out / "requests.har").exists() or not (out / "events.ndjson").exists():
        raise RuntimeError(
            f"schemathesis ({run.name}) wrote no reports, exit {done.returncode}:\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    time.sleep(0.5)  # the last log lines
    with open(log, "rb") as fh:
        fh.seek(log_start)
        records = parse_log(fh.read().decode("utf-8", errors="replace"))
    sent = _collect(run, out, records, report)
    for finding in report.findings.values():  # while the state they met is still there
        if finding.kind == "server_error" and not finding.resent and finding.entry:
            minimize(target, finding)
    report.runs.append(
        f"{run.name}: {sent} requests in {time.time() - started:.0f} s "
        f"(schemathesis exit {done.returncode})"
    )


# -- minimizing a reproduction --------------------------------------------------------------


@dataclass
class Request:
    """A request to send again: query parameters and a JSON body can lose parts."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes | None
    json: Any = None  # the body, parsed, when it is JSON

    @classmethod
    def from_har(cls, entry: dict[str, Any]) -> Request:
        request = entry["request"]
        path = re.sub(r"^https?://[^/]+", "", request["url"]).split("?")[0]
        query = [(q["name"], q["value"]) for q in request.get("queryString", [])]
        media = _header(entry, "request", "content-type")
        text = (request.get("postData") or {}).get("text")
        parsed = None
        if text is not None and (media or "").startswith("application/json"):
            with contextlib.suppress(ValueError):
                parsed = json.loads(text)
        return cls(
            request["method"],
            path,
            query,
            {"content-type": media} if media else {},
            text.encode("utf-8", "surrogatepass") if text is not None else None,
            parsed,
        )

    def with_json(self, value: Any) -> Request:
        return dataclasses.replace(self, json=value, body=json.dumps(value).encode())

    def smaller(self) -> list[Request]:
        """This request without one of its query parameters or JSON keys (one level
        deep), or with a list of the body shortened to its first item."""
        out = [
            dataclasses.replace(self, query=self.query[:i] + self.query[i + 1 :])
            for i in range(len(self.query))
        ]
        if isinstance(self.json, dict):
            for key, value in self.json.items():
                out.append(self.with_json({k: v for k, v in self.json.items() if k != key}))
                if isinstance(value, dict):
                    for inner in value:
                        smaller = {k: v for k, v in value.items() if k != inner}
                        out.append(self.with_json({**self.json, key: smaller}))
        return out

    def describe(self, limit: int = 400) -> str:
        query = httpx.QueryParams(self.query)
        url = f"{self.path}?{query}" if self.query else self.path
        if self.body is None:
            return f"{self.method} {url}"
        text = self.body.decode("utf-8", errors="replace")
        more = "…" if len(text) > limit else ""
        return f"{self.method} {url} {self.headers.get('content-type')}: {text[:limit]!r}{more}"


def _send(target: Target, tenant: Tenant, request: Request) -> tuple[int, list[LogRecord]]:
    """Send ``request`` (a fresh connection: a 500 closes it) with the key that sent it;
    its status and the server's log records it caused."""
    log = target.cluster.server.log
    start = log.stat().st_size
    try:
        response = httpx.request(
            request.method,
            target.url + request.path,
            params=request.query,
            headers={"Authorization": f"Bearer {tenant.token}", **request.headers},
            content=request.body,
            timeout=60,
        )
        status = response.status_code
    except httpx.HTTPError:
        status = 0
    time.sleep(0.05)
    with open(log, "rb") as fh:
        fh.seek(start)
        return status, parse_log(fh.read().decode("utf-8", errors="replace"))


def minimize(target: Target, finding: Finding, budget: int = 60) -> None:
    """Send a 500's reproduction again, then drop its parts one at a time while the same
    error (same exception, same place) still comes back; the smallest becomes the
    finding's reproduction, and ``resent`` says whether it failed again."""
    assert finding.entry is not None and finding.tenant is not None
    request = Request.from_har(finding.entry)

    def same(candidate: Request) -> bool:
        status, records = _send(target, finding.tenant, candidate)
        keys = [f"{r.last_line.split(':')[0]} at {r.where}" for r in records if r.is_unhandled]
        return status >= 500 and (not finding.key or finding.key in keys)

    if not same(request):
        finding.resent = "did not fail again (the state it met has changed?)"
        return
    budget -= 1
    shrunk = True
    while shrunk and budget > 0:
        shrunk = False
        for candidate in request.smaller():
            budget -= 1
            if same(candidate):
                request, shrunk = candidate, True
                break
            if budget <= 0:
                break
    finding.reproduction = request.describe()
    finding.resent = "failed again the same way (minimized)"


# -- reading the reports ------------------------------------------------------------------


@dataclass
class LogRecord:
    time: str
    level: str
    logger: str
    request_id: str
    message: str
    lines: list[str] = field(default_factory=list)

    @property
    def last_line(self) -> str:
        tail = [line for line in self.lines if line.strip()]
        return tail[-1].strip() if tail else self.message

    @property
    def where(self) -> str:
        """The innermost frame of the server's own code in the traceback."""
        frames = [m for line in self.lines if (m := _FRAME.match(line))]
        ours = [m for m in frames if "/batch_server/" in m["file"]] or frames
        if not ours:
            return ""
        m = ours[-1]
        return f"{m['file'].split('/batch_server/')[-1]}:{m['line']} in {m['func']}"

    @property
    def is_unhandled(self) -> bool:
        """The 500 handler's record, or uvicorn's for an exception outside the app."""
        return self.message in ("unhandled error", "Exception in ASGI application")


_FRAME = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')
_LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (\S+) \[batch=\S* req=(\S*)\] (.*)$"
)


def parse_log(text: str) -> list[LogRecord]:
    """The server's text log as records (a traceback belongs to the record above it).

    A 500 is logged twice: by the app's handler ("unhandled error") and by uvicorn, to
    which Starlette raises the exception again; the second record is left out."""
    records: list[LogRecord] = []
    for line in text.splitlines():
        m = _LOG_LINE.match(line)
        if m:
            records.append(LogRecord(*m.groups()))
        elif records:
            records[-1].lines.append(line)
    kept: list[LogRecord] = []
    handled: LogRecord | None = None  # the last 500 of the handler not yet seen again
    for record in records:
        if record.message == "unhandled error":
            handled = record
        elif (
            record.message == "Exception in ASGI application"
            and handled is not None
            and handled.last_line == record.last_line
        ):
            handled = None
            continue
        kept.append(record)
    return kept


def _cases(events: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Test case id → {label, case, checks} from the NDJSON events, and the errors
    (requests that got no response: a reset connection, a timeout)."""
    cases: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    with open(events, encoding="utf-8") as fh:
        for line in fh:
            event = json.loads(line)
            if "NonFatalError" in event:
                errors.append(event["NonFatalError"])
            finished = event.get("ScenarioFinished")
            if not finished:
                continue
            recorder = finished.get("recorder") or {}
            for case_id, node in (recorder.get("cases") or {}).items():
                cases[case_id] = {
                    "label": recorder.get("label"),
                    "case": node.get("value", {}),
                    "checks": (recorder.get("checks") or {}).get(case_id, []),
                }
    return cases, errors


def _header(entry: dict[str, Any], section: str, name: str) -> str | None:
    for h in entry[section]["headers"]:
        if h["name"].lower() == name.lower():
            return h["value"]
    return None


def reproduction(entry: dict[str, Any], limit: int = 400) -> str:
    request = entry["request"]
    url = re.sub(r"^https?://[^/]+", "", request["url"])
    text = (request.get("postData") or {}).get("text") or ""
    media = _header(entry, "request", "content-type")
    body = f" {media}: {text[:limit]!r}{'…' if len(text) > limit else ''}" if text else ""
    return f"{request['method']} {url}{body}"


def _collect(run: Run, out: Path, records: list[LogRecord], report: Report) -> int:
    entries = json.loads((out / "requests.har").read_text(encoding="utf-8"))["log"]["entries"]
    cases, errors = _cases(out / "events.ndjson")
    by_request_id = {r.request_id: r for r in records if r.is_unhandled and r.request_id != "-"}
    unmatched = [r for r in records if r.is_unhandled and r.request_id == "-"]
    for entry in entries:
        case_id = _header(entry, "request", "X-Schemathesis-TestCaseId")
        info = cases.get(case_id or "", {})
        label = info.get("label") or f"{entry['request']['method']} ?"
        report.requests[label] += 1
        status = entry["response"]["status"]
        report.statuses[status] += 1
        if status >= 500:
            # The server's traceback: by request id if the 500 carries one, else in order
            # (one schemathesis worker sends one request at a time).
            record = by_request_id.pop(_header(entry, "response", "x-request-id") or "", None)
            if record is None and unmatched:
                record = unmatched.pop(0)
            if record is None:
                cause, key = f"no traceback; body {_text(entry)!r}", ""
            else:
                cause = f"{record.last_line} (at {record.where})"
                key = f"{record.last_line.split(':')[0]} at {record.where}"
            repro = reproduction(entry)
            report.add("server_error", label, f"{status}: {cause}", repro, run, key, entry)
        for check in info.get("checks", []):
            if check.get("status") == "failure" and check["name"] != "not_a_server_error":
                failure = (check.get("failure_info") or {}).get("failure") or {}
                title = failure.get("title") or failure.get("message") or "failed"
                report.add(check["name"], label, title, reproduction(entry), run, entry=entry)
    for error in errors:  # {"value": {"type", "message"}, "label", "phase", …}
        value = error.get("value") or error.get("info") or {}
        message = f"{value.get('type', 'error')}: {value.get('message', value)}"[:300]
        report.add("request_error", error.get("label", "?"), message, "", run)
    leftover = [*by_request_id.values(), *unmatched]  # 500s the HAR does not explain
    others = [r for r in records if r.level in ("ERROR", "CRITICAL") and not r.is_unhandled]
    for record in leftover + others:
        detail = f"{record.message}: {record.last_line} (at {record.where})"
        report.add("log_error", record.logger, detail, "", run)
    return len(entries)


def _text(entry: dict[str, Any]) -> str:
    return (entry["response"].get("content") or {}).get("text", "")[:200]
