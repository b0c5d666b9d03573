"""``tunesmith identity``: give a model a new name and author, and prove it took.

    synth (identity rows, placeholders filled) → replay (the base answers general prompts)
    → train (LoRA on both) → eval (held-out probes, base vs tuned) → report

One run folder: the adapter and training logs at the top (a normal training run), the
synthesized data under ``data/``, the before/after report under ``eval/``.
"""
from __future__ import annotations

import json
import time
from copy import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..config import ModelSection, Section
from ..fsutil import save_config, write_atomic
from ..data.config import DataConfig, DatasetConfig
from ..errors import UserError
from ..eval.identity import EvalIdentityConfig
from ..manifest import read_manifest, write_manifest
from ..synth.replay_verb import ReplayConfig
from ..train.config import LoopSettings, LoraSettings, TrainConfig, lift_train_dtype
from ..data.names import LANGS, IdentityNames, Lang
from ..synth.identity import filled_rows, identity_messages, user_identity_messages


def _like(schema: type[BaseModel], name: str, **change: Any):
    """The field ``name`` of another verb's schema (its type checks, default and description),
    with ``change`` (e.g. another default): the job shares the verb's field instead of a copy."""
    info = copy(schema.model_fields[name])
    for key, value in change.items():
        setattr(info, key, value)
    return info


class ReplaySettings(Section):
    enabled: bool = Field(True, description="mix in the base model's own answers to general prompts")
    prompts: int | None = Field(None, gt=0, description="how many shipped prompts the base answers, drawn with "
                                                        "train.seed (default: all)")
    samples: int | None = Field(None, gt=0, description="replay rows in the training mix (default: every answer "
                                                        "`upsample` times)")
    upsample: int = Field(2, gt=0, description="each kept answer this many times when samples is unset (measured: "
                                               "2 kept the leak in en and zh at most 4 in 100 where 1 leaked 18 in 100 in zh)")
    max_new_tokens: int = _like(ReplayConfig, "max_new_tokens")  # as `tunesmith synth replay`
    batch_size: int = _like(ReplayConfig, "batch_size")


class IdentityLoopSettings(LoopSettings):
    """The train verb's loop settings with the identity journey's defaults: the best setting
    measured on SmolLM2 (docs/benchmarks.md, identity defaults sweep); the old 3 epochs, all 207
    rows and 160-token replay leaked the identity into ~20% of general answers. Help, validation
    and the run all read these defaults from here."""

    lr: float = _like(LoopSettings, "lr", default=1e-3)
    epochs: float = _like(LoopSettings, "epochs", default=2.0)
    batch_size: int = _like(LoopSettings, "batch_size", default=8)
    warmup: float = _like(LoopSettings, "warmup", default=0.05)


class IdentityDataSettings(DataConfig):
    """The train verb's data section: the job adds the identity rows and the replay rows to
    ``datasets``, your own data."""

    datasets: list[DatasetConfig] = _like(DataConfig, "datasets", description=(
        "your own general data to mix in, placeholders {{NAME}}/{{AUTHOR}} filled (the job adds the identity "
        "and replay rows); " + DataConfig.model_fields["datasets"].description))
    cutoff_len: int = _like(DataConfig, "cutoff_len", default=512, description="tokens per row (identity and replay "
                            "rows are short); longer rows are cut from the end")
    seed: int | None = Field(None, description="seed for sampling, the validation split and the shuffle (default: "
                                               "train.seed)")


# The eval identity verb's settings, less what the job fills in (the model, adapter, names,
# languages, folder; the model section and output policy its base classes bring): a field
# added to that verb appears here too.
_JOB_FILLS = {"base", "names", "name", "author", "languages", "out"}
_INHERITED = {k for base in EvalIdentityConfig.__mro__[1:] for k in getattr(base, "model_fields", {})}
IdentityEvalSettings = create_model(
    "IdentityEvalSettings", __base__=Section, __doc__="`tunesmith eval identity`'s settings for the job's evaluation",
    **{k: (f.annotation, _like(EvalIdentityConfig, k)) for k, f in EvalIdentityConfig.model_fields.items()
       if k not in _JOB_FILLS | _INHERITED})

# Of the shipped identity rows, this share is trained on (150 of 207): fewer identity rows leak less.
SHIPPED_IDENTITY_SHARE = 150 / 207
# Old spellings (one release of each) → the one spelling: the key the train / eval identity verbs use.
OLD_SPELLINGS = {"cutoff_len": "data.cutoff_len", "extra_data": "data.datasets",
                 "eval_max_new_tokens": "eval_identity.max_new_tokens"}


def _deprecated(new: str):
    return Field(None, description=f"deprecated spelling of {new} (still read from old recipes)")


