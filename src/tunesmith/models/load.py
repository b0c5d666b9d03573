"""Load a base model (plus adapters) and its tokenizer for inference or training."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .resolve import resolve_model

DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}


def pick_device(device: str | None = None) -> str:
    import torch

    if device and device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str | None, device: str):
    """bf16 on CUDA, fp32 on CPU, unless set."""
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}' (choose from bf16, fp16, fp32)")
    return getattr(torch, DTYPES[dtype])


def is_adapter_dir(path: str | Path) -> bool:
    return Path(path).joinpath("adapter_config.json").is_file()


def load_tokenizer(model_dir: str | Path, adapter: str | Path | None = None, trust_remote_code: bool = False):
    """The tokenizer saved beside the adapter wins (it is what training rendered with)."""
    from transformers import AutoTokenizer

    src = Path(adapter) if adapter and Path(adapter).joinpath("tokenizer_config.json").is_file() else Path(model_dir)
    tok = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: str, adapters: list[str] | str | None = None, dtype: str | None = None,
               device: str | None = None, trust_remote_code: bool = False, merge: bool = False):
    """Load ``spec`` (alias / folder / .gguf / hub id) and apply ``adapters`` in order.

    Returns ``(model, tokenizer, model_dir)``. Raises UserError for a missing model or adapter."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per shard on every load is noise in a CLI
    model_dir = resolve_model(spec)
    adapters = [adapters] if isinstance(adapters, (str, Path)) else list(adapters or [])
    for a in adapters:
        if not is_adapter_dir(a):
            raise UserError(f"adapter {a} not found: expected a folder with adapter_config.json")
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                                 use_safetensors=True)
    model.to(dev)
    if adapters:
        from peft import PeftModel

        for i, a in enumerate(adapters):
            model = PeftModel.from_pretrained(model, a)
            # Stacked adapters act in sequence: each is folded in before the next is applied.
            if merge or i < len(adapters) - 1:
                model = model.merge_and_unload()
    model.eval()
    tok = load_tokenizer(model_dir, adapters[-1] if adapters else None, trust_remote_code)
    return model, tok, model_dir


def adapter_base(adapter: str | Path) -> str | None:
    cfg = json.loads(Path(adapter).joinpath("adapter_config.json").read_text())
    return cfg.get("base_model_name_or_path")
