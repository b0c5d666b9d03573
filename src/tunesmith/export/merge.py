"""``tunesmith export merge``: fold LoRA adapters into their base, then prove the result.

Adapters are folded in the order given (A, then B trained on base+A, …). The merged model is
written to a temp folder beside ``out``, loaded back from disk with plain transformers and its
logits compared with the unmerged model's on a few chat probes; only a model that passes is
renamed to ``out``. The output is a plain HF folder (sharded safetensors, config, generation
config, tokenizer + chat template) with a manifest that chains base → adapters → merged, so
it can be the ``model:`` of the next stage.
"""
from __future__ import annotations

import gc
import json
import re
import shutil
import sys
import time
from pathlib import Path

from pydantic import Field, field_validator

from ..config import AdaptedModelSection, Device, Dtype
from ..fsutil import save_config
from ..errors import UserError
from ..fsutil import build_dir_for, check_out_dir, fix_modes, publish_dir
from ..manifest import env_info, model_hash, now, read_manifest, write_manifest
from ..models.load import DTYPES, apply_adapter, base_of, check_adapter, pick_device, pick_dtype
from ..models.resolve import resolve_model
from ..models.lineage import adapter_hash, check_lineage

_SIZE = re.compile(r"^\s*(\d+)\s*(GIB|MIB|KIB|GB|MB|KB|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}

# Short, fixed chat probes: a greeting/identity question, facts, arithmetic with a prior assistant
# turn (so template tokens around assistant text are covered too), and a non-Latin script.
PROBES = [
    [{"role": "user", "content": "Who are you?"}],
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Write one sentence about the sea."}],
    [{"role": "user", "content": "What is 17 times 23?"}, {"role": "assistant", "content": "17 times 23 is 391."},
     {"role": "user", "content": "And 391 plus 9?"}],
    [{"role": "user", "content": "Translate 'good morning' into French."}],
    [{"role": "user", "content": "用一句话介绍你自己。"}],
]


class MergeConfig(AdaptedModelSection):
    model: str | None = Field(None, description="base model (alias, HF folder, .gguf, hub id); unset: the base "
                                                "named by the first adapter's manifest.json or adapter_config.json")
    adapter: list[str] = Field(..., min_length=1, description="LoRA adapter / training run folder(s), merged in "
                                                              "this order (each trained on the merge of those before)")
    out: str = Field(..., description="folder to write the merged model to (must not exist or be empty)")
    overwrite: bool = Field(False, description="replace out when it already holds files")
    shard_size: str = Field("2GB", description="largest safetensors shard, e.g. 2GB, 500MB, 4GiB")
    dtype: Dtype = Field(None, description="bf16, fp16 or fp32 for the saved weights; unset: the base's own "
                                                "dtype from its config.json")
    device: Device = Field(None, description="cpu, cuda, cuda:N, mps or auto; unset: cuda if present. The model is "
                                             "held in fp32 once: pick cpu when the GPU can't hold 4 bytes per parameter")
    tolerance: float | None = Field(None, ge=0, description="largest |Δlogit| allowed between the merged model and "
                                    "the unmerged fp32 reference; unset: 3× the error of running unmerged in the "
                                    "output dtype, plus 1e-3 of the logit scale")
    probes: int = Field(4, ge=1, le=len(PROBES), description="how many fixed chat prompts to compare logits on")
    check_base: bool = Field(True, description="refuse adapters whose manifest says they were trained on another "
                                               "base (false: only the shape check runs)")

    @field_validator("shard_size")
    @classmethod
    def _size(cls, v: str) -> str:
        if not _SIZE.match(v):
            raise ValueError(f"'{v}' is not a size: write a whole number and a unit, e.g. 2GB, 500MB, 4GiB")
        return v.strip()

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str | None) -> str | None:
        if v is not None and v not in DTYPES:
            raise ValueError(f"'{v}' is not a dtype: choose bf16, fp16 or fp32")
        return v


def shard_bytes(size: str) -> int:
    n, unit = _SIZE.match(size).groups()
    return int(n) * _UNITS[(unit or "").upper()]


