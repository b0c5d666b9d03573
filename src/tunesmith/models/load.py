"""Load a base model (plus adapters) and its tokenizer for inference or training."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UserError
from .resolve import resolve_model

DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}


def pick_device(device: str | None = None) -> str:
    """The device to run on; one line when the named one is not on this machine."""
    import torch

    if device and device != "auto":
        if device.startswith("cuda"):
            n = torch.cuda.device_count()
            index = int(device.partition(":")[2] or 0)
            if index >= n:
                have = f"this machine has {n} CUDA device{'s' * (n != 1)}" if n else "no CUDA device is available"
                raise UserError(f"device {device}: {have}; pass device=cpu (or leave it unset)")
        elif device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError("device mps: not available on this machine; pass device=cpu (or leave it unset)")
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
    return Path(path).expanduser().joinpath("adapter_config.json").is_file()


def check_adapter(path: str | Path) -> Path:
    """The adapter folder, resolved; one line when it is missing or is not an adapter."""
    a = Path(path).expanduser().resolve()
    if not is_adapter_dir(a):
        if not a.exists():
            raise UserError(f"adapter {path} not found: expected a folder with adapter_config.json")
        hint = " (it is a full model: use it as --model)" if a.joinpath("config.json").is_file() else ""
        raise UserError(f"adapter {path} has no adapter_config.json: expected a LoRA adapter or run folder{hint}")
    try:
        json.loads(a.joinpath("adapter_config.json").read_text())
    except ValueError as e:
        raise UserError(f"adapter {path}: adapter_config.json is not valid JSON ({e})") from None
    return a


def base_of(adapter: Path) -> str:
    """The base an adapter (or LoRA run folder) names: its manifest's base, else adapter_config's."""
    from ..manifest import read_manifest

    m = read_manifest(adapter) or {}
    base = m.get("base_model") if isinstance(m.get("base_model"), dict) else {}
    if base.get("path") and Path(base["path"]).joinpath("config.json").is_file():
        return base["path"]
    if base.get("spec"):
        return base["spec"]
    name = json.loads(adapter.joinpath("adapter_config.json").read_text()).get("base_model_name_or_path")
    if not name:
        raise UserError(f"adapter {adapter} does not say which base it was trained on: pass --model")
    return name


def split_run_folder(spec: str, adapters: list[str]) -> tuple[str, list[str]]:
    """``model: runs/x`` where runs/x is a LoRA run: its base becomes the model and the run the
    first adapter (``tunesmith chat runs/x`` just works)."""
    p = Path(spec).expanduser()
    if p.is_dir() and is_adapter_dir(p) and not p.joinpath("config.json").is_file():
        return base_of(p.resolve()), [str(p), *adapters]
    return spec, adapters


def apply_adapter(model, adapter: Path, model_dir: Path, is_trainable: bool = False):
    """The model with ``adapter`` loaded and active. peft raises on a shape mismatch and only
    warns about weights that fit no layer; both mean the adapter belongs to another base."""
    import warnings

    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict, load_peft_weights

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing keys are checked below, with a clearer message
            pm = PeftModel.from_pretrained(model, str(adapter), is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        lines = str(e).splitlines() or [type(e).__name__]
        first = next((ln.strip() for ln in lines if "size mismatch" in ln), lines[0].strip())
        raise UserError(f"adapter {adapter} does not fit {model_dir}: {first[:240]}; "
                        "was it trained on another base model?") from None
    have = set(get_peft_model_state_dict(pm))
    saved = set(load_peft_weights(str(adapter)))
    stray, missing = sorted(saved - have), sorted(have - saved)
    if stray:
        raise UserError(f"adapter {adapter} does not fit {model_dir}: {len(stray)} of its weights match no layer "
                        f"(e.g. {stray[0]}); was it trained on another base model?")
    if missing:
        raise UserError(f"adapter {adapter} is incomplete: {len(missing)} weights are missing from its "
                        f"adapter_model file (e.g. {missing[0]})")
    return pm


def check_adapters(spec: str, adapters: list[str] | str | None,
                   notes: list[str] | None = None) -> tuple[str, list[Path], Path]:
    """Everything about ``model`` + ``adapters`` a user can get wrong, before any weights load:
    ``(spec, adapter folders, model folder)``; a run folder as ``spec`` becomes base + adapter.
    The base check is the one ``export merge`` makes (models/lineage.py)."""
    from .lineage import check_lineage

    adapters = [adapters] if isinstance(adapters, (str, Path)) else list(adapters or [])
    spec, adapters = split_run_folder(spec, [str(a) for a in adapters])
    found = [check_adapter(a) for a in adapters]
    model_dir = resolve_model(spec)
    if found:
        check_lineage(model_dir.resolve(), spec, found, action="applied to", skip_hint="", notes=notes)
    return spec, found, model_dir


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
    notes: list[str] = []  # printed once the adapters are in, so a failed load stays one line
    spec, adapters, model_dir = check_adapters(spec, adapters, notes)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                                 use_safetensors=True)
    model.to(dev)
    if adapters:
        for i, a in enumerate(adapters):
            model = apply_adapter(model, a, model_dir)
            # Stacked adapters act in sequence: each is folded in before the next is applied.
            if merge or i < len(adapters) - 1:
                model = model.merge_and_unload()
    model.eval()
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    tok = load_tokenizer(model_dir, adapters[-1] if adapters else None, trust_remote_code)
    return model, tok, model_dir

