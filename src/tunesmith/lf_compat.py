"""LLaMA-Factory YAML → tunesmith config: ``tunesmith train llama3_lora_sft.yaml`` just works.

One table per kind (train / merge / chat): LLaMA-Factory key → (tunesmith key, converter, note).
Every key of the YAML is accounted for: it maps, or it is listed under "no equivalent" with the
reason — never dropped silently. A value that cannot mean the same thing in tunesmith
(``stage: ppo``, ``finetuning_type: freeze``) is a one-line ConfigError naming key and value.
Also here: ms-swift's self-cognition flags for ``tunesmith identity`` (``swift_argv``).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import Field

from .config import Section, _set_dotted, read_yaml
from .fsutil import write_atomic
from .errors import ConfigError

# Keys only LLaMA-Factory configs have at the top level (tunesmith's own top-level keys differ).
LF_MARKERS = {"model_name_or_path", "adapter_name_or_path", "stage", "finetuning_type", "dataset_dir", "export_dir",
              "infer_backend", "lora_rank", "lora_target", "learning_rate", "num_train_epochs",
              "per_device_train_batch_size", "cutoff_len"}
# LLaMA-Factory's (and HF TrainingArguments') defaults where they differ from tunesmith's: a YAML that
# leaves them out trains as it would under LLaMA-Factory. lora_alpha defaults to 2 × lora_rank there.
LF_TRAIN_DEFAULTS = {"lora_rank": 8, "lora_dropout": 0.0, "learning_rate": 5e-5, "lr_scheduler_type": "linear",
                     "warmup_ratio": 0.0, "per_device_train_batch_size": 8, "cutoff_len": 2048}
ORDER = ["model", "adapter", "objective", "method", "out", "output_dir", "lora", "pref", "data", "train", "resume",
         "dtype", "device"]
HEADER = "# tunesmith recipe translated from LLaMA-Factory"
VERB_OF = {"train": "train", "merge": "export merge", "chat": "chat"}
SCHEMA_OF = {"train": "tunesmith.train.config:TrainConfig", "merge": "tunesmith.export.merge:MergeConfig",
             "chat": "tunesmith.infer.chat:ChatConfig"}


class Skip(Exception):
    """Raised by a converter: this value has no tunesmith equivalent (listed with the reason)."""


# ------------------------------------------------------------------------------- converters
def _show(v) -> str:
    return json.dumps(v, ensure_ascii=False, default=str)  # true / "text" / 3, as a YAML reader writes them


def _str(v):
    if not isinstance(v, str) or not v.strip():
        raise ValueError("must be a non-empty string")
    return v.strip()


def _csv(v) -> list[str]:
    """LLaMA-Factory's comma lists ("q_proj,v_proj"); a YAML list is accepted too."""
    items = v if isinstance(v, list) else _str(v).split(",") if isinstance(v, str) else None
    if items is None or not all(isinstance(x, str) for x in items):
        raise ValueError("must be a comma-separated list of names")
    out = [x.strip() for x in items if x.strip()]
    if not out:
        raise ValueError("must name at least one item")
    return out


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _num(kind=float, low=0.0, strict=True):
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


def _stage(v, ctx):
    if v == "pt":  # continued pre-training: the datasets are plain text (see _datasets)
        return {}
    if v == "dpo":  # the loss is pref_loss (LLaMA-Factory's default: sigmoid, i.e. DPO)
        return {"objective": PREF_LOSS.get(ctx.get("pref_loss", "sigmoid"), "dpo")}
    if v != "sft":
        names = {"pt": "pre-training", "rm": "reward modelling", "ppo": "PPO", "kto": "KTO"}
        what = names.get(v) if isinstance(v, str) else None
        raise ValueError(f"{what + ' is' if what else 'this stage is'} not supported by tunesmith train "
                         "(sft, pt and dpo only)")
    return {}


def _pref_loss(v, ctx):
    if v not in PREF_LOSS:
        raise ValueError(f"must be {' or '.join(PREF_LOSS)} (hinge, orpo, kto_pair have no tunesmith objective)")
    if ctx.get("stage") != "dpo":
        raise Skip("read only with stage: dpo")
    return {}  # _stage sets the objective


def _pref(key, conv):
    """A preference setting: used with stage: dpo, listed as unused otherwise."""
    def rule(v, ctx):
        if ctx.get("stage") != "dpo":
            raise Skip("read only with stage: dpo")
        return {key: conv(v)}
    return rule


