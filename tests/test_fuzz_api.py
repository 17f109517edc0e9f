"""No 5xx from any input: schemathesis fuzzes every operation of the server's own
``/openapi.json`` (API keys on; as an admin key and as a normal key) and finds no server
error and no response that breaks its declared schema (the quick profile; see
tests/apifuzz.py for how, and benchmarks/bench_fuzz.py for the long one).

``BATCH_SERVER_FUZZ_SEED`` picks another seed (``random``: a fresh one each run) and
``BATCH_SERVER_FUZZ_EXAMPLES`` the examples per operation.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import httpx
import pytest

import apifuzz

pytestmark = pytest.mark.fuzz


def quick_profile() -> apifuzz.Profile:
    seed = os.environ.get("BATCH_SERVER_FUZZ_SEED")
    examples = os.environ.get("BATCH_SERVER_FUZZ_EXAMPLES")
    profile = apifuzz.QUICK
    if seed:
        profile = dataclasses.replace(profile, seed=None if seed == "random" else int(seed))
    if examples:
        profile = dataclasses.replace(profile, max_examples=int(examples))
    return profile


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[apifuzz.Target]:
    t = apifuzz.Target(tmp_path_factory.mktemp("fuzz"))
    yield t
    t.close()


def test_openapi_declares_every_request_body(target: apifuzz.Target) -> None:
    """What the fuzzer cannot see it cannot prove: each operation that takes a body says
    what it takes (the fuzz run below supplements them from docs/api.md meanwhile)."""
    doc = httpx.get(f"{target.url}/openapi.json").json()
    assert apifuzz.schema_gaps(doc) == []


def test_no_server_error_from_any_input(target: apifuzz.Target, tmp_path) -> None:
    report = apifuzz.fuzz(target, quick_profile(), tmp_path)
    summary = report.summary()
    problems = []
    down = target.alive()
    if down:
        problems.append(f"the server is not well after the fuzzing: {down}")
    if report.untested():
        problems.append(f"operations never called: {', '.join(report.untested())}")
    if report.total_requests < 1000:
        problems.append(f"only {report.total_requests} requests were sent")
    if report.findings:
        problems.append(f"the fuzzer found {len(report.findings)} distinct failures")
    unhandled = target.cluster.server.output().count("unhandled error")
    if unhandled:
        problems.append(f'"unhandled error" (a 500) is {unhandled} times in the server log')
    if problems:
        pytest.fail("\n".join([*problems, "", summary]), pytrace=False)
    print(summary)  # the figures (pytest -s or -rP)
