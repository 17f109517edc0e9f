"""Inference engines behind one interface (:mod:`.base`).

:func:`start_engine` is what the worker calls: the engine runs in a supervised child
process (:mod:`.process`). :func:`load_engine` builds the engine itself, in that child.
"""

from __future__ import annotations

from pathlib import Path

from batch_server.config import ModelSpec
from batch_server.engines.base import Engine, EngineFailure
from batch_server.engines.process import EngineProcess

# Sequences a llama.cpp engine decodes at once, unless a model's ``engine_args`` say
# ``parallel`` (1: the sequential engine).
LLAMACPP_PARALLEL = 4


def start_engine(
    model_id: str, spec: ModelSpec, data_dir: Path, start_timeout: float = 900.0
) -> EngineProcess:
    """Start ``model_id`` in a child process; raises :class:`EngineFailure` with the
    engine's own message when it cannot start."""
    return EngineProcess(model_id, spec, data_dir, start_timeout)


def load_engine(model_id: str, spec: ModelSpec, data_dir: Path | None = None) -> Engine:
    """Load ``model_id`` with its engine in this process. Raises :class:`EngineFailure`
    with the reason (including a missing model package) when it cannot."""
    from batch_server.config import ModelNotAvailable

    if spec.engine == "openai":
        from batch_server.engines.openai_upstream import OpenAIUpstreamEngine

        return OpenAIUpstreamEngine(model_id, spec.engine_args)
    try:
        path = spec.resolve_path(data_dir)
    except ModelNotAvailable as exc:
        raise EngineFailure(str(exc)) from exc
    if spec.engine == "llamacpp":
        from batch_server.engines.llamacpp import LlamaCppEngine
        from batch_server.engines.llamacpp_batched import BatchedLlamaCppEngine

        args = dict(spec.engine_args)
        if int(args.setdefault("parallel", LLAMACPP_PARALLEL)) > 1:
            return BatchedLlamaCppEngine(model_id, path, args, spec.chat_template)
        del args["parallel"]
        return LlamaCppEngine(model_id, path, args, spec.chat_template)
    if spec.engine == "vllm":
        from batch_server.engines.vllm import VllmEngine

        return VllmEngine(model_id, path, spec.engine_args, data_dir)
    if spec.engine == "moderation":
        from batch_server.engines.moderation import ModerationEngine

        return ModerationEngine(model_id, path)
    raise EngineFailure(f"engine {spec.engine!r} is not available in this build")
