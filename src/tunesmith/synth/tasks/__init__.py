"""``tunesmith synth task multiply|add``: chain-of-thought rows whose every step can be checked.

A task is a generator (``question``, ``steps``) and a checker (``check``) over a pair of numbers
(see multiply.py, add.py and the shared line templates in steps.py). Rows are alpaca JSONL:
``{"instruction": "计算874*265", "input": "", "output": "<the steps>"}``.

Held-out split rule: a pair belongs to the test split when the sha256 of
``"<task>:<smaller>:<larger>"`` read as a fraction in [0, 1) is below ``test_share`` (default
0.1), else to the train split. The key is the unordered pair, so 12*34 and 34*12 always fall on
the same side: a test question is never a training question, reversed or not. Train and test
files made with the same ``test_share`` never share a pair, whatever their seeds and sizes.

``--check FILE`` checks rows instead of making them (the training data, or a model's answers
written as alpaca rows by ``tunesmith eval tasks``): every line of every answer, not only the
final number; it prints the pass rate and the first failing line of each failed row.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ...config import Replaceable, Section
from ...errors import UserError
from . import add, multiply
from .steps import LANGS, WORDS, StepError, pattern

TASKS = {"multiply": multiply, "add": add}
ASK = {"multiply": "ask_mul", "add": "ask_add"}
ENUMERATE_UP_TO = 300_000  # pair spaces this small are listed whole; larger ones are sampled


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

    @field_validator("digits")
    @classmethod
    def _digits(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or not all(1 <= d <= 12 for d in v):
            raise ValueError("give two digit counts from 1 to 12, e.g. 2,2")
        return v


def is_test(task: str, a: int, b: int, test_share: float) -> bool:
    """The split rule (module docstring): a hash of the unordered pair decides, nothing else."""
    h = hashlib.sha256(f"{task}:{min(a, b)}:{max(a, b)}".encode()).hexdigest()
    return int(h[:15], 16) / 16 ** 15 < test_share


def _range(d: int) -> range:
    return range(1 if d == 1 else 10 ** (d - 1), 10 ** d)


def pairs(task: str, digits: list[int], n: int, split: str, seed: int, test_share: float) -> list[tuple[int, int]]:
    """``n`` distinct (a, b) pairs of the split, in a seeded random order."""
    ra, rb = _range(digits[0]), _range(digits[1])
    rng = random.Random(seed)
    want_test = split == "test"
    if len(ra) * len(rb) <= ENUMERATE_UP_TO:
        pool = [(a, b) for a in ra for b in rb if is_test(task, a, b, test_share) == want_test]
        if n > len(pool):
            raise UserError(f"n: only {len(pool)} {split} pairs of {digits[0]} and {digits[1]} digits exist "
                            f"(test_share {test_share}); lower n or raise digits")
        rng.shuffle(pool)
        return pool[:n]
    seen: set[tuple[int, int]] = set()
    out = []
    for _ in range(100 * n):
        p = (rng.choice(ra), rng.choice(rb))
        if p not in seen and is_test(task, *p, test_share) == want_test:
            seen.add(p)
            out.append(p)
            if len(out) == n:
                return out
    raise UserError(f"n: could not draw {n} distinct {split} pairs; lower n")


def make_rows(cfg: TaskConfig) -> list[dict]:
    mod = TASKS[cfg.task]
    rng = random.Random(f"lang-{cfg.seed}")
    rows = []
    for a, b in pairs(cfg.task, cfg.digits, cfg.n, cfg.split, cfg.seed, cfg.test_share):
        lang = rng.choice(LANGS) if cfg.lang == "mix" else cfg.lang
        text = mod.steps(a, b, lang)
        mod.check(a, b, text, lang)  # a generator bug must never reach a dataset
        rows.append({"instruction": mod.question(a, b, lang), "input": "", "output": text})
    return rows


def parse_question(task: str, text: str) -> tuple[int, int, str] | None:
    """``计算12*34`` → (12, 34, "zh"); None when it is no question of this task."""
    for lang in LANGS:
        m = pattern(WORDS[lang][ASK[task]]).match(text.strip())
        if m:
            return int(m["a"]), int(m["b"]), lang
    return None


def check_row(task: str, row: dict) -> str | None:
    """None when every step of the row's answer holds, else why not (the first bad line)."""
    q = parse_question(task, str(row.get("instruction", "")) + str(row.get("input") or ""))
    if q is None:
        return f"instruction is not a {task} question"
    a, b, lang = q
    try:
        TASKS[task].check(a, b, str(row.get("output", "")), lang)
    except StepError as e:
        return str(e)
    return None


def check_file(task: str, path: str) -> dict:
    from ...jsonl import read_jsonl

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
    from ..runner import Outputs, write_rows

    outputs = Outputs(cfg.out)
    rows = make_rows(cfg)
    write_rows(outputs, rows, {"kind": "synth task", "task": cfg.task, "digits": cfg.digits, "lang": cfg.lang,
                               "seed": cfg.seed, "split": cfg.split, "test_share": cfg.test_share,
                               "split_rule": "sha256('<task>:<min>:<max>') as a fraction < test_share → test"})
    return 0


__all__ = ["TASKS", "TaskConfig", "check_row", "is_test", "make_rows", "pairs", "parse_question", "task"]
