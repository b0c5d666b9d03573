"""``tunesmith eval tasks``: task scores and retention, the base model vs each adapter.

A task file is JSONL. Each row gives a prompt (``prompt``, ``text``, or alpaca ``instruction`` +
``input``) and what is expected (``answer``, ``label`` or alpaca ``output``), and is scored by its
kind — the row's ``kind``, else the file's (``FILE:KIND`` in ``tasks``), else ``label`` for rows
with a ``label`` field, ``number`` when the expected text ends in a number, ``exact`` otherwise:

- ``number``: the last number of the answer equals the last number of the expected text (a
  chain of thought is judged by its final result: "exact");
- ``exact``: the answer equals the expected text after normalising (NFKC, case, spaces, end
  punctuation); ``contains``: the normalised answer contains it;
- ``label`` (classification): the label set is the row's ``labels`` or every label of the file.
  Scored twice: by ranking the labels by log-likelihood given the prompt (lm-evaluation-harness's
  multiple choice: the summed log-probabilities of the label's tokens, and of the end-of-turn
  token so a label that is a prefix of another is not favoured, after the prompt rendered with
  the chat template) and by generation + normalised exact match. Accuracy, per-label precision
  and recall, and a confusion matrix.

Step-valid: a row whose prompt is a question of a task with a step checker (multiply, add) and
whose expected answer passes that checker (a whole chain, not a final line alone) also has its
answer checked step by step by ``check_row`` of the task home, as ``synth task --check`` does;
the report gives the share of such answers in which every step holds, next to exact.

Thinking switch (``thinking: on | off | both``): task prompts are rendered with the template's
``enable_thinking`` set (both: every task answered in each mode, reported as ``TASK (thinking on)``
and ``TASK (thinking off)``), and each answer is judged by the ``format`` reward of the task home:
on, a ``<think>…</think>`` block then an answer; off, no ``<think>``. The share that follows is
reported per task and mode; a model whose template has no switch is answered once and gets "—".
Retention is then asked with thinking off. ``gguf``: GGUF files (or ``export gguf`` folders) are
scored as further runs through llama.cpp, with the template in each file (infer/gguf.py).

Retention: a fixed general set with known short answers (assets/retention.jsonl, zh + en) is
answered by every model (an answer counts when it names an expected value: a whole word or number
in Latin script, anywhere in CJK — "12" does not count for "2"); the report gives each adapter's retention minus the base's.
"""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ..config import AdaptedModelSection, Replaceable
from ..errors import UserError
from ..infer import Engine, GenParams
from ..jsonl import read_jsonl
from ..models.template import supports_thinking
from ..tasks.answers import as_label, correct, mentions  # the one copy of answer extraction (the task home)
from ..tasks.arith import check_row, checked_task  # the one step checker (synth task --check uses it too)
from ..tasks.rewards import format_ as follows_switch  # the one check of a think block (the format reward)

KINDS = ("number", "exact", "contains", "label")
MODES = {"default": (None,), "on": (True,), "off": (False,), "both": (True, False)}