def _quantization(v, ctx):
    if v is None:
        return {}
    if v != 4 or ctx.get("finetuning_type", "lora") != "lora":
        raise ValueError("only 4 (bitsandbytes NF4) with finetuning_type: lora, i.e. method: qlora")
    return {"method": "qlora"}


def _finetuning(kind):
    def conv(v, ctx):
        if v not in ("lora", "full"):
            raise ValueError("must be lora or full (freeze training has no tunesmith equivalent)")
        if kind == "merge" and v != "lora":
            raise ValueError("merging needs LoRA adapters (finetuning_type: lora)")
        if kind == "train" and v == "lora" and ctx.get("quantization_bit") is not None:
            return {}  # quantization_bit sets method: qlora
        return {"method": v} if kind == "train" else {}
    return conv


def _adapter(kind):
    def conv(v, ctx):
        names = _csv(v)
        if kind != "train":
            return {"adapter": names}
        if len(names) > 1:
            raise ValueError("tunesmith train continues one adapter: merge the others first (tunesmith export merge)")
        return {"adapter": names[0]}
    return conv


TEMPLATE_NOTE = "uses the model's own chat template (from its tokenizer)"


def _template(kind):
    def conv(v, ctx):
        from .models.template import FALLBACK_TEMPLATES

        if kind == "train" and _str(v) in FALLBACK_TEMPLATES:
            return {"data.template": v}  # used only when the model ships no chat template
        raise Skip(TEMPLATE_NOTE)
    return conv


def _datasets(v, ctx):
    folder = ctx.get("dataset_dir", "data")  # LLaMA-Factory's default, relative to the current folder
    if not isinstance(folder, str) or not folder.strip():
        raise ValueError("dataset_dir must be a folder name")
    cap = ctx.get("max_samples")
    cap = {} if cap is None else {"max_samples": _num(int)(cap)}
    if ctx.get("stage") == "pt":  # pre-training reads every dataset as plain text, loss on every token
        cap["format"] = "text"
    return {"data.datasets": [{"dataset_info": folder, "name": name, **cap} for name in _csv(v)]}


def _warmup_ratio(v, ctx):
    if (ctx.get("warmup_steps") or 0) > 0:  # as in transformers: warmup_steps wins
        raise Skip("warmup_steps is set and wins")
    ratio = _num(float, 0, strict=False)(v)
    if ratio >= 1:
        raise ValueError("must be below 1 (a fraction of all steps)")
    return {"train.warmup": ratio}


def _positive(key, kind=int):
    """0 or -1 mean "off" in transformers (max_steps, warmup_steps, max_grad_norm)."""
    def conv(v, ctx):
        n = _num(kind, -1, strict=False)(v)
        return {key: n} if n > 0 else ({key: None} if key == "train.max_grad_norm" else {})
    return conv


def _flag(key, value):
    return lambda v, ctx: {key: value} if _bool(v) else {}


def _choice(key, options: dict, why: str | None = None):
    """A value from ``options`` (None: nothing to set); anything else is listed (``why``) or refused."""
    def conv(v, ctx):
        if isinstance(v, (str, bool, int, float)) and v in options:
            return {} if options[v] is None else {key: options[v]}
        if why:
            raise Skip(why)
        raise ValueError(f"must be {' or '.join(map(_show, options))}")
    return conv


