"""Which registered models can be fine-tuned, and the Hugging Face checkpoint each trains on.

A model's weights are either a Hugging Face directory (``config.json`` + safetensors: used
as they are, e.g. a model fine-tuned earlier) or a GGUF file, which is turned into a
checkpoint once with the conversion the vLLM engine uses (:mod:`batch_server.engines.prepare`)
and cached in the data directory. An ``openai`` upstream has no local weights, and a
moderation classifier or an embedding model is not a chat model: they cannot be trained.
"""

from __future__ import annotations

from pathlib import Path

from batch_server.config import ModelNotAvailable, ModelSpec, Settings
from batch_server.engines.prepare import gguf_to_hf, hf_copy_dir, is_prepared

CHAT = "/v1/chat/completions"


def trainable(spec: ModelSpec) -> str | None:
    """None when ``spec`` can be fine-tuned, else why not (for the API's error message)."""
    if spec.engine == "openai":
        return "an upstream model (engine 'openai') has no local weights to train"
    if spec.engine == "moderation":
        return "a moderation classifier is not a chat model"
    if spec.endpoints is not None and CHAT not in spec.endpoints:
        return "the model does not serve chat completions (an embedding model?)"
    local = not spec.path.startswith("package:")  # a package's file is checked on use
    if (
        local
        and not spec.path.endswith(".gguf")
        and not (Path(spec.path).expanduser() / "config.json").exists()
    ):
        return "its weights are neither a GGUF file nor a Hugging Face checkpoint"
    return None


def base_checkpoint(settings: Settings, spec: ModelSpec, model_id: str | None = None) -> Path:
    """The Hugging Face checkpoint directory to train ``spec`` on; a GGUF is converted
    once into the data directory (the vLLM engine's copy of ``model_id`` when it has one).
    Raises :class:`ModelNotAvailable` when the weights are missing or cannot be read."""
    reason = trainable(spec)
    if reason:
        raise ModelNotAvailable(f"This model cannot be fine-tuned: {reason}")
    path = spec.resolve_path(settings.data_dir)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotAvailable(f"{path} is not a Hugging Face checkpoint (no config.json)")
        return path
    if path.suffix != ".gguf":
        raise ModelNotAvailable(f"{path} is neither a GGUF file nor a Hugging Face checkpoint")
    if model_id is not None and is_prepared(hf_copy_dir(settings.data_dir, model_id)):
        return hf_copy_dir(settings.data_dir, model_id)
    target = settings.data_dir / "models" / "fine-tuning-bases" / path.stem
    try:
        return gguf_to_hf(path, target)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelNotAvailable(f"{path.name} could not be converted for training: {exc}") from exc
