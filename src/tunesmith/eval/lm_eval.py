"""``tunesmith eval lm-eval``: run EleutherAI's lm-evaluation-harness on a tunesmith model.

The optional extra ``tunesmith[lm-eval]`` brings the harness. The model is resolved the way every
eval verb resolves it (alias, HF folder, .gguf, hub id, run folder, merged stage) to a local HF
folder, then handed to the harness's own ``hf`` model class: one adapter goes in as its ``peft``
argument; several are first folded in order by ``export merge`` (logit-verified) into a temporary
folder. Tasks are the harness's task names; ``include_path`` adds a folder of task YAMLs (a local
task reads a JSONL file with ``dataset_path: json`` + ``dataset_kwargs.data_files``). When every
task named is found under ``include_path`` the run is offline: the hub and datasets libraries are
switched to offline mode for its duration, so nothing reaches for the network.

``out`` receives results.json (the harness's results, configs and versions), results.md (its
table) and samples_<task>.jsonl (every scored document with the model's responses).
"""
from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from pydantic import Field

from ..config import AdaptedModelSection, Replaceable
from ..errors import UserError

EXTRA = "lm-eval"


class EvalLmEvalConfig(AdaptedModelSection, Replaceable):
    model: str = Field(..., description="the model: alias, HF folder, merged stage, .gguf, hub id or run folder")
    adapter: list[str] = Field(default_factory=list, description="adapters applied in order (one: loaded by peft; "
                                                                  "several: merged and verified first)")
    tasks: list[str] = Field(default_factory=list, description="lm-eval task or group names (e.g. hellaswag, or "
                                                              "the task: name of a YAML under include_path)")
    include_path: str | None = Field(None, description="a folder (or one YAML file) of extra task configs; when "
                                                       "it holds every task named, the run is offline")
    limit: int | None = Field(None, ge=1, description="score only the first N documents of each task")
    num_fewshot: int | None = Field(None, ge=0, description="few-shot examples per prompt (unset: the task's own)")
    batch_size: int = Field(8, gt=0, description="requests per forward pass")
    apply_chat_template: bool = Field(False, description="render prompts with the model's chat template")
    out: str | None = Field(None, description="folder for results.json, results.md and samples_<task>.jsonl")


def _import_harness():
    try:
        import lm_eval  # noqa: F401
        from lm_eval.tasks import TaskManager  # noqa: F401
    except ImportError:
        raise UserError(f"lm-evaluation-harness is not installed: pip install 'tunesmith[{EXTRA}]'") from None


def _task_manager(names: list[str], include: Path | None):
    """The harness's task index, and whether every name is a local task. Scanning only
    ``include`` takes ~0.05 s against ~7 s for the harness's ~15k built-in configs, so the
    built-ins are indexed only when a name is not found locally."""
    from lm_eval.tasks import TaskManager

    if include is not None:
        local = TaskManager(include_path=str(include), include_defaults=False)
        if all(n in local.all_tasks for n in names):
            return local, True
    tm = TaskManager(include_path=str(include) if include else None)
    unknown = [n for n in names if n not in tm.all_tasks]
    if unknown:
        near = difflib.get_close_matches(unknown[0], tm.all_tasks, n=1)
        where = f" or under {include}" if include else " (a local task needs --include_path DIR)"
        tip = f"; did you mean '{near[0]}'?" if near else ""
        raise UserError(f"tasks: unknown task '{unknown[0]}': not one of lm-eval's tasks{where}{tip}")
    return tm, False


@contextlib.contextmanager
def _offline(on: bool):
    """Hub and datasets offline for the run. Both libraries read the variables once, at import
    (and the CLI has imported them by now), so their module constants are switched too."""
    if not on:
        yield
        return
    import datasets.config as dc
    import huggingface_hub.constants as hc

    env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    consts = [(hc, "HF_HUB_OFFLINE"), (dc, "HF_HUB_OFFLINE"), (dc, "HF_DATASETS_OFFLINE")]
    saved = [getattr(m, a) for m, a in consts]
    os.environ.update({k: "1" for k in env})
    for m, a in consts:
        setattr(m, a, True)
    try:
        yield
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for (m, a), v in zip(consts, saved):
            setattr(m, a, v)