# LLaMA-Factory key → (tunesmith key, converter(value, whole YAML) → {dotted key: value}, note)
COMMON: dict[str, tuple[str, Callable, str]] = {
    "model_name_or_path": ("model", to("model", _str), ""),
    "trust_remote_code": ("trust_remote_code", to("trust_remote_code", _bool), ""),
    "cache_dir": ign("models come from the Hugging Face cache", lambda v: v is None),
    "flash_attn": ign("attention is chosen by transformers", lambda v: v in ("auto", None)),
    "quantization_bit": ign("no quantized loading (train: 4 → method: qlora)", lambda v: v is None),
    "use_unsloth": ign("no Unsloth kernels", lambda v: not v),
    "rope_scaling": ign("the model's own config.json decides", lambda v: v is None),
}
TRAIN: dict[str, tuple[str, Callable, str]] = {
    "adapter_name_or_path": ("adapter", _adapter("train"), "one adapter, continued"),
    "stage": ("objective", _stage, "sft; pt (datasets read as plain text); dpo (objective from pref_loss); rm, ppo, "
                                   "kto are refused"),
    "pref_loss": ("objective", _pref_loss, "sigmoid → dpo, ipo → ipo, simpo → simpo"),
    "pref_beta": ("pref.beta", _pref("pref.beta", _num(float)), "default 0.1"),
    "pref_ftx": ("pref.sft_weight", _pref("pref.sft_weight", _num(float, 0, strict=False)), "default 0"),
    "simpo_gamma": ("pref.gamma", _pref("pref.gamma", _num(float, 0, strict=False)), "default 0.5"),
    "dpo_label_smoothing": ("pref.label_smoothing", _pref("pref.label_smoothing", _num(float, 0, strict=False)),
                            "cDPO; below 0.5"),
    "ref_model": ign("the reference is the model with the adapter off (lora) or a frozen copy (full)",
                     lambda v: v is None),
    "pref_bco_weight": ign("no BCO term", lambda v: not v),
    "quantization_bit": ("method", _quantization, "4 with lora → qlora (CUDA + bitsandbytes)"),
    "do_train": ("(the verb)", _choice("", {True: None}, None), "must be true (eval/predict: other verbs)"),
    "finetuning_type": ("method", _finetuning("train"), "lora or full; freeze is refused"),
    "lora_rank": ("lora.r", to("lora.r", _num(int)), "LLaMA-Factory default 8"),
    "lora_alpha": ("lora.alpha", to("lora.alpha", _num(int)), "LLaMA-Factory default 2 × lora_rank"),
    "lora_dropout": ("lora.dropout", to("lora.dropout", _num(float, 0, strict=False)), "LLaMA-Factory default 0"),
    "lora_target": ("lora.target_modules", lambda v, ctx: {"lora.target_modules": [
        "all-linear" if n == "all" else n for n in _csv(v)]}, "comma list; all → all-linear"),
    "additional_target": ("lora.modules_to_save", to("lora.modules_to_save", _csv), "comma list"),
    "use_dora": ("lora.use_dora", to("lora.use_dora", _bool), ""),
    "use_rslora": ("lora.use_rslora", to("lora.use_rslora", _bool), ""),
    "dataset": ("data.datasets", _datasets, "comma list: one {dataset_info: dataset_dir, name} each"),
    "dataset_dir": ("data.datasets[].dataset_info", lambda v, ctx: {}, "default data (relative to the current folder)"),
    "max_samples": ("data.datasets[].max_samples", lambda v, ctx: {}, "the first N rows of each dataset"),
    "template": ("data.template", _template("train"), "chatml/alpaca only (fallbacks); else " + TEMPLATE_NOTE),
    "cutoff_len": ("data.cutoff_len", to("data.cutoff_len", _num(int)), "LLaMA-Factory default 2048"),
    "val_size": ("data.val_size", to("data.val_size", _num(float, 0, strict=False)), ""),
    "mask_history": ("data.mask_history", to("data.mask_history", _bool), ""),
    "preprocessing_num_workers": ("data.num_workers", to("data.num_workers", _num(int)), ""),
    "learning_rate": ("train.lr", to("train.lr", _num(float)), "transformers default 5e-5"),
    "num_train_epochs": ("train.epochs", to("train.epochs", _num(float)), ""),
    "max_steps": ("train.max_steps", _positive("train.max_steps"), "-1 = unset"),
    "per_device_train_batch_size": ("train.batch_size", to("train.batch_size", _num(int)), "default 8"),
    "gradient_accumulation_steps": ("train.grad_accum", to("train.grad_accum", _num(int)), ""),
    "lr_scheduler_type": ("train.scheduler", _choice("train.scheduler", {
        "cosine": "cosine", "linear": "linear", "constant": "constant", "constant_with_warmup": "constant"},
        "tunesmith has cosine, linear and constant: kept its default (cosine)"), "default linear"),
    "warmup_ratio": ("train.warmup", _warmup_ratio, "a fraction below 1; default 0"),
    "warmup_steps": ("train.warmup", _positive("train.warmup"), "a step count; wins over warmup_ratio"),
    "weight_decay": ("train.weight_decay", to("train.weight_decay", _num(float, 0, strict=False)), ""),
    "max_grad_norm": ("train.max_grad_norm", _positive("train.max_grad_norm", float), "0 = no clipping"),
    **{k: ("train.betas", lambda v, ctx: {"train.betas": [_num(float)(ctx.get("adam_beta1", 0.9)),
                                                        _num(float)(ctx.get("adam_beta2", 0.999))]}, "")
       for k in ("adam_beta1", "adam_beta2")},
    "optim": ("—", _choice("", {k: None for k in ("adamw_torch", "adamw_hf", "adamw_torch_fused")},
                           "tunesmith trains with torch's AdamW"), "adamw_torch only"),
    "gradient_checkpointing": ("train.gradient_checkpointing", to("train.gradient_checkpointing", _bool), ""),
    "disable_gradient_checkpointing": ("train.gradient_checkpointing", to("train.gradient_checkpointing",
                                                                          lambda v: not _bool(v)), ""),
    "bf16": ("dtype", _flag("dtype", "bf16"), "true → bf16"),
    "pure_bf16": ("dtype", _flag("dtype", "bf16"), "true → bf16"),
    "fp16": ("dtype", _flag("dtype", "fp16"), "true → fp16"),
    "seed": ("train.seed, data.seed", lambda v, ctx: dict.fromkeys(("train.seed", "data.seed"),
                                                                   _num(int, 0, strict=False)(v)), ""),
    "logging_steps": ("train.log_every", to("train.log_every", _num(int)), ""),
    "save_steps": ("train.save_every", to("train.save_every", _num(int)), "whole steps only"),
    "eval_steps": ("train.eval_every", to("train.eval_every", _num(int)), "whole steps only"),
    "save_total_limit": ("train.keep_last", to("train.keep_last", _num(int)), ""),
    "output_dir": ("output_dir", to("output_dir", _str), ""),
    "resume_from_checkpoint": ("resume", lambda v, ctx: {"resume": True} if v else {},
                               "continues output_dir's last checkpoint"),
    "plot_loss": ign("not needed in tunesmith: the loss curve (loss.png) is always written"),
    "overwrite_cache": ign("not needed in tunesmith: rows are rendered fresh each run"),
    "overwrite_output_dir": ign("tunesmith never deletes a run: a used output_dir is refused (choose another, "
                                "or resume)", lambda v: not v),
    "ddp_timeout": ign("not needed in tunesmith: torch.distributed's default timeout"),
    "dataloader_num_workers": ign("not needed in tunesmith: rows are rendered before training (data.num_workers)"),
    "report_to": ign("tunesmith logs to the run folder only (metrics.jsonl, TensorBoard events, loss.png)",
                     lambda v: v in (None, "none", [], ["none"])),
    "deepspeed": ign("no DeepSpeed: use nproc=N (data-parallel through accelerate)", lambda v: not v),
    "train_on_prompt": ign("tunesmith trains on the answers only", lambda v: not v),
    "packing": ign("rows are never packed", lambda v: not v),
    "eval_strategy": ign("evaluation runs every eval_steps", lambda v: v in ("steps", "no")),
    "save_strategy": ign("checkpoints every save_steps and at the end", lambda v: v == "steps"),
    "per_device_eval_batch_size": ign("evaluation uses train.batch_size"),
    "run_name": ign("the run is named by output_dir"),
}
MERGE: dict[str, tuple[str, Callable, str]] = {
    "adapter_name_or_path": ("adapter", _adapter("merge"), "comma list, merged in order"),
    "finetuning_type": ("—", _finetuning("merge"), "must be lora"),
    "template": ("—", _template("merge"), TEMPLATE_NOTE),
    "export_dir": ("out", to("out", _str), ""),
    "export_size": ("shard_size", lambda v, ctx: {"shard_size": f"{_num(int)(v)}GB"}, "whole GB"),
    "export_device": ("device", _choice("device", {"cpu": "cpu", "auto": "auto"}), "cpu or auto"),
    "export_legacy_format": ign("tunesmith always writes safetensors", lambda v: v is False),
}
CHAT: dict[str, tuple[str, Callable, str]] = {
    "adapter_name_or_path": ("adapter", _adapter("chat"), "comma list, applied in order"),
    "finetuning_type": ("—", _finetuning("chat"), "lora or full"),
    "template": ("—", _template("chat"), TEMPLATE_NOTE),
    "infer_backend": ign("tunesmith chat runs on transformers", lambda v: v in ("huggingface", "hf")),
    "infer_dtype": ("dtype", _choice("dtype", {"auto": None, "float16": "fp16", "bfloat16": "bf16",
                                               "float32": "fp32"}), ""),
    "default_system": ("system", to("system", _str), ""),
    "max_new_tokens": ("gen.max_new_tokens", to("gen.max_new_tokens", _num(int)), ""),
    "temperature": ("gen.temperature", to("gen.temperature", _num(float, 0, strict=False)), ""),
    "top_p": ("gen.top_p", to("gen.top_p", _num(float)), ""),
    "top_k": ("gen.top_k", to("gen.top_k", _num(int, 0, strict=False)), ""),
    "repetition_penalty": ("gen.repetition_penalty", to("gen.repetition_penalty", _num(float)), ""),
    "do_sample": ("gen.temperature", _choice("gen.temperature", {True: None, False: 0.0}), "false → 0 (greedy)"),
    "enable_thinking": ("gen.enable_thinking", to("gen.enable_thinking", _bool), ""),
}
TABLES = {"train": {**COMMON, **TRAIN}, "merge": {**COMMON, **MERGE}, "chat": {**COMMON, **CHAT}}


