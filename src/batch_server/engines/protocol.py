"""What every engine shares: reading an OpenAI request body into checked generation
parameters, and building genuine ``chat.completion`` / ``text_completion`` objects."""

from __future__ import annotations

import base64
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batch_server import ids
from batch_server.engines.base import RequestRejected

if TYPE_CHECKING:
    from batch_server.engines.tools import ToolCalling

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"

# Fields accepted but without effect on generation (so they are not rejected).
_IGNORED = {
    "model",
    "user",
    "stream",
    "stream_options",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "modalities",
    "prediction",
    "reasoning_effort",
}
_SAMPLING = {
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "response_format",
    "top_k",
    "min_p",
    "repetition_penalty",
    "logit_bias",
}


@dataclass
class Sampling:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0
    response_format: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # top_k, min_p, repetition_penalty
    logit_bias: dict[int, float] = field(default_factory=dict)
    tools: ToolCalling | None = None  # set by tools.prepare_chat


def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise RequestRejected(
            f"'{key}' must be a number between {lo} and {hi}", param=key, code="invalid_value"
        )
    return float(value)


def _integer(body: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RequestRejected(
            f"'{key}' must be an integer between {lo} and {hi}", param=key, code="invalid_value"
        )
    return value


def parse_sampling(endpoint: str, body: dict[str, Any]) -> Sampling:
    """Check and normalise the sampling fields of a request body."""
    unknown = (
        set(body)
        - _SAMPLING
        - _IGNORED
        - {
            "messages",
            "prompt",
            "echo",
            "suffix",
            "best_of",
            "input",
            "encoding_format",
            "dimensions",
            "tools",
            "tool_choice",
            "functions",  # refused with a clear message by tools.parse_tools
            "function_call",
            "max_tool_calls",  # from a /v1/responses request (see engines.responses)
        }
    )
    if unknown:
        name = sorted(unknown)[0]
        raise RequestRejected(
            f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter"
        )
    if body.get("stream") not in (None, False):
        raise RequestRejected(
            "'stream' is not supported in a batch: each response is written to the output file",
            param="stream",
            code="invalid_value",
        )
    s = Sampling()
    max_tokens = _integer(body, "max_completion_tokens", 1, 10**7)
    s.max_tokens = max_tokens if max_tokens is not None else _integer(body, "max_tokens", 1, 10**7)
    s.temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    s.top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    s.presence_penalty = _number(body, "presence_penalty", 0.0, -2.0, 2.0)
    s.frequency_penalty = _number(body, "frequency_penalty", 0.0, -2.0, 2.0)
    s.seed = _integer(body, "seed", -(2**63), 2**63 - 1)
    s.n = _integer(body, "n", 1, 128) or 1
    stop = body.get("stop")
    if isinstance(stop, str):
        s.stop = [stop]
    elif isinstance(stop, list) and all(isinstance(x, str) for x in stop) and len(stop) <= 4:
        s.stop = list(stop)
    elif stop is not None:
        raise RequestRejected(
            "'stop' must be a string or a list of up to 4 strings",
            param="stop",
            code="invalid_value",
        )
    s.stop = [x for x in s.stop if x]
    if endpoint == CHAT:
        logprobs = body.get("logprobs")
        if logprobs is not None and not isinstance(logprobs, bool):
            raise RequestRejected(
                "'logprobs' must be a boolean", param="logprobs", code="invalid_value"
            )
        s.logprobs = bool(logprobs)
        s.top_logprobs = _integer(body, "top_logprobs", 0, 20) or 0
        if s.top_logprobs and not s.logprobs:
            raise RequestRejected(
                "'top_logprobs' requires 'logprobs' to be true",
                param="top_logprobs",
                code="invalid_value",
            )
    else:
        top = _integer(body, "logprobs", 0, 5)
        s.logprobs = top is not None
        s.top_logprobs = top or 0
    fmt = body.get("response_format")
    if fmt is not None and (
        not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema")
    ):
        raise RequestRejected(
            "'response_format.type' must be text, json_object or json_schema",
            param="response_format",
            code="invalid_value",
        )
    s.response_format = fmt if fmt and fmt.get("type") != "text" else None
    top_k = _integer(body, "top_k", -1, 10**6)
    s.extra = {
        "top_k": max(top_k or 0, 0),  # 0 and -1 (vLLM's spelling): no top-k cut-off
        "min_p": _number(body, "min_p", 0.0, 0.0, 1.0),
        "repetition_penalty": _number(body, "repetition_penalty", 1.0, 0.01, 10.0),
    }
    s.logit_bias = parse_logit_bias(body.get("logit_bias"))
    return s


MAX_LOGIT_BIAS = 1024  # entries; each a token id (as a string, as JSON keys are) → -100..100


def parse_logit_bias(bias: Any) -> dict[int, float]:
    """``logit_bias`` as token id → bias (OpenAI's bounds); engines check the ids against
    their vocabulary."""
    if bias is None:
        return {}
    if not isinstance(bias, dict) or len(bias) > MAX_LOGIT_BIAS:
        raise RequestRejected(
            f"'logit_bias' must be an object of at most {MAX_LOGIT_BIAS} token ids",
            param="logit_bias",
            code="invalid_value",
        )
    out: dict[int, float] = {}
    for key, value in bias.items():
        token = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else None
        if (
            token is None
            or isinstance(value, bool)
            or not isinstance(value, int | float)
            or not -100 <= value <= 100
        ):
            raise RequestRejected(
                "'logit_bias' maps token ids (strings of digits) to numbers from -100 to 100",
                param="logit_bias",
                code="invalid_value",
            )
        out[token] = float(value)
    return out


def check_token_ids(ids: list[int], vocab_size: int, param: str) -> None:
    """Refuse token ids outside the model's vocabulary (an engine may crash on them)."""
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise RequestRejected(
            f"Token id {bad} in '{param}' is outside the model's vocabulary (0..{vocab_size - 1})",
            param=param,
            code="invalid_value",
        )


def json_schema(fmt: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of a ``json_schema`` response format (``None`` for ``json_object``)."""
    if fmt["type"] != "json_schema":
        return None
    schema = (fmt.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise RequestRejected(
            "'response_format.json_schema.schema' must be an object",
            param="response_format",
            code="invalid_value",
        )
    return schema


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation with content parts flattened to text (only text is supported)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestRejected(
            "'messages' must be a non-empty list", param="messages", code="invalid_value"
        )
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in (
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
        ):
            raise RequestRejected(
                f"messages[{i}] needs a valid 'role'", param=f"messages[{i}]", code="invalid_value"
            )
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise RequestRejected(
                        f"messages[{i}]: only text content parts are supported by this model",
                        param=f"messages[{i}].content",
                        code="unsupported_content",
                    )
                parts.append(str(part.get("text", "")))
            content = "".join(parts)
        elif content is None:
            content = ""
        elif not isinstance(content, str):
            raise RequestRejected(
                f"messages[{i}].content must be a string or a list of parts",
                param=f"messages[{i}].content",
                code="invalid_value",
            )
        role = "system" if m["role"] == "developer" else m["role"]
        message: dict[str, Any] = {"role": role, "content": content}
        if role == "assistant" and m.get("tool_calls"):
            message["tool_calls"] = _tool_calls(m["tool_calls"], i)
        if role == "tool":
            call = m.get("tool_call_id")
            if not isinstance(call, str):
                raise RequestRejected(
                    f"messages[{i}]: a 'tool' message needs its 'tool_call_id'",
                    param=f"messages[{i}].tool_call_id",
                    code="missing_required_parameter",
                )
            message["tool_call_id"] = call
        out.append(message)
    return out


def _tool_calls(calls: Any, i: int) -> list[dict[str, Any]]:
    """The ``tool_calls`` of an assistant message in the history, checked."""
    param = f"messages[{i}].tool_calls"
    if not isinstance(calls, list):
        raise RequestRejected(f"'{param}' must be a list", param=param, code="invalid_value")
    out = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or call.get("type", "function") != "function"
            or not isinstance(call.get("id"), str)
            or not isinstance(fn, dict)
            or not isinstance(fn.get("name"), str)
            or not isinstance(fn.get("arguments"), str)
        ):
            raise RequestRejected(
                f"{param}[{j}] must be {{'id', 'type': 'function', 'function': "
                "{'name', 'arguments' (a JSON string)}}",
                param=f"{param}[{j}]",
                code="invalid_value",
            )
        out.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": fn["name"], "arguments": fn["arguments"]},
            }
        )
    return out


def completion_prompts(body: dict[str, Any]) -> list[str | list[int]]:
    """The prompt(s) of a ``/v1/completions`` body: a string, a list of strings, a list of
    token ids or a list of such lists."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(t, int) for t in prompt):
            return [list(prompt)]
        if all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
            return [list(p) for p in prompt]
    raise RequestRejected(
        "'prompt' must be a string, a list of strings or token ids",
        param="prompt",
        code="invalid_value",
    )


@dataclass
class Choice:
    text: str
    finish_reason: str
    logprobs: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's, with "call_…" ids


def _message(c: Choice) -> dict[str, Any]:
    """A choice's ``message``: with ``tool_calls`` (and null content) when it called any."""
    message: dict[str, Any] = {"role": "assistant", "content": c.text, "refusal": None}
    if c.tool_calls:
        message["content"] = c.text or None
        message["tool_calls"] = c.tool_calls
    return message


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def chat_completion(model: str, choices: list[Choice], use: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": ids.completion_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": i,
                "message": _message(c),
                "logprobs": c.logprobs,
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(choices)
        ],
        "usage": use,
    }


def text_completion(model: str, choices: list[Choice], use: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": ids.completion_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {"index": i, "text": c.text, "logprobs": c.logprobs, "finish_reason": c.finish_reason}
            for i, c in enumerate(choices)
        ],
        "usage": use,
    }


