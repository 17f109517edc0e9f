"""A finished LoRA adapter folded into its base: a plain Hugging Face checkpoint.

The merged directory holds safetensors weights, the config, the tokenizer and the chat
template, so the vLLM engine (``engine = "vllm"``, ``path`` = the directory) serves it like
any other model; it is written atomically (a directory that exists is complete).

The weights are merged in float32 and saved in the base checkpoint's own dtype (bf16 for
the packaged SmolLM2): the adapter's change survives that rounding for the test job, and
the checkpoint stays the base's size.

llama.cpp cannot serve it as it is: it reads GGUF, and turning a Hugging Face checkpoint
into GGUF needs llama.cpp's ``convert_hf_to_gguf.py``, which the llama-cpp-python package
does not ship (nor does any package this project installs). Fine-tuned models are served
by vLLM.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CHAT_TEMPLATE_FILE = "chat_template.jinja"


def is_merged(directory: Path) -> bool:
    return (directory / "config.json").exists() and any(directory.glob("*.safetensors"))


def merge_adapter(
    base_dir: Path,
    adapter_dir: Path,
    out_dir: Path,
    chat_template: str | None = None,
    dtype: str | None = None,
) -> Path:
    """Write ``base_dir`` + ``adapter_dir`` merged into ``out_dir`` and return it.
    ``chat_template`` (a registry entry's own template) is written beside the weights;
    ``dtype`` defaults to the base checkpoint's."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype is None:
        config = json.loads((base_dir / "config.json").read_text())
        dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        merged.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        if chat_template:
            (staging / CHAT_TEMPLATE_FILE).write_text(chat_template)
        for extra in ("generation_config.json",):
            if (base_dir / extra).exists() and not (staging / extra).exists():
                shutil.copy2(base_dir / extra, staging / extra)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
