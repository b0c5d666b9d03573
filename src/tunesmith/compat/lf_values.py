"""The converters of the LLaMA-Factory key tables (``compat/lf.py``): one LLaMA-Factory value (and
the whole YAML, for keys that depend on others) → tunesmith dotted keys and values.

A converter returns ``{dotted key: value}``, raises ``Skip(why)`` when the value has no tunesmith
equivalent (listed with the reason), or ``ValueError`` when it would mean something else in
tunesmith (one ConfigError naming key and value).
"""
from __future__ import annotations

import json
from typing import Any, Callable

from ..data.registry import lf_datasets
from ..data.registry import lf_names as names  # comma lists: "q_proj,v_proj" or a YAML list


class Skip(Exception):
    """Raised by a converter: this value has no tunesmith equivalent (listed with the reason)."""


def show(v) -> str:
    return json.dumps(v, ensure_ascii=False, default=str)  # true / "text" / 3, as a YAML reader writes them


def text(v):
    if not isinstance(v, str) or not v.strip():
        raise ValueError("must be a non-empty string")
    return v.strip()


def boolean(v):
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def number(kind=float, low=0.0, strict=True):
    def conv(v):
        if isinstance(v, str):  # YAML reads 5e-5 (no dot) as text; LLaMA-Factory's parser takes it as a number
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v)):
            raise ValueError(f"must be {'a whole number' if kind is int else 'a number'}")
        if v < low or (strict and v == low):
            raise ValueError(f"must be {'above' if strict else 'at least'} {low:g}")
        return kind(v)
    return conv


def to(key: str, conv: Callable = lambda v: v) -> Callable:
    return lambda v, ctx: {key: conv(v)}


def ign(why: str, ok: Callable[[Any], bool] = lambda v: False) -> tuple[str, Callable, str]:
    """A key with no tunesmith setting: harmless (nothing to do) when ``ok(value)``, else listed."""
    def conv(v, ctx):
        if ok(v):
            return {}
        raise Skip(why)
    return "—", conv, why


PREF_LOSS = {"sigmoid": "dpo", "ipo": "ipo", "simpo": "simpo"}  # LLaMA-Factory pref_loss → tunesmith objective


def stage(v, ctx):
    if v == "pt":  # continued pre-training: the datasets are plain text (data.registry.lf_datasets)
        return {}
    if v == "dpo":  # the loss is pref_loss (LLaMA-Factory's default: sigmoid, i.e. DPO)
        return {"objective": PREF_LOSS.get(ctx.get("pref_loss", "sigmoid"), "dpo")}
    if v != "sft":
        words = {"rm": "reward modelling", "ppo": "PPO", "kto": "KTO"}
        what = words.get(v) if isinstance(v, str) else None
        raise ValueError(f"{what + ' is' if what else 'this stage is'} not supported by tunesmith train "
                         "(sft, pt and dpo only)")
    return {}


def pref_loss(v, ctx):
    if v not in PREF_LOSS:
        raise ValueError(f"must be {' or '.join(PREF_LOSS)} (hinge, orpo, kto_pair have no tunesmith objective)")
    if ctx.get("stage") != "dpo":
        raise Skip("read only with stage: dpo")
    return {}  # stage sets the objective


def pref(key, conv):
    """A preference setting: used with stage: dpo, listed as unused otherwise."""
    def rule(v, ctx):
        if ctx.get("stage") != "dpo":
            raise Skip("read only with stage: dpo")
        return {key: conv(v)}
    return rule


def quantization(v, ctx):
    if v is None:
        return {}
    if v != 4 or ctx.get("finetuning_type", "lora") != "lora":
        raise ValueError("only 4 (bitsandbytes NF4) with finetuning_type: lora, i.e. method: qlora")
    return {"method": "qlora"}


def finetuning(kind):
    def conv(v, ctx):
        if v not in ("lora", "full"):
            raise ValueError("must be lora or full (freeze training has no tunesmith equivalent)")
        if kind == "merge" and v != "lora":
            raise ValueError("merging needs LoRA adapters (finetuning_type: lora)")
        if kind == "train" and v == "lora" and ctx.get("quantization_bit") is not None:
            return {}  # quantization_bit sets method: qlora
        return {"method": v} if kind == "train" else {}
    return conv


def adapter(kind):
    def conv(v, ctx):
        paths = names(v)
        if kind != "train":
            return {"adapter": paths}
        if len(paths) > 1:
            raise ValueError("tunesmith train continues one adapter: merge the others first (tunesmith export merge)")
        return {"adapter": paths[0]}
    return conv


TEMPLATE_NOTE = "uses the model's own chat template (from its tokenizer)"


def template(kind):
    def conv(v, ctx):
        from ..models.template import FALLBACK_TEMPLATES, SHIPPED

        if kind == "train" and text(v) in FALLBACK_TEMPLATES:
            return {"data.template": v}  # used only when the model ships no chat template
        if kind == "train" and text(v) in SHIPPED:
            return {"data.template": v}  # replaces the model's own and is saved with the run (qwen3's switch)
        raise Skip(TEMPLATE_NOTE)
    return conv


def datasets(v, ctx):
    """``dataset`` (+ dataset_dir, max_samples, stage: pt) → data.datasets, as ``data check`` reads them too."""
    return {"data.datasets": lf_datasets(ctx)}


def packing(neat: bool):
    """``packing`` / ``neat_packing`` → train.packing. tunesmith's packing is always exact (positions
    restart per row, block-diagonal attention): LLaMA-Factory's neat_packing, which also turns packing on."""
    def conv(v, ctx):
        on = boolean(v)
        kind = ctx.get("stage", "sft")
        if neat and on and kind != "sft":
            raise ValueError("neat packing is for stage: sft only (as in LLaMA-Factory)")
        if kind == "dpo":
            if on:
                raise Skip("preference pairs are trained as padded pairs, never packed")
            return {}
        if kind == "pt":  # plain text: one stream of documents, cut into cutoff_len blocks
            if on:
                return {}
            raise Skip("plain text is always read as one stream cut into cutoff_len blocks")
        if neat:
            return {"train.packing": True} if on else {}
        if not on and ctx.get("neat_packing") is True:
            return {}  # neat_packing turns packing on, as in LLaMA-Factory
        return {"train.packing": on}
    return conv


def warmup_ratio(v, ctx):
    if (ctx.get("warmup_steps") or 0) > 0:  # as in transformers: warmup_steps wins
        raise Skip("warmup_steps is set and wins")
    ratio = number(float, 0, strict=False)(v)
    if ratio >= 1:
        raise ValueError("must be below 1 (a fraction of all steps)")
    return {"train.warmup": ratio}


def positive(key, kind=int):
    """0 or -1 mean "off" in transformers (max_steps, warmup_steps, max_grad_norm)."""
    def conv(v, ctx):
        n = number(kind, -1, strict=False)(v)
        return {key: n} if n > 0 else ({key: None} if key == "train.max_grad_norm" else {})
    return conv


def flag(key, value):
    return lambda v, ctx: {key: value} if boolean(v) else {}


def choice(key, options: dict, why: str | None = None):
    """A value from ``options`` (None: nothing to set); anything else is listed (``why``) or refused."""
    def conv(v, ctx):
        if isinstance(v, (str, bool, int, float)) and v in options:
            return {} if options[v] is None else {key: options[v]}
        if why:
            raise Skip(why)
        raise ValueError(f"must be {' or '.join(map(show, options))}")
    return conv
