"""The ``openai`` engine: forward each request to an existing OpenAI-compatible server
(``vllm serve``, SGLang, llama.cpp's server, Ollama, …) that owns the GPU.

Up to ``max_concurrency`` requests of a unit are in flight at once (the upstream batches
them); results are yielded as each finishes. 429, 5xx, timeouts and dropped connections
are retried with exponential backoff and jitter (``Retry-After`` is honoured). An error
the upstream keeps answering becomes that request's error line with the upstream's own
status and error body; an upstream that cannot be reached at all is an engine failure, so
the unit goes back to the queue.

Model entry (``engine_args``): ``base_url`` (required, the upstream's ``/v1`` URL),
``model`` (the upstream's model name; default: this model id), ``max_concurrency`` (16),
``timeout`` (seconds per attempt, 600), ``max_retries`` (5), ``backoff_seconds`` (0.5,
doubled per retry, at most 30) and ``api_key_env`` (name of an environment variable holding
the upstream's API key).

Chat requests (``tools`` and ``tool_choice`` included) go to the upstream as they are. A
``/v1/responses`` request goes as its chat request (:mod:`.responses`: many upstreams have no
Responses API) and its chat completion comes back as a ``response`` object.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx

from batch_server.engines.base import (
    EngineFailure,
    EngineRequest,
    EngineResult,
    RequestRejected,
    StopCheck,
    request_failed,
)
from batch_server.engines.protocol import RESPONSES
from batch_server.engines.responses import chat_request, response_object
from batch_server.errors import error_body

MAX_BACKOFF = 30.0


class OpenAIUpstreamEngine:
    def __init__(self, model_id: str, engine_args: dict[str, Any]) -> None:
        self.model_id = model_id
        self.base_url = str(engine_args["base_url"]).rstrip("/")
        self.upstream_model = str(engine_args.get("model") or model_id)
        self.max_concurrency = int(engine_args.get("max_concurrency", 16))
        self.timeout = float(engine_args.get("timeout", 600))
        self.max_retries = int(engine_args.get("max_retries", 5))
        self.backoff = float(engine_args.get("backoff_seconds", 0.5))
        headers = {}
        key_env = engine_args.get("api_key_env")
        if key_env:
            key = os.environ.get(str(key_env))
            if not key:
                raise EngineFailure(f"environment variable {key_env!r} (the API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=self.timeout,
            limits=httpx.Limits(
                max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
            ),
        )

    def close(self) -> None:
        self.client.close()

    def run(
        self, requests: Iterable[EngineRequest], should_stop: StopCheck
    ) -> Iterator[EngineResult]:
        pending: set[Future[EngineResult | None]] = set()
        todo = iter(requests)
        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="upstream")
        try:
            while True:
                while len(pending) < self.max_concurrency and not should_stop():
                    req = next(todo, None)
                    if req is None:
                        break
                    pending.add(pool.submit(self._forward_one, req, should_stop))
                if not pending or should_stop():
                    return
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()  # EngineFailure propagates to the worker
                    if result is not None:
                        yield result
        finally:
            # Requests still in flight after a stop finish in the background, unrecorded.
            pool.shutdown(wait=False, cancel_futures=True)

    # -- one request ----------------------------------------------------------------------

    def _forward_one(self, req: EngineRequest, should_stop: StopCheck) -> EngineResult | None:
        """Forward one request; an unreachable upstream is the engine's failure, any other
        error (a body httpx cannot send, an odd answer) is this request's alone."""
        try:
            return self._forward(req, should_stop)
        except EngineFailure:
            raise
        except Exception as exc:
            return request_failed(req.index, exc)

    def _forward(self, req: EngineRequest, should_stop: StopCheck) -> EngineResult | None:
        sent = chat_request(req)
        if req.endpoint == RESPONSES and "max_tool_calls" in sent.body:
            raise RequestRejected(
                "'max_tool_calls' above 1 has no chat completions equivalent for the upstream",
                param="max_tool_calls",
                code="unsupported_parameter",
            )
        body = {**sent.body, "model": self.upstream_model}
        path = sent.endpoint.removeprefix("/v1")
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = self.client.post(path, json=body)
            except httpx.TimeoutException:
                failure = EngineResult(
                    req.index,
                    504,
                    error_body(
                        f"The upstream did not answer within {self.timeout:g} s "
                        f"({attempt + 1} attempts)",
                        "server_error",
                        code="upstream_timeout",
                    ),
                )
            except httpx.TransportError as exc:
                if attempt >= self.max_retries:
                    raise EngineFailure(
                        f"upstream {self.base_url} unreachable after {attempt + 1} attempts: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                failure = None
            else:
                if response.status_code == 200:
                    return self._success(req, response)
                failure = EngineResult(req.index, response.status_code, _error_of(response))
                if response.status_code != 429 and response.status_code < 500:
                    return failure  # the upstream rejected this request: it fails alone
                retry_after = _retry_after(response)
            if attempt >= self.max_retries and failure is not None:
                return failure
            attempt += 1
            delay = retry_after or min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1))
            deadline = time.monotonic() + delay * random.uniform(0.5, 1.0)
            while time.monotonic() < deadline:
                if should_stop():
                    return None
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _success(self, req: EngineRequest, response: httpx.Response) -> EngineResult:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return EngineResult(
                req.index,
                502,
                error_body(
                    f"The upstream answered 200 with a body that is not a JSON object: "
                    f"{response.text[:300]!r}",
                    "server_error",
                    code="upstream_invalid_response",
                ),
            )
        if req.endpoint == RESPONSES:
            try:
                payload = response_object(req.body, payload)
            except (KeyError, IndexError, TypeError, AttributeError) as exc:
                return EngineResult(
                    req.index,
                    502,
                    error_body(
                        f"The upstream's chat completion could not be read: {exc!r}",
                        "server_error",
                        code="upstream_invalid_response",
                    ),
                )
        return EngineResult(req.index, 200, payload)


def _error_of(response: httpx.Response) -> dict[str, Any]:
    """The upstream's OpenAI-shaped error body, or one made from what it sent."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and "message" in error:
        return {
            "error": {
                "message": str(error["message"]),
                "type": error.get("type") or "upstream_error",
                "param": error.get("param"),
                "code": error.get("code"),
            }
        }
    return error_body(
        f"The upstream answered {response.status_code}: {response.text[:500]}",
        "server_error" if response.status_code >= 500 else "invalid_request_error",
        code=f"upstream_{response.status_code}",
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(MAX_BACKOFF, max(0.0, float(value))) if value else None
    except ValueError:
        return None