# ------------------------------------------------------------------------------- translation
def is_lf(data: dict) -> bool:
    return bool(LF_MARKERS & set(data)) or isinstance(data.get("dataset"), str)


def kind_of(data: dict) -> str:
    """export_dir → merge; a dataset or a training stage → train; otherwise an inference config."""
    if "export_dir" in data:
        return "merge"
    if any(k in data for k in ("dataset", "stage", "do_train", "learning_rate", "num_train_epochs", "max_steps")):
        return "train"
    return "chat"


@dataclass
class Translation:
    source: str
    kind: str
    values: dict[str, Any]                               # tunesmith dotted key → value
    unmapped: list[tuple[str, Any, str]] = field(default_factory=list)   # (key, value, why)
    defaults: list[str] = field(default_factory=list)    # LLaMA-Factory defaults applied

    def recipe(self) -> dict:
        out: dict = {}
        for k in sorted(self.values, key=lambda k: ORDER.index(k.split(".")[0]) if k.split(".")[0] in ORDER else 99):
            _set_dotted(out, k, self.values[k])
        return out

    def render(self) -> str:
        """The translated recipe as YAML, with every unmapped key in the comments above it."""
        lines = [f"{HEADER} ({self.source}; run it with `tunesmith {VERB_OF[self.kind]}`)"]
        if self.defaults:
            lines.append(f"# LLaMA-Factory defaults applied: {', '.join(self.defaults)}")
        if self.unmapped:
            lines.append("# no equivalent in tunesmith:")
            lines += [f"#   {k} ({_show(v)}) — {why}" for k, v, why in self.unmapped]
        body = yaml.safe_dump(self.recipe(), sort_keys=False, allow_unicode=True, default_flow_style=False)
        return "\n".join(lines) + "\n" + body