@dataclass
class TokenLogprob:
    """One generated token with its log-probability and the best alternatives (each a
    ``(text, bytes, logprob)``), as every engine reports it."""

    text: str
    raw: bytes
    logprob: float
    alternatives: list[tuple[str, bytes, float]] = field(default_factory=list)


def logprobs_object(entries: list[TokenLogprob], endpoint: str, top: int) -> dict[str, Any]:
    """OpenAI's ``logprobs`` of a choice: the chat shape (``content``) or the legacy
    completions shape (``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``)."""
    if endpoint == CHAT:
        content = [
            {
                "token": e.text,
                "logprob": e.logprob,
                "bytes": list(e.raw),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(b)} for t, b, lp in e.alternatives
                ],
            }
            for e in entries
        ]
        return {"content": content, "refusal": None}
    offsets, pos = [], 0
    for e in entries:
        offsets.append(pos)
        pos += len(e.text)
    return {
        "tokens": [e.text for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t: lp for t, _, lp in e.alternatives} for e in entries] if top else None,
        "text_offset": offsets,
    }


# -- embeddings ---------------------------------------------------------------------------

_EMBEDDING_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}


@dataclass
class EmbeddingParams:
    inputs: list[str | list[int]]
    encoding_format: str = "float"
    dimensions: int | None = None


def parse_embedding(body: dict[str, Any]) -> EmbeddingParams:
    """Check a ``/v1/embeddings`` body: ``input`` is a string, a list of strings, a list of
    token ids or a list of such lists."""
    unknown = set(body) - _EMBEDDING_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise RequestRejected(
            f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter"
        )
    try:
        inputs = completion_prompts({"prompt": body.get("input")})
    except RequestRejected:
        raise RequestRejected(
            "'input' must be a non-empty string, a list of strings or token ids",
            param="input",
            code="invalid_value",
        ) from None
    if any(len(x) == 0 for x in inputs):
        raise RequestRejected("'input' must not be empty", param="input", code="invalid_value")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise RequestRejected(
            "'encoding_format' must be float or base64",
            param="encoding_format",
            code="invalid_value",
        )
    return EmbeddingParams(inputs, fmt, _integer(body, "dimensions", 1, 65536))


def embedding_list(
    model: str, vectors: list[list[float]], prompt_tokens: int, encoding_format: str
) -> dict[str, Any]:
    """A genuine ``/v1/embeddings`` response (``base64``: little-endian float32)."""

    def encode(vector: list[float]) -> list[float] | str:
        if encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return vector

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
