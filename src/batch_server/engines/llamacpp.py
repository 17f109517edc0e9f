"""llama.cpp engine (llama-cpp-python): GGUF models on a laptop CPU, and the test engine.

Requests run one at a time. Chat requests go through the model's own chat template (from
the GGUF metadata); generation is checked after every token, so a cancel stops it at once.
Log-probabilities are computed from the raw logits of each step, as OpenAI reports them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from batch_server.engines.base import (
    EngineFailure,
    EngineRequest,
    EngineResult,
    Interrupted,
    RequestRejected,
    StopCheck,
    request_failed,
)
from batch_server.engines.protocol import (
    CHAT,
    COMPLETIONS,
    Choice,
    Sampling,
    TokenLogprob,
    check_token_ids,
    completion_prompts,
    json_schema,
    logprobs_object,
    parse_sampling,
    usage,
)
from batch_server.engines.responses import chat_request, result_body
from batch_server.engines.tools import prepare_chat

if TYPE_CHECKING:
    from llama_cpp.llama_grammar import LlamaGrammar
    from llama_cpp.llama_types import ChatCompletionRequestMessage, ChatCompletionTool

log = logging.getLogger(__name__)

TURN_END_MARKERS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>")


class LlamaCppEngine:
    def __init__(
        self,
        model_id: str,
        path: Path,
        engine_args: dict[str, Any],
        chat_template: str | None = None,
    ) -> None:
        try:
            from llama_cpp import Llama
            from llama_cpp import llama_chat_format as chat_format
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EngineFailure(
                "llama-cpp-python is not installed: pip install 'vllm-batch-server[llamacpp]'"
            ) from exc
        self.model_id = model_id
        # flash attention: faster on CPU too, and its results do not depend on which
        # other sequences share a batch (see llamacpp_batched)
        args: dict[str, Any] = {
            "n_ctx": 2048,
            "n_threads": os.cpu_count() or 1,
            "flash_attn": True,
            "verbose": False,
        }
        args.update(engine_args)
        try:
            self.llm = Llama(model_path=str(path), **args)
        except Exception as exc:
            raise EngineFailure(f"llama.cpp could not load {path}: {exc}") from exc
        template = chat_template or self.llm.metadata.get("tokenizer.chat_template")
        # a template that renders tool definitions gets them; else a system message does
        self.template_tools = bool(template and "tools" in template)
        self.formatter = None
        # the markers a template ends a turn with stop generation, beside the EOS token
        self.turn_stops = [m for m in TURN_END_MARKERS if template and m in template]
        if template:
            model = self.llm._model
            self.formatter = chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(self.llm.token_eos()),
                bos_token=model.token_get_text(self.llm.token_bos()),
            )

    def close(self) -> None:
        self.llm.close()

    def run(
        self, requests: Iterable[EngineRequest], should_stop: StopCheck
    ) -> Iterator[EngineResult]:
        for req in requests:
            if should_stop():
                return
            try:
                body = self._respond(req, should_stop)
            except Interrupted:
                return
            except Exception as exc:  # a rejection, or llama.cpp's error on an odd input
                if not isinstance(exc, RequestRejected):
                    log.exception("request %s failed in llama.cpp", req.custom_id[:200])
                yield request_failed(req.index, exc)
                continue
            yield EngineResult(req.index, 200, body)

    # -- one request ----------------------------------------------------------------------

    def _respond(self, req: EngineRequest, should_stop: StopCheck) -> dict[str, Any]:
        sampling, prompts = self._prepare(req)
        choices: list[Choice] = []
        prompt_tokens = completion_tokens = 0
        for prompt in prompts:
            for i in range(sampling.n):
                seed = None if sampling.seed is None else sampling.seed + i
                choice, p_tok, c_tok = self._generate(
                    prompt, sampling, seed, req.endpoint, should_stop
                )
                choices.append(choice)
                completion_tokens += c_tok
                if i == 0:
                    prompt_tokens += p_tok
        return self._body(req, sampling, choices, usage(prompt_tokens, completion_tokens))

    def _prepare(self, req: EngineRequest) -> tuple[Sampling, list[str | list[int]]]:
        """The request's sampling parameters and its prompts (a chat request's messages
        through the model's chat template, whose stop strings join the request's; a
        Responses request as its chat request; tools as :mod:`.tools` renders them, their
        schema as the grammar)."""
        req = chat_request(req)
        sampling = parse_sampling(req.endpoint, req.body)
        check_token_ids(list(sampling.logit_bias), self.llm.n_vocab(), "logit_bias")
        if req.endpoint == CHAT:
            if self.formatter is None:
                raise RequestRejected(
                    f"Model '{self.model_id}' has no chat template; use /v1/completions",
                    code="unsupported_endpoint",
                )
            # prepare_chat checked the roles and flattened the content to text; the
            # template reads role, content and tool calls, which llama.cpp's per-role
            # TypedDicts describe more narrowly.
            messages, tools = prepare_chat(req.body, sampling, self.template_tools)
            formatted = self.formatter(
                messages=cast("list[ChatCompletionRequestMessage]", messages),
                tools=cast("list[ChatCompletionTool] | None", tools),
            )
            stops = [*(formatted.stop or []), *self.turn_stops]
            sampling.stop = sampling.stop + [s for s in stops if s and s not in sampling.stop]
            return sampling, [formatted.prompt]
        if req.endpoint == COMPLETIONS:
            prompts = completion_prompts(req.body)
            for p in prompts:
                if isinstance(p, list):
                    check_token_ids(p, self.llm.n_vocab(), "prompt")
            return sampling, prompts
        raise RequestRejected(
            f"Endpoint {req.endpoint} is not served by llama.cpp", code="unsupported_endpoint"
        )

    def _body(
        self, req: EngineRequest, s: Sampling, choices: list[Choice], use: dict[str, Any]
    ) -> dict[str, Any]:
        return result_body(self.model_id, req, s.tools, choices, use)

    def _generate(
        self,
        prompt: str | list[int],
        s: Sampling,
        seed: int | None,
        endpoint: str,
        should_stop: StopCheck,
    ) -> tuple[Choice, int, int]:
        from llama_cpp import LogitsProcessorList, StoppingCriteriaList

        # The processor sees each step's raw logits before sampling, and (in input_ids) the
        # token sampled at the step before: so it can log-prob every token but the last.
        steps: list[Step] = []
        latest: list[np.ndarray] = []

        def capture(input_ids: Any, scores: np.ndarray) -> np.ndarray:
            if latest:
                steps.append(Step.of(int(input_ids[-1]), latest.pop(), s.top_logprobs))
            top = float(scores.max())
            latest.append(scores - top - np.log(np.exp(scores - top).sum()))
            return scores

        kwargs: dict[str, Any] = {
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "top_k": s.extra["top_k"],
            "min_p": s.extra["min_p"],
            "repeat_penalty": s.extra["repetition_penalty"],
            "logit_bias": s.logit_bias or None,
            "presence_penalty": s.presence_penalty,
            "frequency_penalty": s.frequency_penalty,
            "stop": s.stop,
            "seed": seed,
            "stopping_criteria": StoppingCriteriaList([lambda _ids, _logits: should_stop()]),
        }
        if s.logprobs:
            kwargs["logits_processor"] = LogitsProcessorList([capture])
        if s.response_format:
            kwargs["grammar"] = self._grammar(s.response_format)
        try:
            out = self.llm.create_completion(prompt, **kwargs)
        except ValueError as exc:
            message = str(exc)
            code = "context_length_exceeded" if "context window" in message else "invalid_request"
            raise RequestRejected(message, code=code) from exc
        assert not isinstance(out, Iterator)  # an iterator only with stream=True
        if should_stop():
            raise Interrupted()
        choice = out["choices"][0]
        text = choice["text"]
        logprobs = None
        if s.logprobs:
            logprobs = self._logprobs(steps, latest, text, s.top_logprobs, endpoint)
        finish = choice.get("finish_reason") or "stop"
        use = out["usage"]
        return Choice(text, finish, logprobs), use["prompt_tokens"], use["completion_tokens"]

    def _grammar(self, fmt: dict[str, Any]) -> LlamaGrammar:
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        schema = json_schema(fmt)
        try:
            if schema is not None:
                return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        except Exception as exc:
            raise RequestRejected(
                f"Unsupported JSON schema: {exc}", param="response_format"
            ) from exc

    def _logprobs(
        self, steps: list[Step], latest: list[np.ndarray], text: str, top: int, endpoint: str
    ) -> dict[str, Any]:
        """OpenAI-shaped log-probabilities of the tokens that make up ``text`` (tokens of a
        stop sequence that was cut off are left out)."""
        target = text.encode()
        pieces = [self.llm.detokenize([st.token]) for st in steps]
        covered = sum(len(p) for p in pieces)
        if covered < len(target) and latest:
            # the last sampled token was never fed back: recover it from the text
            rest = self.llm.tokenize(target[covered:], add_bos=False, special=True)
            if len(rest) == 1:
                steps.append(Step.of(rest[0], latest[0], top))
                pieces.append(self.llm.detokenize(rest))
        entries: list[TokenLogprob] = []
        produced = 0
        for st, piece in zip(steps, pieces, strict=True):
            if produced >= len(target):
                break
            produced += len(piece)
            alternatives = []
            for alt, logprob in st.alternatives:
                alt_bytes = self.llm.detokenize([alt])
                alternatives.append((alt_bytes.decode(errors="replace"), alt_bytes, logprob))
            entries.append(
                TokenLogprob(piece.decode(errors="replace"), piece, st.logprob, alternatives)
            )
        return logprobs_object(entries, endpoint, top)


@dataclass
class Step:
    """One generated token with its log-probability and the best alternatives."""

    token: int
    logprob: float
    alternatives: list[tuple[int, float]]

    @classmethod
    def of(cls, token: int, row: np.ndarray, top: int) -> Step:
        best: list[tuple[int, float]] = []
        if top:
            idx = np.argpartition(-row, top)[:top]
            best = sorted(((int(i), float(row[i])) for i in idx), key=lambda x: -x[1])
        return cls(token, float(row[token]), best)
