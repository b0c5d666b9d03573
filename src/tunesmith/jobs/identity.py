"""``tunesmith identity``: give a model a new name and author, and prove it took.

    synth (identity rows, placeholders filled) → replay (the base answers general prompts)
    → train (LoRA on both) → eval (held-out probes, base vs tuned) → report

One run folder: the adapter and training logs at the top (a normal training run), the
synthesized data under ``data/``, the before/after report under ``eval/``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ..config import ModelSection, Section
from ..fsutil import save_config, write_atomic
from ..data.config import DataConfig, DatasetConfig
from ..errors import UserError
from ..manifest import read_manifest, write_manifest
from ..train.config import LoopSettings, LoraSettings, TrainConfig, lift_train_dtype
from ..data.names import LANGS, IdentityNames, Lang
from ..synth.identity import filled_rows, identity_messages, user_identity_messages


class ReplaySettings(Section):
    enabled: bool = Field(True, description="mix in the base model's own answers to general prompts")
    prompts: int | None = Field(None, gt=0, description="how many shipped prompts the base answers (default: all)")
    samples: int | None = Field(None, gt=0, description="replay rows in the training mix (default: every answer "
                                                        "`upsample` times)")
    upsample: int = Field(2, gt=0, description="each kept answer this many times when samples is unset (measured: "
                                               "2 kept the leak in en and zh at most 4 in 100 where 1 leaked 18 in 100 in zh)")
    max_new_tokens: int = Field(64, gt=0, description="answer length; cut-off answers are trimmed to their last "
                                                       "sentence")
    batch_size: int = Field(16, gt=0, description="prompts per generation batch")


# What the identity journey trains with unless the recipe says otherwise: the best setting measured
# on SmolLM2 (docs/benchmarks.md, identity defaults sweep); the old 3 epochs, all 207 rows and
# 160-token replay leaked the identity into ~20% of general answers.
TRAIN_DEFAULTS = {"lr": 1e-3, "epochs": 2, "batch_size": 8, "warmup": 0.05}
# Of the shipped identity rows, this share is trained on (150 of 207): fewer identity rows leak less.
SHIPPED_IDENTITY_SHARE = 150 / 207


class IdentityJobConfig(ModelSection):
    name: str | None = Field(None, description="the new name")
    author: str | None = Field(None, description="the new author / creator")
    names: IdentityNames = Field(default_factory=IdentityNames,
                                 description="per-language values: names.name_zh, names.author_en …")
    output_dir: str | None = Field(None, description="run folder (default: runs/<recipe name>-<time>, or runs/identity-<time>)")
    languages: list[Lang] = Field(default_factory=lambda: list(LANGS), description="identity languages: en, zh")
    identity_samples: int | None = Field(None, gt=0, description="identity rows in the mix, upsampled by whole "
                                                                 "repetitions (default: 150 of the 207 shipped "
                                                                 "rows; your identity_data: each row once)")
    replay: ReplaySettings = Field(default_factory=ReplaySettings, description="forgetting guard: self-distilled replay")
    identity_data: str | None = Field(None, description="a file, folder, or DIR:name with your own identity rows; "
                                                        "placeholders filled; replaces the shipped rows")
    extra_data: list[DatasetConfig] = Field(default_factory=list, description="your own general data to mix in "
                                            "(placeholders {{NAME}}/{{AUTHOR}} are filled here too)")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings")
    train: LoopSettings = Field(default_factory=lambda: LoopSettings(**TRAIN_DEFAULTS),
                                description="optimizer, schedule and loop (identity defaults: lr 1e-3, 2 epochs, "
                                            "batch 8, warmup 0.05)")
    cutoff_len: int = Field(512, gt=0, description="tokens per training row")
    eval: bool = Field(True, description="run the before/after identity evaluation")
    eval_max_new_tokens: int = Field(64, gt=0, description="answer length in the evaluation")
    resume: bool | Literal["auto"] = Field("auto", description="continue a killed run in output_dir (auto: if there is one)")
    nproc: int = Field(1, gt=0, description="data-parallel training processes (as `tunesmith train --nproc`)")
    progress: bool = Field(True, description="show progress bars")

    _lift_dtype = model_validator(mode="before")(lift_train_dtype)  # old recipes' train.dtype

    @model_validator(mode="before")
    @classmethod
    def _train_defaults(cls, data):
        """``train.lr=2e-4`` changes the lr and keeps the identity defaults of the other fields
        (without this the whole section would fall back to the general training defaults)."""
        if isinstance(data, dict) and isinstance(data.get("train"), dict):
            data = {**data, "train": {**TRAIN_DEFAULTS, **data["train"]}}
        return data

    def identity(self) -> IdentityNames:
        return self.names.with_shortcuts(self.name, self.author, "identity")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _fill_extra(i: int, ds: DatasetConfig, names: IdentityNames, dest: Path) -> DatasetConfig:
    """A user dataset with placeholders filled, written as messages JSONL."""
    _write_jsonl(dest, filled_rows(ds, names, f"extra_data[{i}]"))
    return DatasetConfig(path=str(dest), format="messages", samples=ds.samples, ratio=ds.ratio, name=ds.label())


def identity(cfg: IdentityJobConfig) -> int:
    from ..eval.identity import EvalIdentityConfig, print_table, report_markdown, run_eval
    from ..models import load_tokenizer, resolve_model
    from ..models.template import supports_thinking
    from ..train import train

    t0 = time.time()
    names = cfg.identity()
    from ..fsutil import check_writable_dir, default_run_dir  # an unwritable output_dir: refused before any load

    check_writable_dir(cfg.output_dir or "runs", "output_dir")
    thinking = supports_thinking(load_tokenizer(resolve_model(cfg.model), trust_remote_code=cfg.trust_remote_code))
    # Either fails on a missing value or a bad row before any work.
    rows = (user_identity_messages(cfg.identity_data, names) if cfg.identity_data
            else identity_messages(names, cfg.languages, thinking))
    run = Path(cfg.output_dir or default_run_dir("identity"))
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
    datasets += [_fill_extra(i, ds, names, data_dir / f"extra-{i}.jsonl") for i, ds in enumerate(cfg.extra_data)]

    train_cfg = TrainConfig(model=cfg.model, dtype=cfg.dtype, device=cfg.device,
                            trust_remote_code=cfg.trust_remote_code, method="lora", lora=cfg.lora, train=cfg.train,
                            data=DataConfig(datasets=datasets, cutoff_len=cfg.cutoff_len, seed=cfg.train.seed),
                            output_dir=str(run), resume=cfg.resume, nproc=cfg.nproc, progress=cfg.progress)
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
        rep = run_eval(EvalIdentityConfig(model=cfg.model, adapter=[str(run)], names=names, languages=cfg.languages,
                                          out=str(run / "eval"), max_new_tokens=cfg.eval_max_new_tokens,
                                          dtype=cfg.dtype, device=cfg.device,
                                          trust_remote_code=cfg.trust_remote_code))
        print_table(rep)
        scores = {"base": rep["base"]["scores"], "tuned": rep["tuned"]["scores"]}
        write_atomic(run / "eval" / "report.md", report_markdown(rep))
    m = read_manifest(run) or {}
    m.update(job="identity", identity=names.model_dump(), replay=replay_info, eval=scores,
             timings_s={"synth_replay": round(t_train - t0, 1), "train": round(t_eval - t_train, 1),
                        "eval": round(time.time() - t_eval, 1), "total": round(time.time() - t0, 1)})
    write_manifest(run, m)
    print(f"done in {time.time() - t0:.0f}s: {run} (report: {run / 'eval' / 'report.md'})")
    return 0


def final_check(cfg: IdentityJobConfig, model: str, base: str, out: Path) -> dict:
    """The pipeline's check on its final model: does the identity this stage taught survive the
    later stages? (The registry names this function for the identity verb.)"""
    from ..eval.identity import EvalIdentityConfig, print_table, run_eval

    if not cfg.eval:
        return {}
    rep = run_eval(EvalIdentityConfig(model=model, base=base, names=cfg.identity(), languages=cfg.languages,
                                      out=str(out), max_new_tokens=cfg.eval_max_new_tokens, dtype=cfg.dtype,
                                      device=cfg.device, trust_remote_code=cfg.trust_remote_code))
    print_table(rep)
    return rep["tuned"]["scores"]
