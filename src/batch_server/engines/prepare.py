"""Hugging Face format copies of GGUF models, for engines (vLLM) that cannot read GGUF.

transformers reads a GGUF file (with the ``gguf`` package) and dequantizes it, but the
model it returns keeps a quantization marker that makes ``save_pretrained`` refuse or
write a checkpoint vLLM misreads. So the weights are copied into a fresh model built from
the same config, which is then saved as bf16 safetensors beside the tokenizer. The copy
lives in the data directory; nothing is downloaded.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# A directory counts as prepared once this file is in it (written last).
_MARKER = "model.safetensors"


def hf_copy_dir(data_dir: Path, model_id: str) -> Path:
    """Where the Hugging Face copy of ``model_id`` is cached."""
    return data_dir / "models" / model_id


def is_prepared(target: Path) -> bool:
    return (target / _MARKER).exists() and (target / "config.json").exists()


def gguf_to_hf(gguf: Path, target: Path, dtype: str = "bfloat16") -> Path:
    """Convert ``gguf`` into a safetensors checkpoint in ``target`` (atomically: a partial
    conversion never looks prepared). Returns ``target``."""
    if is_prepared(target):
        return target
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise RuntimeError(
            "Converting a GGUF model needs transformers, torch, gguf and accelerate: "
            "pip install 'vllm-batch-server[vllm]'"
        ) from exc
    folder, name = str(gguf.parent), gguf.name
    log.info("converting %s to a Hugging Face checkpoint in %s", gguf, target)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # transformers leaves from_config unannotated
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    fresh.load_state_dict(loaded.state_dict(), strict=False)
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh = fresh.to(getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fresh.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