class IdentityJobConfig(ModelSection):
    name: str | None = Field(None, description="the new name, every language (ms-swift: --model_name NAME_ZH "
                                               "NAME_EN sets names.name_zh and names.name_en)")
    author: str | None = Field(None, description="the new author / creator, every language (ms-swift: "
                                                 "--model_author AUTHOR_ZH AUTHOR_EN sets names.author_zh and "
                                                 "names.author_en)")
    names: IdentityNames = Field(default_factory=IdentityNames,
                                 description="per-language values: names.name_zh, names.author_en …")
    output_dir: str | None = Field(None, description="run folder (default: runs/<recipe name>-<time>, or runs/identity-<time>)")
    languages: list[Lang] = Field(default_factory=lambda: list(LANGS), description="identity languages: en, zh")
    identity_samples: int | None = Field(None, gt=0, description="identity rows in the mix, upsampled by whole "
                                                                 "repetitions (default: 150 of the 207 shipped "
                                                                 "rows; your identity_data: each row once) "
                                                                 "(ms-swift: --self_cognition_sample N)")
    replay: ReplaySettings = Field(default_factory=ReplaySettings, description="forgetting guard: self-distilled replay")
    identity_data: str | None = Field(None, description="a file, folder, or DIR:name with your own identity rows; "
                                                        "placeholders filled; replaces the shipped rows")
    data: IdentityDataSettings = Field(default_factory=IdentityDataSettings,
                                       description="datasets, mixing and rendering (as `tunesmith train`)")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings (as `tunesmith train`)")
    train: IdentityLoopSettings = Field(default_factory=IdentityLoopSettings,
                                        description="optimizer, schedule and loop (as `tunesmith train`, with the "
                                                    "identity defaults)")
    eval: bool = Field(True, description="run the before/after identity evaluation")
    eval_identity: IdentityEvalSettings = Field(default_factory=IdentityEvalSettings,
                                                description="the evaluation's settings (as `tunesmith eval identity`)")
    resume: bool | Literal["auto"] = _like(TrainConfig, "resume", default="auto")
    nproc: int = _like(TrainConfig, "nproc")
    progress: bool = _like(TrainConfig, "progress")
    cutoff_len: int | None = _deprecated("data.cutoff_len")
    extra_data: list[DatasetConfig] | None = _deprecated("data.datasets")
    eval_max_new_tokens: int | None = _deprecated("eval_identity.max_new_tokens")

    _lift_dtype = model_validator(mode="before")(lift_train_dtype)  # old recipes' train.dtype

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, data):
        """``cutoff_len: 512`` (the old spelling) reads as ``data.cutoff_len: 512``, and so on
        (OLD_SPELLINGS); both spellings with different values are refused."""
        if not isinstance(data, dict):
            return data
        for old, new in OLD_SPELLINGS.items():
            value = data.get(old)
            if value is None:
                continue
            section, key = new.split(".")
            current = data.get(section) if data.get(section) is not None else {}
            if isinstance(current, BaseModel):
                current = current.model_dump(exclude_unset=True)
            if isinstance(current, dict) and current.get(key) in (None, [], value):
                data = {**data, old: None, section: {**current, key: value}}
        return data  # an old spelling left set disagrees with the new one: _both_set names it

    @field_validator(*OLD_SPELLINGS, mode="after")
    @classmethod
    def _both_set(cls, value, info):
        if value is not None:
            new = OLD_SPELLINGS[info.field_name]
            raise PydanticCustomError("old_spelling", "the old spelling of {new}, which is set too: set {new} only",
                                      {"new": new})
        return value

    def identity(self) -> IdentityNames:
        return self.names.with_shortcuts(self.name, self.author, "identity")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _read_extra(cfg: IdentityJobConfig, names: IdentityNames) -> list[list[dict]]:
    """Your own datasets (data.datasets) as messages rows, placeholders filled; a dataset given
    only ``name:`` is looked up in data.dataset_dir, as in `tunesmith train`. Raises UserError."""
    from ..data.load import resolve

    return [filled_rows(resolve(ds, cfg.data.dataset_dir, f"data.datasets[{i}]"), names, f"data.datasets[{i}]")
            for i, ds in enumerate(cfg.data.datasets)]