def translate(data: dict, source: str = "config", kind: str | None = None) -> Translation:
    """One LLaMA-Factory config (parsed YAML) → tunesmith dotted values. Raises ConfigError."""
    kind = kind or kind_of(data)
    table = TABLES[kind]
    ctx = dict(data)
    applied = []
    if kind == "train":
        lora = ctx.get("finetuning_type", "lora") == "lora"  # LoRA defaults mean nothing for a full fine-tune
        for k, v in LF_TRAIN_DEFAULTS.items():
            skip = k.startswith("lora_") and not lora or k == "warmup_ratio" and "warmup_steps" in ctx
            if k not in ctx and not skip:
                ctx[k] = v
                applied.append(f"{k}={v}")
        if lora and "lora_alpha" not in ctx:
            rank = ctx["lora_rank"]
            ctx["lora_alpha"] = rank * 2 if isinstance(rank, int) and not isinstance(rank, bool) else rank
            applied.append(f"lora_alpha={ctx['lora_alpha']} (2 × lora_rank)")
    tr = Translation(source, kind, {}, defaults=applied)
    for key, value in ctx.items():
        rule = table.get(key)
        if rule is None:
            tr.unmapped.append((key, value, "not in tunesmith's LLaMA-Factory table (ignored)"))
            continue
        try:
            tr.values.update(rule[1](value, ctx))
        except Skip as e:
            tr.unmapped.append((key, value, str(e)))
        except ValueError as e:
            raise ConfigError(f"{source}: {key}: {_show(value)}: {e}") from None
    if kind == "merge" and "adapter" not in tr.values:
        raise ConfigError(f"{source}: adapter_name_or_path is missing: tunesmith export merge needs an adapter")
    return tr


