"""Test loads on the worker: claim a queued model test, load the model in the worker's
engine slot (timed), read the engine's memory, run one real request through the engine
process, and record the figures and the model's new status (ready or failed, with the
engine's own message). Nothing here may break the worker: every failure is the test's."""

from __future__ import annotations

import logging
import time
from typing import Any

from batch_server.config import ModelSpec, Settings
from batch_server.engines.base import EngineRequest, EngineResult
from batch_server.models import tests
from batch_server.models.registry import ModelRegistry
from batch_server.statuses import WorkerState
from batch_server.worker.engine_slot import EngineSlot
from batch_server.worker.presence import Presence

log = logging.getLogger(__name__)

PROMPT = "Say hello in one short sentence."
ANSWER_TOKENS = 24


def test_endpoint(spec: ModelSpec) -> str:
    """The endpoint a test request of this model uses: chat for a text model."""
    served = spec.endpoints or (
        ["/v1/moderations"] if spec.engine == "moderation" else ["/v1/chat/completions"]
    )
    for endpoint in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        if endpoint in served:
            return endpoint
    return served[0]


def request_body(endpoint: str, model_id: str, max_tokens: int) -> dict[str, Any]:
    if endpoint == "/v1/chat/completions":
        messages = [{"role": "user", "content": PROMPT}]
        return {"model": model_id, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    if endpoint == "/v1/completions":
        return {"model": model_id, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    if endpoint == "/v1/responses":
        return {"model": model_id, "input": PROMPT, "max_output_tokens": max(16, max_tokens)}
    return {"model": model_id, "input": PROMPT}  # embeddings, moderations


def summarize(endpoint: str, body: dict[str, Any]) -> tuple[str, int | None, int | None]:
    """The answer's text (or a summary), prompt tokens and output tokens."""
    usage = body.get("usage") or {}
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    output = usage.get("completion_tokens", usage.get("output_tokens"))
    if endpoint == "/v1/chat/completions":
        return str(body["choices"][0]["message"].get("content") or ""), prompt, output
    if endpoint == "/v1/completions":
        return str(body["choices"][0].get("text") or ""), prompt, output
    if endpoint == "/v1/embeddings":
        return f"embedding of {len(body['data'][0]['embedding'])} dimensions", prompt, 0
    if endpoint == "/v1/moderations":
        result = body["results"][0]
        return f"flagged: {result.get('flagged')}", prompt, 0
    texts = [
        part.get("text", "")
        for item in body.get("output", [])
        for part in item.get("content", []) or []
    ]
    return "".join(texts), prompt, output


class ModelTests:
    """The worker's part of model tests."""

    def __init__(
        self, settings: Settings, models: ModelRegistry, slot: EngineSlot, presence: Presence
    ) -> None:
        self.settings = settings
        self.models = models
        self.slot = slot
        self.presence = presence
        # A test holds its lease for as long as a load may take, plus its requests.
        self.lease_seconds = max(settings.lease_seconds, settings.engine_start_timeout + 600)

    def step(self) -> bool:
        """Run one waiting test; ``False`` when there was none."""
        db = self.models.db
        claim = tests.claim(db, self.presence.id, self.lease_seconds)
        if claim is None:
            return False
        log.info("model test %s of %s", claim.test_id, claim.model)
        self.presence.engine(WorkerState.LOADING)
        try:
            status, figures = self._run(claim)
        except Exception as exc:  # never the worker's end
            log.exception("model test %s failed", claim.test_id)
            status, figures = tests.FAILED, {"error": f"{type(exc).__name__}: {exc}"[:4000]}
        finally:
            self.presence.engine(WorkerState.IDLE)
        # The model's status first, then the test's end: whoever sees the test ended sees
        # the verdict too.
        state = self.models.refresh().state(claim.model)
        current = state is not None and state.updated_at == claim.provenance.get(
            "model_updated_at"
        )  # not removed or changed since the test was asked for
        if current and tests.still_ours(db, claim):
            if status == tests.SUCCEEDED:
                self.models.set_status(claim.model, "ready")
            else:
                reason = figures.get("error") or "the test load failed"
                self.models.set_status(claim.model, "failed", reason)
        if not tests.finish(db, claim, status, figures):
            log.warning("model test %s was taken over by another worker", claim.test_id)
        return True

    def _run(self, claim: tests.TestClaim) -> tuple[str, dict[str, Any]]:
        spec = self.models.refresh().get(claim.model)
        if spec is None:
            return tests.FAILED, {"error": "the model was removed from the registry"}
        if self.slot.model_id == claim.model:
            self.slot.close()  # a test measures a fresh load of the entry as it is now
        started = time.monotonic()
        try:
            engine = self.slot.engine_for(claim.model)
        except Exception as exc:  # the engine's own message (missing weights, bad file)
            return tests.FAILED, {"error": str(exc)[:4000]}
        figures: dict[str, Any] = {
            "load_seconds": time.monotonic() - started,
            "memory_bytes": engine.memory_bytes(),
        }
        endpoint = figures["endpoint"] = test_endpoint(spec)
        try:
            if endpoint in ("/v1/chat/completions", "/v1/completions", "/v1/responses"):
                first, seconds = self._request(engine, endpoint, claim.model, 1)
                if first.ok:
                    figures["time_to_first_token"] = seconds
            result, seconds = self._request(engine, endpoint, claim.model, ANSWER_TOKENS)
        except Exception as exc:  # the engine broke on the request: not kept loaded
            self.slot.close()
            return tests.FAILED, {**figures, "error": f"the test request failed: {exc}"[:4000]}
        figures["request_seconds"] = seconds
        figures["memory_bytes"] = max(figures["memory_bytes"], engine.memory_bytes())
        if not result.ok:
            message = (result.body.get("error") or {}).get("message") or str(result.body)
            return tests.FAILED, {**figures, "error": f"the test request failed: {message}"}
        text, prompt, output = summarize(endpoint, result.body)
        figures.update(output=text[:2000], prompt_tokens=prompt, output_tokens=output)
        return tests.SUCCEEDED, figures

    @staticmethod
    def _request(
        engine: Any, endpoint: str, model_id: str, max_tokens: int
    ) -> tuple[EngineResult, float]:
        request = EngineRequest(
            0, "model-test", endpoint, request_body(endpoint, model_id, max_tokens)
        )
        started = time.monotonic()
        results = list(engine.run([request], lambda: False))
        seconds = time.monotonic() - started
        if not results:
            raise RuntimeError("the engine returned no result")
        return results[0], seconds
