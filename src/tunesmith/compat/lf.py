"""LLaMA-Factory YAML → tunesmith config: ``tunesmith train llama3_lora_sft.yaml`` just works.

One table per kind (train / merge / chat): LLaMA-Factory key → (tunesmith key, converter, note);
the converters are in ``lf_values.py``. Every key of the YAML is accounted for: it maps, or it is
listed under "no equivalent" with the reason — never dropped silently. A value that cannot mean
the same thing in tunesmith (``stage: ppo``, ``finetuning_type: freeze``) is a one-line
ConfigError naming key and value.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from ..config import _set_dotted, read_yaml
from ..errors import ConfigError
from .lf_values import (TEMPLATE_NOTE, Skip, adapter, boolean, choice, datasets, finetuning, flag, ign, names,
                        number, packing, positive, pref, pref_loss, quantization, show, stage, template, text, to,
                        warmup_ratio)

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


# LLaMA-Factory key → (tunesmith key, converter(value, whole YAML) → {dotted key: value}, note)
COMMON: dict[str, tuple[str, Callable, str]] = {
    "model_name_or_path": ("model", to("model", text), ""),
    "trust_remote_code": ("trust_remote_code", to("trust_remote_code", boolean), ""),
    "cache_dir": ign("models come from the Hugging Face cache", lambda v: v is None),
    "flash_attn": ign("attention is chosen by transformers", lambda v: v in ("auto", None)),
    "quantization_bit": ign("no quantized loading (train: 4 → method: qlora)", lambda v: v is None),
    "use_unsloth": ign("no Unsloth kernels", lambda v: not v),
    "rope_scaling": ign("the model's own config.json decides", lambda v: v is None),
}
TRAIN: dict[str, tuple[str, Callable, str]] = {
    "adapter_name_or_path": ("adapter", adapter("train"), "one adapter, continued"),
    "stage": ("objective", stage, "sft; pt (datasets read as plain text); dpo (objective from pref_loss); rm, ppo, "
                                  "kto are refused"),
    "pref_loss": ("objective", pref_loss, "sigmoid → dpo, ipo → ipo, simpo → simpo"),
    "pref_beta": ("pref.beta", pref("pref.beta", number(float)), "default 0.1"),
    "pref_ftx": ("pref.sft_weight", pref("pref.sft_weight", number(float, 0, strict=False)), "default 0"),
    "simpo_gamma": ("pref.gamma", pref("pref.gamma", number(float, 0, strict=False)), "default 0.5"),
    "dpo_label_smoothing": ("pref.label_smoothing", pref("pref.label_smoothing", number(float, 0, strict=False)),
                            "cDPO; below 0.5"),
    "ref_model": ign("the reference is the model with the adapter off (lora) or a frozen copy (full)",
                     lambda v: v is None),
    "pref_bco_weight": ign("no BCO term", lambda v: not v),
    "quantization_bit": ("method", quantization, "4 with lora → qlora (CUDA + bitsandbytes)"),
    "do_train": ("(the verb)", choice("", {True: None}, None), "must be true (eval/predict: other verbs)"),
    "finetuning_type": ("method", finetuning("train"), "lora or full; freeze is refused"),
    "lora_rank": ("lora.r", to("lora.r", number(int)), "LLaMA-Factory default 8"),
    "lora_alpha": ("lora.alpha", to("lora.alpha", number(int)), "LLaMA-Factory default 2 × lora_rank"),
    "lora_dropout": ("lora.dropout", to("lora.dropout", number(float, 0, strict=False)), "LLaMA-Factory default 0"),
    "lora_target": ("lora.target_modules", lambda v, ctx: {"lora.target_modules": [
        "all-linear" if n == "all" else n for n in names(v)]}, "comma list; all → all-linear"),
    "additional_target": ("lora.modules_to_save", to("lora.modules_to_save", names), "comma list"),
    "use_dora": ("lora.use_dora", to("lora.use_dora", boolean), ""),
    "use_rslora": ("lora.use_rslora", to("lora.use_rslora", boolean), ""),
    "dataset": ("data.datasets", datasets, "comma list: one {dataset_info: dataset_dir, name} each"),
    "dataset_dir": ("data.datasets[].dataset_info", lambda v, ctx: {}, "default data (relative to the current folder)"),
    "max_samples": ("data.datasets[].max_samples", lambda v, ctx: {}, "the first N rows of each dataset"),
    "template": ("data.template", template("train"),
                 "chatml/alpaca (fallbacks), qwen3 (replaces the model's own); else " + TEMPLATE_NOTE),
    "cutoff_len": ("data.cutoff_len", to("data.cutoff_len", number(int)), "LLaMA-Factory default 2048"),
    "val_size": ("data.val_size", to("data.val_size", number(float, 0, strict=False)), ""),
    "mask_history": ("data.mask_history", to("data.mask_history", boolean), ""),
    "preprocessing_num_workers": ("data.num_workers", to("data.num_workers", number(int)), ""),
    "learning_rate": ("train.lr", to("train.lr", number(float)), "transformers default 5e-5"),
    "num_train_epochs": ("train.epochs", to("train.epochs", number(float)), ""),
    "max_steps": ("train.max_steps", positive("train.max_steps"), "-1 = unset"),
    "per_device_train_batch_size": ("train.batch_size", to("train.batch_size", number(int)), "default 8"),
    "gradient_accumulation_steps": ("train.grad_accum", to("train.grad_accum", number(int)), ""),
    "lr_scheduler_type": ("train.scheduler", choice("train.scheduler", {
        "cosine": "cosine", "linear": "linear", "constant": "constant", "constant_with_warmup": "constant"},
        "tunesmith has cosine, linear and constant: kept its default (cosine)"), "default linear"),
    "warmup_ratio": ("train.warmup", warmup_ratio, "a fraction below 1; default 0"),
    "warmup_steps": ("train.warmup", positive("train.warmup"), "a step count; wins over warmup_ratio"),
    "weight_decay": ("train.weight_decay", to("train.weight_decay", number(float, 0, strict=False)), ""),
    "max_grad_norm": ("train.max_grad_norm", positive("train.max_grad_norm", float), "0 = no clipping"),
    **{k: ("train.betas", lambda v, ctx: {"train.betas": [number(float)(ctx.get("adam_beta1", 0.9)),
                                                          number(float)(ctx.get("adam_beta2", 0.999))]}, "")
       for k in ("adam_beta1", "adam_beta2")},
    "optim": ("—", choice("", {k: None for k in ("adamw_torch", "adamw_hf", "adamw_torch_fused")},
                          "tunesmith trains with torch's AdamW"), "adamw_torch only"),
    "gradient_checkpointing": ("train.gradient_checkpointing", to("train.gradient_checkpointing", boolean), ""),
    "disable_gradient_checkpointing": ("train.gradient_checkpointing", to("train.gradient_checkpointing",
                                                                          lambda v: not boolean(v)), ""),
    "use_unsloth_gc": ("train.gradient_checkpointing", flag("train.gradient_checkpointing", "offload"),
                       "true → offload (each checkpointed layer's input waits in CPU memory)"),
    "bf16": ("dtype", flag("dtype", "bf16"), "true → bf16"),
    "pure_bf16": ("dtype", flag("dtype", "bf16"), "true → bf16"),
    "fp16": ("dtype", flag("dtype", "fp16"), "true → fp16"),
    "seed": ("train.seed, data.seed", lambda v, ctx: dict.fromkeys(("train.seed", "data.seed"),
                                                                   number(int, 0, strict=False)(v)), ""),
    "logging_steps": ("train.log_every", to("train.log_every", number(int)), ""),
    "save_steps": ("train.save_every", to("train.save_every", number(int)), "whole steps only"),
    "eval_steps": ("train.eval_every", to("train.eval_every", number(int)), "whole steps only"),
    "save_total_limit": ("train.keep_last", to("train.keep_last", number(int)), ""),
    "output_dir": ("output_dir", to("output_dir", text), ""),
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
    "packing": ("train.packing", packing(neat=False), "true → packed, exactly (as neat_packing); false → padded "
                                                      "rows; plain text (pt) is always one stream"),
    "neat_packing": ("train.packing", packing(neat=True), "true → packed: positions restart per row, "
                                                          "block-diagonal attention; sft only"),
    "eval_strategy": ign("evaluation runs every eval_steps", lambda v: v in ("steps", "no")),
    "save_strategy": ign("checkpoints every save_steps and at the end", lambda v: v == "steps"),
    "per_device_eval_batch_size": ign("evaluation uses train.batch_size"),
    "run_name": ign("the run is named by output_dir"),
}
MERGE: dict[str, tuple[str, Callable, str]] = {
    "adapter_name_or_path": ("adapter", adapter("merge"), "comma list, merged in order"),
    "finetuning_type": ("—", finetuning("merge"), "must be lora"),
    "template": ("—", template("merge"), TEMPLATE_NOTE),
    "export_dir": ("out", to("out", text), ""),
    "export_size": ("shard_size", lambda v, ctx: {"shard_size": f"{number(int)(v)}GB"}, "whole GB"),
    "export_device": ("device", choice("device", {"cpu": "cpu", "auto": "auto"}), "cpu or auto"),
    "export_legacy_format": ign("tunesmith always writes safetensors", lambda v: v is False),
}
CHAT: dict[str, tuple[str, Callable, str]] = {
    "adapter_name_or_path": ("adapter", adapter("chat"), "comma list, applied in order"),
    "finetuning_type": ("—", finetuning("chat"), "lora or full"),
    "template": ("—", template("chat"), TEMPLATE_NOTE),
    "infer_backend": ign("tunesmith chat runs on transformers", lambda v: v in ("huggingface", "hf")),
    "infer_dtype": ("dtype", choice("dtype", {"auto": None, "float16": "fp16", "bfloat16": "bf16",
                                              "float32": "fp32"}), ""),
    "default_system": ("system", to("system", text), ""),
    "max_new_tokens": ("gen.max_new_tokens", to("gen.max_new_tokens", number(int)), ""),
    "temperature": ("gen.temperature", to("gen.temperature", number(float, 0, strict=False)), ""),
    "top_p": ("gen.top_p", to("gen.top_p", number(float)), ""),
    "top_k": ("gen.top_k", to("gen.top_k", number(int, 0, strict=False)), ""),
    "repetition_penalty": ("gen.repetition_penalty", to("gen.repetition_penalty", number(float)), ""),
    "do_sample": ("gen.temperature", choice("gen.temperature", {True: None, False: 0.0}), "false → 0 (greedy)"),
    "enable_thinking": ("gen.enable_thinking", to("gen.enable_thinking", boolean), ""),
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
            lines += [f"#   {k} ({show(v)}) — {why}" for k, v, why in self.unmapped]
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
            raise ConfigError(f"{source}: {key}: {show(value)}: {e}") from None
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