def merge(cfg: MergeConfig) -> int:
    """Merge ``cfg.adapter`` into ``cfg.model`` and write ``cfg.out``; returns 0.

    Raises UserError for a quantized base, an adapter trained on another base or shaped for
    another model, an occupied ``out``, or a merged model whose logits are off (then nothing
    is left at ``out``)."""
    import torch

    started, t0 = now(), time.time()
    adapters = [_check_adapter(a) for a in cfg.adapter]
    spec = cfg.model or base_of(adapters[0])
    model_dir = resolve_model(spec).resolve()
    _refuse_quantized(model_dir)
    out = Path(cfg.out).expanduser().resolve()
    check_out_dir(out, cfg.overwrite, [model_dir, *adapters])
    notes: list[str] = []  # printed after the merge, so a failing one is still one line
    if cfg.check_base:
        check_lineage(model_dir, spec, adapters, notes=notes)
    dtype_name = cfg.dtype or config_dtype(model_dir)
    device = pick_device(cfg.device)
    dtype = pick_dtype(dtype_name, device)

    tmp = build_dir_for(out)  # and a killed earlier run's build folder for this out is removed
    shutil.rmtree(tmp, ignore_errors=True)
    made = [p for p in out.parents if not p.exists()]  # removed again if the merge fails
    try:
        tmp.mkdir(parents=True)
        tok = _tokenizer(model_dir, adapters[-1], cfg.trust_remote_code)
        probes = probe_inputs(tok, cfg.probes)
        try:
            ref, floor = _merge_into(tmp, model_dir, adapters, dtype, device, probes, cfg)
            merged = _load(tmp, dtype, device, cfg.trust_remote_code)
            got = logits(merged, probes)
            del merged
        except torch.OutOfMemoryError:
            raise UserError(f"out of memory on {device} while merging (the model is held in fp32 once): "
                            "pass --device cpu") from None
        diff = max_abs_diff(got, ref)
        scale = max(float(r.abs().max()) for r in ref)
        # The reference is exact fp32 math; bf16/fp16 weights and activations move logits by an amount
        # that grows with depth and activation size (1.5–3 of a logit scale of ~40 on SmolLM2-135M in
        # bf16, ~1e-6 in fp32).
        # The yardstick is that same model run unmerged in the output dtype (`floor`): a correct merge
        # lands within ~0.8–1.4× of it, so 3× it is rounding, beyond is a wrong merge. The 1e-3 relative
        # term is the whole budget in fp32, where floor is 0.
        tol = cfg.tolerance if cfg.tolerance is not None else 3 * floor + 1e-3 * scale
        if not all(bool(torch.isfinite(g).all()) for g in got):
            raise UserError(f"the merged model gives non-finite logits in {dtype_name} (overflow?): "
                            "merge with --dtype bf16 or fp32; nothing was written")
        if diff > tol:
            raise UserError(f"merge verification failed: max |Δlogit| = {diff:.3g} > tolerance {tol:.3g} "
                            f"({dtype_name}; unmerged in {dtype_name} is off by {floor:.3g}); nothing was written "
                            f"to {out}{_tied_hint(model_dir, adapters)}")
        tok.save_pretrained(tmp)
        save_config(cfg, tmp / "config.yaml")
        out_hash = model_hash(tmp)  # hashes names + contents only, so it stays valid after the rename
        fix_modes(tmp)  # safetensors writes 0600: the merged model's files follow the umask
        write_manifest(tmp, {
            "kind": "merge", "status": "done",
            "base_model": {"spec": spec, "path": str(model_dir), "hash": model_hash(model_dir)},
            "adapters": [{"path": str(a), "hash": adapter_hash(a), "manifest": read_manifest(a)} for a in adapters],
            "parent": str(adapters[-1]),
            "verification": {"max_abs_diff": diff, "tolerance": tol, "dtype": dtype_name, "probes": len(probes),
                             "unmerged_in_dtype_diff": floor, "logit_scale": scale,
                             "reference": "fp32, earlier adapters folded in order, last adapter unmerged"},
            "output_hash": out_hash, "dtype": dtype_name, "shard_size": cfg.shard_size,
            "started": started, "finished": now(), "seconds": round(time.time() - t0, 1), "env": env_info()})
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in made:
            try:
                p.rmdir()
            except OSError:
                pass
        raise
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    n = len(adapters)
    print(f"merged {n} adapter{'s' if n > 1 else ''} into {spec} → {out} (max |Δlogit| = {diff:.3g} ≤ {tol:.3g})")
    return 0