@contextlib.contextmanager
def _quiet_harness():
    """The harness logs every default it fills in as a warning; those would bury our one-line
    errors and the table. Its errors still show."""
    log = logging.getLogger("lm_eval")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _model_args(cfg: EvalLmEvalConfig, work: Path) -> tuple[dict, dict]:
    """The harness's ``hf`` arguments for base + adapters, and what the report records of them."""
    from ..models.load import check_adapters, pick_device, pick_dtype

    spec, adapters, model_dir = check_adapters(cfg.model, cfg.adapter)
    device = pick_device(cfg.device)
    dtype = str(pick_dtype(cfg.dtype, device)).removeprefix("torch.")
    args = {"pretrained": str(model_dir), "device": device, "dtype": dtype,
            "trust_remote_code": cfg.trust_remote_code}
    if len(adapters) > 1:  # peft stacks one adapter; more are folded in order and the fold is verified
        from ..export.merge import MergeConfig, merge

        merged = work / "merged"
        merge(MergeConfig(model=spec, adapter=[str(a) for a in adapters], out=str(merged), device=cfg.device,
                          trust_remote_code=cfg.trust_remote_code))
        args["pretrained"] = str(merged)
    elif adapters:
        args["peft"] = str(adapters[0])
    # The tokenizer saved beside the last adapter wins: it is what training rendered with.
    last = adapters[-1] if adapters else None
    args["tokenizer"] = str(last if last and last.joinpath("tokenizer_config.json").is_file() else model_dir)
    return args, {"model": " + ".join([spec, *(str(a) for a in adapters)]), "base": str(model_dir),
                  "adapters": [str(a) for a in adapters], "merged": len(adapters) > 1}


def run_lm_eval(cfg: EvalLmEvalConfig) -> dict:
    from ..fsutil import check_writable_dir

    _import_harness()
    names = [t.strip() for t in cfg.tasks if t.strip()]
    if not names:
        raise UserError("tasks: name at least one lm-eval task (e.g. --tasks hellaswag,arc_easy)")
    include = Path(cfg.include_path).expanduser() if cfg.include_path else None
    if include is not None and not include.exists():
        raise UserError(f"include_path {cfg.include_path} not found: name a folder of task YAML files")
    if cfg.out:
        check_writable_dir(cfg.out, "out")
    with _quiet_harness():
        tm, local = _task_manager(names, include)
    work = Path(tempfile.mkdtemp(prefix="tunesmith-lm-eval-"))
    try:
        model_args, used = _model_args(cfg, work)
        import lm_eval

        with _offline(local), _quiet_harness():
            res = lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=names, task_manager=tm,
                                          batch_size=cfg.batch_size, limit=cfg.limit, num_fewshot=cfg.num_fewshot,
                                          apply_chat_template=cfg.apply_chat_template, log_samples=True,
                                          bootstrap_iters=0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["tunesmith"] = {**used, "offline": local}
    if cfg.out:
        write_results(res, Path(cfg.out))
    return res


def write_results(res: dict, out: Path) -> None:
    from lm_eval.utils import handle_non_serializable, make_table

    from ..fsutil import write_atomic

    samples = res.get("samples") or {}
    for task, rows in samples.items():
        text = "".join(json.dumps(r, default=handle_non_serializable, ensure_ascii=False) + "\n" for r in rows)
        write_atomic(out / f"samples_{task}.jsonl", text)
    body = {k: v for k, v in res.items() if k != "samples"}
    table = make_table(res) + ("\n" + make_table(res, "groups") if res.get("groups") else "")
    head = f"# lm-evaluation-harness: {res['tunesmith']['model']}\n\n"
    write_atomic(out / "results.md", head + table)
    # results.json last: its presence says the folder is complete
    write_atomic(out / "results.json", json.dumps(body, indent=1, default=handle_non_serializable,
                                                  ensure_ascii=False))


def eval_lm_eval(cfg: EvalLmEvalConfig) -> int:
    res = run_lm_eval(cfg)
    from lm_eval.utils import make_table  # after the run: it checked that the harness is installed

    print(make_table(res))
    if res.get("groups"):
        print(make_table(res, "groups"))
    if cfg.out:
        print(f"results: {Path(cfg.out) / 'results.json'}")
    return 0