def identity(cfg: IdentityJobConfig) -> int:
    from ..eval.identity import print_table, report_markdown, run_eval
    from ..models import load_tokenizer, resolve_model
    from ..models.template import ensure_chat_template, supports_thinking
    from ..train import train

    t0 = time.time()
    names = cfg.identity()
    from ..fsutil import check_writable_dir  # an unwritable output_dir: refused before any load
    from ..registry import run_folder

    check_writable_dir(cfg.output_dir or "runs", "output_dir")
    tok = load_tokenizer(resolve_model(cfg.model), trust_remote_code=cfg.trust_remote_code)
    if cfg.data.template:  # a template that replaces the model's own (qwen3) decides the think rows too
        ensure_chat_template(tok, cfg.data.template, "the model's tokenizer")
    thinking = supports_thinking(tok)
    # Each fails on a missing file or value or a bad row before any work.
    rows = (user_identity_messages(cfg.identity_data, names) if cfg.identity_data
            else identity_messages(names, cfg.languages, thinking))
    extra = _read_extra(cfg, names)
    run = Path(cfg.output_dir or run_folder("identity", cfg))
    if (read_manifest(run) or {}).get("status") == "done" and (run / "eval" / "report.json").is_file():
        raise UserError(f"{run} already holds a finished identity run: choose another output_dir")
    data_dir = run / "data"
    _write_jsonl(data_dir / "identity.jsonl", rows)
    samples = cfg.identity_samples or (None if cfg.identity_data else round(len(rows) * SHIPPED_IDENTITY_SHARE))
    datasets = [DatasetConfig(path=str(data_dir / "identity.jsonl"), format="messages", name="identity",
                              samples=samples)]
    replay_info = None
    if cfg.replay.enabled:
        from ..synth.replay import replay_rows

        print("replay: the base model answers general prompts (cached per base model) …")
        rrows, replay_info = replay_rows(cfg.model, cfg.languages, cfg.replay.prompts, cfg.replay.max_new_tokens,
                                         cfg.replay.batch_size, cfg.train.seed, cfg.dtype, cfg.device,
                                         cfg.trust_remote_code)
        if rrows:
            _write_jsonl(data_dir / "replay.jsonl", rrows)
            datasets.append(DatasetConfig(path=str(data_dir / "replay.jsonl"), format="messages", name="replay",
                                          samples=cfg.replay.samples or cfg.replay.upsample * len(rrows)))
        else:
            print("replay: no usable answer from the base model (none ended a sentence); training without replay")
    for i, (ds, filled) in enumerate(zip(cfg.data.datasets, extra)):
        _write_jsonl(data_dir / f"extra-{i}.jsonl", filled)
        datasets.append(DatasetConfig(path=str(data_dir / f"extra-{i}.jsonl"), format="messages", samples=ds.samples,
                                      ratio=ds.ratio, name=ds.label()))
    data = DataConfig.model_validate({**cfg.data.model_dump(exclude={"datasets", "seed"}), "datasets": datasets,
                                      "seed": cfg.train.seed if cfg.data.seed is None else cfg.data.seed})
    train_cfg = TrainConfig(model=cfg.model, dtype=cfg.dtype, device=cfg.device,
                            trust_remote_code=cfg.trust_remote_code, method="lora", lora=cfg.lora, train=cfg.train,
                            data=data, output_dir=str(run), resume=cfg.resume, nproc=cfg.nproc, progress=cfg.progress)
    used = f"{samples} sampled from {len(rows)}" if samples else str(len(rows))
    replay_used = next((d.samples for d in datasets if d.name == "replay"), None)
    print(f"train: LoRA r={cfg.lora.r} on {used} identity rows"
          + (f" + {replay_used} replay rows ({replay_info['kept']} answers)" if replay_used else "") + f" → {run}")
    t_train = time.time()
    if (read_manifest(run) or {}).get("status") != "done":
        # The entry point of `tunesmith train`: with nproc > 1 it launches N processes and returns
        # when they have all finished, so evaluation below runs once, here.
        code = train(train_cfg)
        if code:
            return code
    save_config(cfg, run / "identity.yaml")
    t_eval = time.time()
    scores = None
    if cfg.eval:
        print("eval: base vs tuned on held-out probes …")
        rep = run_eval(_eval_config(cfg, model=cfg.model, adapter=[str(run)], names=names, out=str(run / "eval")))
        print_table(rep)
        scores = {"base": rep["base"]["scores"], "tuned": rep["tuned"]["scores"]}
        write_atomic(run / "eval" / "report.md", report_markdown(rep))
    m = read_manifest(run) or {}
    m.update(job="identity", identity=names.model_dump(), replay=replay_info, eval=scores,
             timings_s={"synth_replay": round(t_train - t0, 1), "train": round(t_eval - t_train, 1),
                        "eval": round(time.time() - t_eval, 1), "total": round(time.time() - t0, 1)})
    write_manifest(run, m)
    wrote = (f"report: {run / 'eval' / 'report.md'}" if cfg.eval
             else "adapter and training logs; eval false: no report written")
    print(f"done in {time.time() - t0:.0f}s: {run} ({wrote})")
    return 0


def _eval_config(cfg: IdentityJobConfig, **filled):
    """The eval identity verb's config: the job's eval_identity settings plus what the job fills."""
    return EvalIdentityConfig(**cfg.eval_identity.model_dump(), languages=cfg.languages, dtype=cfg.dtype,
                              device=cfg.device, trust_remote_code=cfg.trust_remote_code, **filled)


def final_check(cfg: IdentityJobConfig, model: str, base: str, out: Path) -> dict:
    """The pipeline's check on its final model: does the identity this stage taught survive the
    later stages? (The registry names this function for the identity verb.)"""
    from ..eval.identity import print_table, run_eval

    if not cfg.eval:
        return {}
    rep = run_eval(_eval_config(cfg, model=model, base=base, names=cfg.identity(), out=str(out)))
    print_table(rep)
    return rep["tuned"]["scores"]