def translate_file(path: str, verb: str | None = None) -> Translation | None:
    """The translation of ``path`` if it is a LLaMA-Factory YAML, else None. ``verb`` (train,
    export merge, chat) must match the YAML's kind."""
    data = read_yaml(path)
    if not is_lf(data):
        return None
    tr = translate(data, path)
    if verb and VERB_OF[tr.kind] != verb:
        raise ConfigError(f"{path} is a LLaMA-Factory {tr.kind} config: run it with `tunesmith {VERB_OF[tr.kind]} "
                          f"{path}`")
    return tr


def run_translated(tr: Translation, cfg, target: Callable) -> int:
    """Show the translation, run the verb, and keep both YAMLs in a training run's folder."""
    print(tr.render() + "---", flush=True)
    if tr.kind != "train":
        return int(target(cfg) or 0)
    if cfg.output_dir is None:  # name the folder now, so the YAMLs can go there
        from .fsutil import default_run_dir

        cfg = cfg.model_copy(update={"output_dir": default_run_dir()})
    run = Path(cfg.output_dir)
    existed, ran = run.is_dir(), False
    try:
        code, ran = int(target(cfg) or 0), True
        return code
    finally:
        # A run that started (or resumed) keeps its recipe; a refused one leaves nothing, and a
        # finished run someone pointed at by mistake keeps the YAMLs it had.
        if run.is_dir() and (ran or not existed):
            write_atomic(run / "lf_translation.yaml", tr.render())
            write_atomic(run / "lf_original.yaml", Path(tr.source).read_bytes())


# ------------------------------------------------------------------------------- convert-recipe
class ConvertRecipeConfig(Section):
    path: str = Field(..., description="LLaMA-Factory YAML (train, merge or inference) to translate")
    out: str | None = Field(None, description="also write the tunesmith recipe to this file")


def convert_recipe(cfg: ConvertRecipeConfig) -> int:
    tr = translate_file(cfg.path)
    if tr is None:
        raise ConfigError(f"{cfg.path}: no LLaMA-Factory key (model_name_or_path, stage, dataset …): "
                          "nothing to convert")
    import importlib

    from .config import validate

    mod, _, name = SCHEMA_OF[tr.kind].partition(":")  # the output must be a recipe tunesmith accepts
    validate(getattr(importlib.import_module(mod), name), tr.recipe(), f" (translated from {cfg.path})")
    text = tr.render()
    if cfg.out:
        out = Path(cfg.out)
        if out.exists() and not out.read_text(encoding="utf-8", errors="replace").startswith(HEADER):
            raise ConfigError(f"{out} exists and was not written by tunesmith convert-recipe: choose another --out")
        write_atomic(out, text)
    sys.stdout.write(text)
    if cfg.out:
        print(f"# written to {cfg.out}")
    return 0


def doc_table() -> str:
    """The key table of docs/llamafactory.md, made from the tables above (a test keeps them equal)."""
    rows = ["| LLaMA-Factory key | config | tunesmith key | note |", "|---|---|---|---|"]
    for kind, table in (("all", COMMON), ("train", TRAIN), ("merge", MERGE), ("chat", CHAT)):
        rows += [f"| `{k}` | {kind} | {'—' if t == '—' else f'`{t}`'} | {note} |"
                 for k, (t, _, note) in table.items()]
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------------------- ms-swift flags
SWIFT_PAIRS = {"--model_name": "name", "--model_author": "author"}


def swift_argv(argv: list[str]) -> list[str]:
    """ms-swift's self-cognition flags → tunesmith identity overrides: ``--model_name 小黄 'Xiao
    Huang'`` (Chinese, then English), ``--model_author 魔搭 ModelScope``, ``--self_cognition_sample N``."""
    out, i = [], 0
    while i < len(argv):
        flag, eq, inline = argv[i].partition("=")
        if flag in SWIFT_PAIRS:
            key = SWIFT_PAIRS[flag]
            words = [inline] if eq else []
            j = i + 1
            while not eq and j < len(argv) and len(words) < 2 and not argv[j].startswith("-") \
                    and "=" not in argv[j]:
                words.append(argv[j])
                j += 1
            if not words:
                raise ConfigError(f"{flag} needs a value: {flag} <Chinese> <English> (or one value for both)")
            out += [f"names.{key}={words[0]}"] if len(words) == 1 else \
                [f"names.{key}_zh={words[0]}", f"names.{key}_en={words[1]}"]
            i = j
        elif flag == "--self_cognition_sample":
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if not value:
                raise ConfigError("--self_cognition_sample needs a number of rows")
            out.append(f"identity_samples={value}")
            i += 1 if eq else 2
        else:
            out.append(argv[i])
            i += 1
    return out
