"""The official ``openai`` Node SDK drives a real server: ``tests/node/batch_roundtrip.mjs``
uploads, creates, polls and downloads a chat batch, a ``/v1/responses`` batch, an
embeddings batch (vLLM on CPU) and a moderations batch, and cancels a chat batch, with
assertions on every object.
The SDK is installed by ``make test`` (``npm ci --prefix tests/node``); nothing is
downloaded at run time."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from conftest import ROOT, Cluster

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

NODE_DIR = ROOT / "tests" / "node"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("node-sdk"), {"poll_seconds": 0.2})
    yield c
    c.close()


def run_script(server: Cluster, *flows: str) -> str:
    node = shutil.which("node")
    assert node, "node is not installed (Debian: nodejs)"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), (
        "the openai Node SDK is not installed: npm ci --prefix tests/node (make test does)"
    )
    done = subprocess.run(
        [node, str(NODE_DIR / "batch_roundtrip.mjs"), f"{server.url}/v1", *flows],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=540,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{output}\n--- server log ---\n{server.server.output()[-4000:]}"
    return output


def test_node_sdk_round_trips(server: Cluster) -> None:
    output = run_script(server)
    assert "node sdk ok: chat, responses, embeddings, moderations, cancel" in output


def test_node_script_fails_on_a_wrong_answer(server: Cluster) -> None:
    # the script fails loudly: a wrong base URL (every call answers 404) exits non-zero
    node = shutil.which("node")
    assert node
    done = subprocess.run(
        [node, str(NODE_DIR / "batch_roundtrip.mjs"), f"{server.url}/v2", "chat"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "404" in done.stdout + done.stderr
