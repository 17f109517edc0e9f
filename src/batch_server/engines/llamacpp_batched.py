"""llama.cpp with continuous batching: up to ``parallel`` sequences decoded in one step.

One llama.cpp context holds a KV cache shared by ``parallel`` sequence slots. Every step
decodes one batch: the next token of each generating sequence, plus prompt tokens of the
sequences that just took a slot. A finished sequence's slot takes the next request at
once. Each sequence has its own sampler chain (its temperature, top-p, penalties, logit
bias, grammar and seed), stop strings and log-probabilities, as in the sequential engine.

A new sequence starts from the longest prompt prefix already in the cache (a shared
system prompt is computed once and copied, cell for cell, to the sequences that share
it); those tokens are reported as ``cached_tokens``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batch_server.engines.base import (
    EngineFailure,
    EngineRequest,
    EngineResult,
    RequestFeed,
    RequestRejected,
    StopCheck,
    request_failed,
)
from batch_server.engines.llamacpp import LlamaCppEngine, Step
from batch_server.engines.protocol import Choice, Sampling, usage

if TYPE_CHECKING:
    from llama_cpp._internals import LlamaSampler

log = logging.getLogger(__name__)

PENALTY_LAST_N = 64  # as llama-cpp-python's Llama (last_n_tokens_size)
RANDOM_SEED = 0xFFFFFFFF  # llama.cpp: pick a random seed
MIN_SHARED = 8  # prompt tokens worth waiting one step for


@dataclass
class Pending:
    """A request whose sequences are being generated."""

    request: EngineRequest
    sampling: Sampling
    choices: list[Choice | None]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def done(self) -> bool:
        return all(c is not None for c in self.choices)


@dataclass
class Sequence:
    """One choice of one request: a prompt to continue."""

    pending: Pending
    choice: int
    prompt: list[int]
    seed: int | None
    limit: int  # tokens it may generate


@dataclass
class Slot:
    """A sequence id in the shared KV cache, and what occupies it."""

    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV is in the cache
    seq: Sequence | None = None
    sampler: LlamaSampler | None = None
    to_feed: list[int] = field(default_factory=list)  # tokens not yet decoded
    generated: list[int] = field(default_factory=list)
    text: bytes = b""
    steps: list[Step] = field(default_factory=list)


class BatchedLlamaCppEngine(LlamaCppEngine):
    def __init__(
        self,
        model_id: str,
        path: Path,
        engine_args: dict[str, Any],
        chat_template: str | None = None,
    ) -> None:
        args = dict(engine_args)
        self.parallel = int(args.pop("parallel"))
        self.n_ctx_seq = int(args.get("n_ctx", 2048))
        # the Llama object (tokenizer, chat template, model weights) needs no big cache
        super().__init__(model_id, path, {**args, "n_ctx": 64}, chat_template)
        import llama_cpp
        from llama_cpp import _internals

        self._ll = llama_cpp
        # the sequential engine's settings (attention kernel, cache types, threads), so
        # that both compute the same logits
        params = llama_cpp.llama_context_params.from_buffer_copy(self.llm.context_params)
        params.n_ctx = self.n_ctx_seq * self.parallel
        params.n_batch = params.n_ubatch = 512
        params.n_seq_max = self.parallel
        params.kv_unified = True  # sequences share cells: a common prefix is stored once
        params.no_perf = True
        try:
            self.ctx = _internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
        except ValueError as exc:
            raise EngineFailure(f"llama.cpp could not create a batch context: {exc}") from exc
        self.batch = _internals.LlamaBatch(n_tokens=512, embd=0, n_seq_max=1, verbose=False)
        self.n_vocab = self.llm.n_vocab()
        self.slots = [Slot(i) for i in range(self.parallel)]

    def close(self) -> None:
        self.batch.close()  # type: ignore[no-untyped-call]
        self.ctx.close()  # type: ignore[no-untyped-call]
        super().close()

    # -- the run -----------------------------------------------------------------------

    def run(
        self, requests: Iterable[EngineRequest], should_stop: StopCheck
    ) -> Iterator[EngineResult]:
        feed = requests if isinstance(requests, RequestFeed) else RequestFeed(requests)
        waiting: deque[Sequence] = deque()
        try:
            while not should_stop():
                for req in feed.take():
                    try:
                        waiting.extend(self._sequences(req))
                    except Exception as exc:
                        if not isinstance(exc, RequestRejected):
                            log.exception("request %s failed in llama.cpp", req.custom_id[:200])
                        yield request_failed(req.index, exc)
                for slot in self.slots:
                    if slot.seq is None and waiting and not self._prefix_coming(waiting[0]):
                        self._admit(slot, waiting.popleft())
                busy = [s for s in self.slots if s.seq is not None]
                if len(waiting) < self.parallel:
                    feed.ask()  # the next unit arrives while these run
                if not busy:
                    if feed.ended:
                        return
                    feed.wait(0.05)
                    continue
                yield from self._step(busy)
        finally:
            for slot in self.slots:  # an interrupted run leaves nothing behind
                self._release(slot)

    def _sequences(self, req: EngineRequest) -> list[Sequence]:
        sampling, prompts = self._prepare(req)
        if sampling.response_format:
            self._grammar(sampling.response_format)  # an unsupported schema fails here
        pending = Pending(req, sampling, [None] * (len(prompts) * sampling.n))
        seqs = []
        for p, prompt in enumerate(prompts):
            tokens = (
                prompt
                if isinstance(prompt, list)
                else self.llm.tokenize(prompt.encode(), add_bos=True, special=True)
            ) or [self.llm.token_bos()]
            if len(tokens) >= self.n_ctx_seq:
                raise RequestRejected(
                    f"Requested tokens ({len(tokens)}) exceed context window of {self.n_ctx_seq}",
                    code="context_length_exceeded",
                )
            pending.prompt_tokens += len(tokens)
            room = self.n_ctx_seq - len(tokens)
            limit = min(sampling.max_tokens or room, room)
            for i in range(sampling.n):
                seed = None if sampling.seed is None else sampling.seed + i
                seqs.append(Sequence(pending, p * sampling.n + i, tokens, seed, limit))
        return seqs

    def _prefix_coming(self, seq: Sequence) -> bool:
        """Whether a longer prefix of ``seq``'s prompt is about to be in the cache (another
        sequence's prompt is being fed): then ``seq`` waits a step and copies it."""
        cached = max(_common(s.cached, seq.prompt) for s in self.slots)
        coming = max(
            (_common(s.cached + s.to_feed, seq.prompt) for s in self.slots if s.seq and s.to_feed),
            default=0,
        )
        return coming >= cached + MIN_SHARED

    def _admit(self, slot: Slot, seq: Sequence) -> None:
        """Put ``seq`` in ``slot``, starting from the longest cached prefix of its prompt."""
        mem = self.ctx.memory
        source, reuse = slot, _common(slot.cached, seq.prompt)
        for other in self.slots:
            n = _common(other.cached, seq.prompt)
            if n > reuse:
                source, reuse = other, n
        reuse = min(reuse, len(seq.prompt) - 1)  # the last prompt token gives the logits
        if source is slot:
            self._ll.llama_memory_seq_rm(mem, slot.seq_id, reuse, -1)
        else:
            self._ll.llama_memory_seq_rm(mem, slot.seq_id, -1, -1)
            self._ll.llama_memory_seq_cp(mem, source.seq_id, slot.seq_id, 0, reuse)
        slot.cached = seq.prompt[:reuse]
        slot.to_feed = seq.prompt[reuse:]
        slot.seq, slot.generated, slot.text, slot.steps = seq, [], b"", []
        slot.sampler = self._sampler(seq.pending.sampling, seq.seed)
        if seq.choice % seq.pending.sampling.n == 0:
            seq.pending.cached_tokens += reuse

    def _step(self, busy: list[Slot]) -> Iterator[EngineResult]:
        """Decode one batch and sample the next token of every sequence that got logits."""
        b = self.batch.batch
        b.n_tokens = 0
        outputs: list[tuple[Slot, int]] = []
        room = 512
        for slot in busy:  # generating sequences first: each needs just one token
            if not slot.to_feed or room == 0:
                continue
            take = slot.to_feed[:room]
            for tok in take:
                i = b.n_tokens
                b.token[i], b.pos[i], b.n_seq_id[i] = tok, len(slot.cached), 1
                b.seq_id[i][0] = slot.seq_id
                b.logits[i] = False
                slot.cached.append(tok)
                b.n_tokens += 1
            del slot.to_feed[: len(take)]
            room -= len(take)
            if not slot.to_feed:
                b.logits[b.n_tokens - 1] = True
                outputs.append((slot, b.n_tokens - 1))
        rc = self._ll.llama_decode(self.ctx.ctx, b)
        if rc != 0:
            for slot in self.slots:  # what the cache holds is unknown now
                self._ll.llama_memory_seq_rm(self.ctx.memory, slot.seq_id, -1, -1)
                slot.cached = []
            raise EngineFailure(f"llama_decode failed ({rc}) with {b.n_tokens} tokens")
        for slot, i in outputs:
            done = self._sample(slot, i)
            if done is not None:
                yield from self._finish(slot, done)

    def _sample(self, slot: Slot, i: int) -> str | None:
        """Sample ``slot``'s next token from output ``i``; the finish reason, if it ended."""
        seq, sampler = slot.seq, slot.sampler
        assert seq is not None and sampler is not None
        s = seq.pending.sampling
        if s.logprobs:
            ptr = self._ll.llama_get_logits_ith(self.ctx.ctx, i)
            row = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
            top = row.max()
            row = row - top - np.log(np.exp(row - top).sum())
        token = sampler.sample(self.ctx, i)
        if self._ll.llama_vocab_is_eog(self.llm._model.vocab, token):
            return "stop"
        if s.logprobs:
            slot.steps.append(Step.of(token, row, s.top_logprobs))
        slot.generated.append(token)
        slot.text += self.llm.detokenize([token])
        if s.stop:
            text = slot.text.decode(errors="ignore")
            cut = min((k for k in (text.find(x) for x in s.stop) if k >= 0), default=-1)
            if cut >= 0:
                slot.text = text[:cut].encode()
                return "stop"
        if len(slot.generated) >= seq.limit:
            return "length"
        slot.to_feed = [token]
        return None

    def _finish(self, slot: Slot, finish: str) -> Iterator[EngineResult]:
        seq = slot.seq
        assert seq is not None
        p, s = seq.pending, seq.pending.sampling
        text = slot.text.decode(errors="ignore")
        logprobs = None
        if s.logprobs:
            logprobs = self._logprobs(slot.steps, [], text, s.top_logprobs, p.request.endpoint)
        p.choices[seq.choice] = Choice(text, finish, logprobs)
        p.completion_tokens += len(slot.generated)
        self._release(slot)
        if p.done:
            choices = [c for c in p.choices if c is not None]
            use = usage(p.prompt_tokens, p.completion_tokens, p.cached_tokens)
            yield EngineResult(p.request.index, 200, self._body(p.request, s, choices, use))

    def _release(self, slot: Slot) -> None:
        """Free the slot; its cache stays, for the next prompt that shares a prefix."""
        if slot.sampler is not None:
            slot.sampler.close()  # type: ignore[no-untyped-call]
        slot.seq, slot.sampler, slot.to_feed = None, None, []

    def _sampler(self, s: Sampling, seed: int | None) -> LlamaSampler:
        """The sampler chain of the sequential engine (llama-cpp-python's ``Llama``)."""
        from llama_cpp._internals import LlamaSampler

        chain = LlamaSampler()  # type: ignore[no-untyped-call]
        if s.logit_bias:
            chain.add_logit_bias(self.n_vocab, s.logit_bias)
        chain.add_penalties(
            n_vocab=self.n_vocab,
            penalty_last_n=PENALTY_LAST_N,
            penalty_repeat=s.extra["repetition_penalty"],
            penalty_freq=s.frequency_penalty,
            penalty_present=s.presence_penalty,
        )
        if s.response_format:
            chain.add_grammar(self.llm._model, self._grammar(s.response_format))
        if s.temperature == 0.0:
            chain.add_greedy()  # type: ignore[no-untyped-call]
        else:
            chain.add_top_k(s.extra["top_k"])
            chain.add_typical(1.0, 1)
            chain.add_top_p(s.top_p, 1)
            chain.add_min_p(s.extra["min_p"], 1)
            chain.add_temp(s.temperature)
            chain.add_dist(RANDOM_SEED if seed is None else seed)
        return chain


def _common(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
