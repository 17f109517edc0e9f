"""Inference engines behind one interface (:mod:`.base`); :func:`load_engine` picks one."""

from __future__ import annotations

from batch_server.config import ModelSpec
from batch_server.engines.base import Engine, EngineFailure


def load_engine(model_id: str, spec: ModelSpec) -> Engine:
    """Load ``model_id`` with its engine. Raises :class:`EngineFailure` with the reason
    (including a missing model package) when it cannot."""
    from batch_server.config import ModelNotAvailable

    if spec.engine == "openai":
        from batch_server.engines.openai_upstream import OpenAIUpstreamEngine

        return OpenAIUpstreamEngine(model_id, spec.engine_args)
    try:
        path = spec.resolve_path()
    except ModelNotAvailable as exc:
        raise EngineFailure(str(exc)) from exc
    if spec.engine == "llamacpp":
        from batch_server.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(model_id, path, spec.engine_args)
    raise EngineFailure(f"engine {spec.engine!r} is not available in this build")
