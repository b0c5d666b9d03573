"""``tunesmith synth task multiply|add``: chain-of-thought rows whose every step can be checked.

The task itself lives in the task home (``tunesmith.tasks``): the generators (``question``,
``steps``), the step checkers (``check``), the held-out split rule and the rewards, read by synth
(this verb), eval and train alike. Rows are alpaca JSONL:
``{"instruction": "计算874*265", "input": "", "output": "<the steps>"}``; the split rule is in
``tasks/arith.py`` (docs/tasks.md).

``--check FILE`` checks rows instead of making them (the training data, or a model's answers
written as alpaca rows by ``tunesmith eval tasks``): every line of every answer, not only the
final number; it prints the pass rate and the first failing line of each failed row.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ..config import Replaceable
from ..errors import UserError
from ..tasks import arith
from ..tasks.arith import check_row


class TaskConfig(Replaceable):
    task: Literal["multiply", "add"] = Field(..., description="which task: multiply or add")
    digits: list[int] = Field(default_factory=lambda: [3, 3], description="digits of the two numbers, e.g. 2,2")
    n: int = Field(1000, ge=1, description="rows to write")
    out: str | None = Field(None, description="output .jsonl file, or a folder (data.jsonl + manifest.json inside)")
    lang: Literal["zh", "en", "mix"] = Field("zh", description="language of the steps: zh (seed 001), en, or mix")
    seed: int = Field(0, description="random seed for the pairs (and the language with mix)")
    split: Literal["train", "test"] = Field("train", description="train or held-out test pairs (see the split rule)")
    test_share: float = Field(0.1, gt=0, lt=1, description="share of all pairs held out for test; keep it the "
                                                          "same for the train and the test file")
    check: str | None = Field(None, description="check this JSONL of alpaca rows step by step instead of writing")
    think: Literal["none", "on", "off", "both"] = Field(
        "none", description="reasoning rows for a thinking switch: on = the steps in <think>…</think>, the final "
                            "result as the answer; off = the final result alone; both = each pair twice (on, off); "
                            "none = the steps as the answer")

    @field_validator("digits")
    @classmethod
    def _digits(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or not all(1 <= d <= 12 for d in v):
            raise ValueError("give two digit counts from 1 to 12, e.g. 2,2")
        return v

    @field_validator("think", mode="before")
    @classmethod
    def _on_off(cls, v):
        """YAML and the command line read on / off as booleans."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


def make_rows(cfg: TaskConfig) -> list[dict]:
    return arith.make_rows(cfg.task, cfg.digits, cfg.n, cfg.split, cfg.seed, cfg.test_share, cfg.lang,
                           cfg.think)


def check_file(task: str, path: str) -> dict:
    from ..jsonl import read_jsonl

    failed = []
    total = 0
    for n, row in read_jsonl(Path(path), "check file"):
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: expected an alpaca row (instruction, output)")
        total += 1
        why = check_row(task, row)
        if why:
            failed.append({"row": n, "why": why})
    if not total:
        raise UserError(f"{path}: no rows")
    return {"task": task, "rows": total, "passed": total - len(failed), "pass_rate": (total - len(failed)) / total,
            "failed": failed}


def task(cfg: TaskConfig) -> int:
    if cfg.check:
        r = check_file(cfg.task, cfg.check)
        for f in r["failed"][:20]:
            print(f"{cfg.check}:{f['row']}: {f['why']}")
        print(f"step check: {r['passed']}/{r['rows']} rows pass ({r['pass_rate']:.1%})")
        return 0
    if not cfg.out:
        raise UserError("out: name the output .jsonl file or folder (or give --check FILE)")
    from .runner import Outputs, write_rows

    outputs = Outputs(cfg.out)
    rows = make_rows(cfg)
    write_rows(outputs, rows, {"kind": "synth task", "task": cfg.task, "digits": cfg.digits, "lang": cfg.lang,
                               "seed": cfg.seed, "split": cfg.split, "test_share": cfg.test_share, "think": cfg.think,
                               "split_rule": "sha256('<task>:<min>:<max>') as a fraction < test_share → test"})
    return 0


__all__ = ["TaskConfig", "check_file", "make_rows", "task"]