class EvalTasksConfig(AdaptedModelSection, Replaceable):
    model: str = Field(..., description="the base model: alias, HF folder, merged stage, hub id or run folder")
    adapter: list[str] = Field(default_factory=list, description="adapters, each compared with the base on its own")
    tasks: list[str] = Field(default_factory=list, description="task JSONL files; FILE:KIND sets the file's kind "
                                                              "(number, exact, contains, label)")
    retention: bool = Field(True, description="also score the general retention set (zh + en)")
    out: str | None = Field(None, description="folder for report.md, report.json, PNGs and answers/")
    max_items: int | None = Field(None, ge=1, description="score only the first N items of each task file")
    batch_size: int = Field(16, gt=0, description="most prompts decoded together")
    max_new_tokens: int = Field(512, gt=0, description="answer length for number tasks (a chain of thought)")
    short_tokens: int = Field(48, gt=0, description="answer length for exact, contains, label and retention")
    label_prompt: str | None = Field(None, description="appended to each label task's prompt, {labels} = the label "
                                                        "set (a prompted baseline: 'Answer with one of: {labels}')")
    wrong_examples: int = Field(5, ge=0, description="wrong answers shown per task in the report")
    shots: str | None = Field(None, description="a task file whose first n_shots rows are shown before every task "
                                                "prompt as earlier user/assistant turns (a few-shot prompted "
                                                "baseline, e.g. one worked chain of thought); not for retention")
    n_shots: int = Field(1, ge=1, description="how many rows of the shots file to show")
    thinking: Literal["default", "on", "off", "both"] = Field(
        "default", description="the template's thinking switch for task prompts: default = unset; on / off; both = "
                               "every task in each mode. When set, the share of answers that follow it is reported")
    gguf: list[str] = Field(default_factory=list, description="GGUF files (or export gguf folders: each .gguf in "
                                                              "it) scored too, through llama.cpp with the file's "
                                                              "own chat template (not label tasks)")

    @field_validator("thinking", mode="before")
    @classmethod
    def _on_off(cls, v):
        """YAML and the command line read on / off as booleans."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


# ---------------------------------------------------------------- task files

def _file_and_kind(spec: str) -> tuple[Path, str | None]:
    head, _, tail = spec.rpartition(":")
    if head and tail in KINDS:
        return Path(head), tail
    return Path(spec), None


def read_task(spec: str, max_items: int | None = None) -> dict:
    path, file_kind = _file_and_kind(spec)
    items = []
    for n, r in read_jsonl(path, "task file"):
        if not isinstance(r, dict):
            raise UserError(f"{path}:{n}: a task row is a JSON object with a prompt and an answer")
        prompt = r.get("prompt") or r.get("text") or "\n".join(x for x in (r.get("instruction"), r.get("input")) if x)
        expect = next((r[k] for k in ("answer", "label", "output") if isinstance(r.get(k), str)), None)
        if not isinstance(prompt, str) or not prompt or expect is None:
            raise UserError(f"{path}:{n}: needs a prompt (prompt, text or instruction) and an answer (answer, label "
                            "or output)")
        kind = r.get("kind") or file_kind or ("label" if "label" in r else "number" if re.search(
            r"\d\D{0,3}$", expect.strip()) else "exact")
        if kind not in KINDS:
            raise UserError(f"{path}:{n}: kind: '{kind}' is not one of {', '.join(KINDS)}")
        items.append({"row": n, "prompt": prompt, "expect": expect, "kind": kind, "labels": r.get("labels"),
                      "steps": checked_task({"instruction": prompt, "output": expect})})
        if max_items and len(items) >= max_items:
            break
    if not items:
        raise UserError(f"{path}: no task rows")
    all_labels = sorted({i["expect"] for i in items if i["kind"] == "label"})
    for i in items:
        if i["kind"] == "label":
            i["labels"] = i["labels"] or all_labels
            if i["expect"] not in i["labels"]:
                raise UserError(f"{path}:{i['row']}: label '{i['expect']}' is not in its labels")
    name = path.stem if path.stem != "data" else f"{path.parent.name}-{path.stem}"
    return {"name": name, "file": str(path), "items": items, "labels": all_labels}


def retention_items() -> list[dict]:
    text = resources.files("tunesmith.eval").joinpath("assets", "retention.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------- scoring with a model

def label_logprobs(engine: Engine, prompt: str, labels: list[str], with_end: bool = True,
                   shots: list[dict] = ()) -> list[float]:
    """log P(label | prompt) for each label: the sum over the label's tokens (and the end of turn)
    of the log-probability the model gives each token after the chat-template prompt (after the
    ``shots`` turns, if any)."""
    import torch

    ctx = engine.prompt_ids([*shots, {"role": "user", "content": prompt}])
    end = engine.stop_ids[:1] if with_end else []
    conts = [list(engine.tok(l, add_special_tokens=False)["input_ids"]) + end for l in labels]
    width = len(ctx) + max(len(c) for c in conts)
    pad = engine.tok.pad_token_id or 0
    ids = torch.tensor([ctx + c + [pad] * (width - len(ctx) - len(c)) for c in conts])
    mask = torch.tensor([[1] * (len(ctx) + len(c)) + [0] * (width - len(ctx) - len(c)) for c in conts])
    dev = next(engine.model.parameters()).device
    with torch.inference_mode():
        logp = engine.model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float().log_softmax(-1)
    out = []
    for k, c in enumerate(conts):
        pos = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(c), device=dev)  # logits at t predict token t+1
        out.append(float(logp[k, pos, torch.tensor(c, device=dev)].sum()))
    return out


def _generate(engine: Engine, prompts: list[str], tokens: int, shots: list[dict] = (),
              think: bool | None = None) -> list[str]:
    return engine.generate([[*shots, {"role": "user", "content": p}] for p in prompts],
                           GenParams(max_new_tokens=tokens, enable_thinking=think))


def mode_name(task: str, think: bool | None) -> str:
    return task if think is None else f"{task} (thinking {'on' if think else 'off'})"


def shot_turns(cfg: EvalTasksConfig) -> list[dict]:
    """The worked examples of ``shots`` as user/assistant turns (the row's prompt and expected answer)."""
    if not cfg.shots:
        return []
    turns = []
    for i in read_task(cfg.shots, cfg.n_shots)["items"]:
        turns += [{"role": "user", "content": i["prompt"]}, {"role": "assistant", "content": i["expect"]}]
    return turns


def classification(gold: list[str], pred: list[str | None], labels: list[str]) -> dict:
    """Accuracy, per-label precision/recall and the confusion matrix (rows: gold; columns: the
    labels, then "other" for an answer that names no label)."""
    cols = labels + ["(other)"]
    matrix = [[0] * len(cols) for _ in labels]
    for g, p in zip(gold, pred):
        matrix[labels.index(g)][cols.index(p if p in labels else "(other)")] += 1
    per = {}
    for j, l in enumerate(labels):
        tp, predicted, support = matrix[j][j], sum(row[j] for row in matrix), sum(matrix[j])
        per[l] = {"precision": round(tp / predicted, 4) if predicted else 0.0,
                  "recall": round(tp / support, 4) if support else 0.0, "support": support}
    acc = sum(g == p for g, p in zip(gold, pred)) / len(gold)
    return {"accuracy": round(acc, 4), "per_label": per, "confusion": {"labels": cols, "matrix": matrix}}


def step_valid(rows: list[dict]) -> dict:
    """The share of answers in which every step holds, over the rows a step checker applies to ({} when none)."""
    checked = [r["step_valid"] for r in rows if "step_valid" in r]
    return {"step_valid": round(sum(checked) / len(checked), 4), "step_items": len(checked)} if checked else {}


def score_task(engine: Engine, task: dict, cfg: EvalTasksConfig, think: bool | None = None) -> tuple[dict, list[dict]]:
    """Scores and answer rows of one task; ``think`` sets the template's switch (the template has one)."""
    items, shots = task["items"], shot_turns(cfg)
    if cfg.label_prompt:
        items = [{**i, "prompt": i["prompt"] + "\n" + cfg.label_prompt.format(labels=", ".join(i["labels"]))}
                 if i["kind"] == "label" else i for i in items]
    long = any(i["kind"] == "number" for i in items)
    answers = _generate(engine, [i["prompt"] for i in items], cfg.max_new_tokens if long else cfg.short_tokens, shots,
                        think)
    rows, res = [], {}
    for i, a in zip(items, answers):
        rows.append({"instruction": i["prompt"], "input": "", "output": a, "expect": i["expect"], "kind": i["kind"],
                     "correct": correct(i["kind"], a, i["expect"]), "row": i["row"]})
        if i["steps"]:
            why = check_row(i["steps"], rows[-1])
            rows[-1].update({"step_valid": why is None, **({"step_error": why} if why else {})})
        if think is not None:
            rows[-1]["follows_switch"] = bool(follows_switch(a, {"prompt": i["prompt"], "think": think}))
    res["accuracy"] = round(sum(r["correct"] for r in rows) / len(rows), 4)
    res["items"] = len(rows)
    res.update(step_valid(rows))
    if think is not None:
        res["switch"] = round(sum(r["follows_switch"] for r in rows) / len(rows), 4)
    lab = [(i, r) for i, r in zip(items, rows) if i["kind"] == "label"]
    if lab:
        gold = [i["expect"] for i, _ in lab]
        res["generate"] = classification(gold, [as_label(r["output"], i["labels"]) for i, r in lab], task["labels"])
        ranked = []
        for i, r in lab:
            lp = label_logprobs(engine, i["prompt"], i["labels"], shots=shots)
            r["ranked"] = i["labels"][max(range(len(lp)), key=lp.__getitem__)]
            ranked.append(r["ranked"])
        res["loglik"] = classification(gold, ranked, task["labels"])
        res["accuracy"] = res["loglik"]["accuracy"]  # the headline for a label task: the ranking
    return res, rows


def score_retention(engine: Engine, cfg: EvalTasksConfig, think: bool | None = None) -> tuple[dict, list[dict]]:
    items = retention_items()
    answers = _generate(engine, [i["prompt"] for i in items], cfg.short_tokens, think=think)
    rows = [{**i, "answer": a, "correct": mentions(a, i["expect"])} for i, a in zip(items, answers)]
    res = {"accuracy": round(sum(r["correct"] for r in rows) / len(rows), 4), "items": len(rows)}
    for lang in sorted({r["lang"] for r in rows}):
        sub = [r["correct"] for r in rows if r["lang"] == lang]
        res[f"accuracy_{lang}"] = round(sum(sub) / len(sub), 4)
        res[f"items_{lang}"] = len(sub)
    return res, rows


def evaluate(engine: Engine, tasks: list[dict], cfg: EvalTasksConfig) -> dict:
    run = {"tasks": {}, "answers": {}}
    switch = cfg.thinking != "default" and supports_thinking(engine.tok)
    for t in tasks:
        once = None
        for think in MODES[cfg.thinking]:
            key = mode_name(t["name"], think)
            if switch or think is None:
                run["tasks"][key], run["answers"][key] = score_task(engine, t, cfg, think)
                continue
            once = once or score_task(engine, t, cfg)  # no switch in this template: answered once
            run["tasks"][key] = {**once[0], "switch": None}
            run["answers"][key] = once[1]
    run.update(step_valid([a for k in run["tasks"] for a in run["answers"][k]]))  # all tasks together
    if cfg.retention:
        run["retention"], run["answers"]["retention"] = score_retention(engine, cfg, False if switch else None)
    return run


def task_meta(t: dict) -> dict:
    steps = sorted({i["steps"] for i in t["items"] if i["steps"]})  # the tasks whose step checker applies
    return {"file": t["file"], "items": len(t["items"]), "kinds": sorted({i["kind"] for i in t["items"]}),
            "labels": t["labels"], **({"steps": steps} if steps else {})}


def run_eval(cfg: EvalTasksConfig) -> dict:
    from ..fsutil import check_writable_dir
    from ..models.load import split_run_folder
    from .task_report import write_report

    if not cfg.tasks and not cfg.retention:
        raise UserError("tasks: name at least one task file (or keep retention on)")
    tasks = [read_task(s, cfg.max_items) for s in cfg.tasks]  # every file is checked before a model loads
    shot_turns(cfg)
    from ..infer.gguf import GgufEngine, gguf_files

    ggufs = [f for g in cfg.gguf for f in gguf_files(g)]
    if ggufs and any(i["kind"] == "label" for t in tasks for i in t["items"]):
        raise UserError("gguf: label tasks are ranked by log-likelihood, which is not measured on GGUF files")
    names = [t["name"] for t in tasks]
    if len(set(names)) != len(names):
        raise UserError(f"tasks: two task files share the name '{max(names, key=names.count)}'; rename one")
    if cfg.out:
        check_writable_dir(cfg.out, "out")
    model, adapters = split_run_folder(cfg.model, cfg.adapter)
    runs = []
    for adapter in [None, *adapters]:
        engine = Engine.load(model, [adapter] if adapter else None, cfg.dtype, cfg.device, cfg.trust_remote_code,
                             max_batch=cfg.batch_size)
        label = "base" if adapter is None else Path(adapter).name or adapter
        print(f"scoring {label} …")
        runs.append({"name": label, "adapter": adapter, **evaluate(engine, tasks, cfg)})
        del engine
    for f in ggufs:
        engine = GgufEngine.load(f)
        label = f"gguf-{f.stem.removeprefix('model-')}"
        print(f"scoring {label} ({f}, llama.cpp) …")
        runs.append({"name": label, "adapter": None, "gguf": str(f), **evaluate(engine, tasks, cfg)})
        engine.close()
    rep = {"model": model, "tasks": {mode_name(t["name"], m): task_meta(t) for t in tasks for m in MODES[cfg.thinking]},
           "runs": runs}
    if cfg.retention and len(runs) > 1:
        base = runs[0]["retention"]["accuracy"]
        rep["retention_delta"] = {r["name"]: round(r["retention"]["accuracy"] - base, 4) for r in runs[1:]}
    if cfg.out:
        write_report(rep, Path(cfg.out), cfg.wrong_examples)
    return rep


def eval_tasks(cfg: EvalTasksConfig) -> int:
    rep = run_eval(cfg)
    for r in rep["runs"]:
        scores = ", ".join(f"{n} {s['accuracy']:.1%}" for n, s in r["tasks"].items())
        ret = f"retention {r['retention']['accuracy']:.1%}" if "retention" in r else ""
        print(f"{r['name']}: {', '.join(x for x in (scores, ret) if x)}")
        follow = [f"{n} {s['switch']:.1%}" for n, s in r["tasks"].items() if s.get("switch") is not None]
        if follow:
            print(f"{r['name']}: answers that follow the thinking switch: {', '.join(follow)}")
        steps = [f"{n} {s['step_valid']:.1%}" for n, s in r["tasks"].items() if "step_valid" in s]
        if steps:
            print(f"{r['name']}: step-valid (every step holds): {', '.join(steps)}"
                  + (f", all {r['step_valid']:.1%}" if len(steps) > 1 else ""))
    for name, d in rep.get("retention_delta", {}).items():
        print(f"retention delta ({name} − base): {d * 100:+.1f} points")
    if cfg.out:
        print(f"report: {Path(cfg.out) / 'report.md'}")
    return 0