def _merge_into(tmp: Path, model_dir: Path, adapters: list[Path], dtype, device: str, probes, cfg: MergeConfig):
    """Write the merged model into ``tmp``; return the fp32 reference logits and ``floor``.

    Reference for a chain: each adapter was trained on the merge of the ones before it, so the
    faithful function is base → fold A → fold B … → last adapter *active, unmerged*, all in fp32.
    That is also how chat/predict run ``--adapter A,B``. It is order-correct for tuners where
    order matters (DoRA rescales by the norm of the weight it sits on). What the comparison
    proves independently is the last merge, the cast to the output dtype and the saved files;
    the earlier folds are the same fp32 peft merges on both sides (tests check chains against
    all adapters active at once)."""
    import torch

    model = _load(model_dir, torch.float32, device, cfg.trust_remote_code)
    for i, a in enumerate(adapters):
        model = apply_adapter(model, a, model_dir)
        if i < len(adapters) - 1:
            model = model.merge_and_unload()
    ref = logits(model, probes)
    model.to(dtype)
    floor = max_abs_diff(logits(model, probes), ref) if dtype != torch.float32 else 0.0
    model = model.merge_and_unload()
    gen = adapters[-1] / "generation_config.json"
    if gen.is_file():  # the run that trained the last adapter knows its stop tokens best
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(adapters[-1])
    _save_model(model, tmp, shard_bytes(cfg.shard_size))
    del model
    gc.collect()
    return ref, floor


def _save_model(model, folder: Path, max_shard_size: int) -> None:
    model.save_pretrained(folder, max_shard_size=max_shard_size, safe_serialization=True)


def _load(folder: Path, dtype, device: str, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=trust_remote_code,
                                                 use_safetensors=True)
    return model.to(device).eval()


def logits(model, probes) -> list:
    """fp32 logits on CPU, one [seq, vocab] tensor per probe (one at a time: no padding effects)."""
    import torch

    dev = next(model.parameters()).device
    with torch.inference_mode():
        return [model(input_ids=ids.to(dev)).logits[0].float().cpu() for ids in probes]


def max_abs_diff(a: list, b: list) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def probe_inputs(tok, n: int) -> list:
    """Token ids of the first ``n`` probes, rendered by the tokenizer's own chat template."""
    import torch

    out = []
    for msgs in PROBES[:n]:
        if tok.chat_template:
            try:
                text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            except Exception:  # some templates (Gemma) refuse a system turn
                text = tok.apply_chat_template([m for m in msgs if m["role"] != "system"],
                                               add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False)["input_ids"]  # the template already has BOS
        else:
            ids = tok("\n".join(m["content"] for m in msgs))["input_ids"]
        out.append(torch.tensor([ids]))
    return out


def _tokenizer(model_dir: Path, last_adapter: Path, trust_remote_code: bool):
    """The tokenizer (and chat template) training saved beside the last adapter, else the base's;
    saved as-is (no pad-token fix-ups), so the merged folder renders exactly like training did."""
    from transformers import AutoTokenizer

    src = last_adapter if last_adapter.joinpath("tokenizer_config.json").is_file() else model_dir
    return AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)


def config_dtype(model_dir: Path) -> str:
    """The dtype a model folder's config.json declares (bf16 / fp16 / fp32; fp32 when unsaid)."""
    cfg = json.loads(model_dir.joinpath("config.json").read_text())
    name = cfg.get("dtype") or cfg.get("torch_dtype") or (cfg.get("text_config") or {}).get("dtype")
    return {"bfloat16": "bf16", "float16": "fp16"}.get(str(name).replace("torch.", ""), "fp32")


def _refuse_quantized(model_dir: Path) -> None:
    cfg = json.loads(model_dir.joinpath("config.json").read_text())
    q = cfg.get("quantization_config") or (cfg.get("text_config") or {}).get("quantization_config")
    if q:
        method = q.get("quant_method", "quantized") if isinstance(q, dict) else "quantized"
        raise UserError(f"{model_dir} is a quantized model ({method}): adapters merged into quantized weights "
                        "lose precision; merge into the unquantized base model it was made from: pass the original bf16 "
                        "base with --model (a QLoRA adapter merges onto it)")


def _tied_hint(model_dir: Path, adapters: list[Path]) -> str:
    """Why a merge most often goes wrong: an adapter on lm_head/embeddings of a model that ties
    them, so merging into one silently changes the other."""
    cfg = json.loads(model_dir.joinpath("config.json").read_text())
    if not cfg.get("tie_word_embeddings", False):
        return ""
    for a in adapters:
        acfg = json.loads(a.joinpath("adapter_config.json").read_text())
        targets = f"{acfg.get('target_modules')} {acfg.get('modules_to_save')}"
        if "lm_head" in targets or "embed" in targets:
            return (f" (adapter {a} adapts lm_head/embeddings, which this base ties together: "
                    "untie them in the base before training such an adapter)")
    return ""


def _check_adapter(path: str) -> Path:
    a = check_adapter(path)
    from peft import PeftConfig

    pcfg = PeftConfig.from_pretrained(str(a))
    if pcfg.is_prompt_learning:
        raise UserError(f"adapter {path} is a {pcfg.peft_type} adapter: it adds virtual tokens, "
                        "there are no weights to merge")
    return a
