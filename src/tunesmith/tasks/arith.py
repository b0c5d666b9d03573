"""The arithmetic tasks (multiply, add) as a whole: which pairs exist in which split, the rows the
generator writes, the question read back from a prompt, and a row's answer checked step by step.

Held-out split rule: a pair belongs to the test split when the sha256 of
``"<task>:<smaller>:<larger>"`` read as a fraction in [0, 1) is below ``test_share`` (default
0.1), else to the train split. The key is the unordered pair, so 12*34 and 34*12 always fall on
the same side: a test question is never a training question, reversed or not. Train and test
files made with the same ``test_share`` never share a pair, whatever their seeds and sizes.
"""
from __future__ import annotations

import hashlib
import random

from ..errors import UserError
from . import add, multiply
from .answers import split_think
from .steps import LANGS, StepError, parse_ask

TASKS = {"multiply": multiply, "add": add}
ASK = {"multiply": "ask_mul", "add": "ask_add"}
ENUMERATE_UP_TO = 300_000  # pair spaces this small are listed whole; larger ones are sampled


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


THINK = ("none", "on", "off", "both")


def with_thinking(steps: str, think: bool) -> str:
    """The steps as a reasoning model answers: thinking on, every line but the last inside
    ``<think>…</think>`` and the final result as the answer; off, the final result alone."""
    *work, final = steps.splitlines()
    return f"<think>\n{chr(10).join(work)}\n</think>\n\n{final}" if think else final


def make_rows(task: str, digits: list[int], n: int, split: str = "train", seed: int = 0, test_share: float = 0.1,
              lang: str = "zh", think: str = "none") -> list[dict]:
    """Alpaca rows (``instruction``, ``input`` "", ``output`` the steps); ``lang`` "mix" draws
    zh or en per row. ``think``: "none" writes the steps as the answer; "on" the steps as the
    reasoning (``with_thinking``); "off" the final result alone; "both" every pair twice, on then
    off (n rows: n/2 pairs), so the same question teaches both sides of a thinking switch. Every
    row is checked before it is returned."""
    mod = TASKS[task]
    rng = random.Random(f"lang-{seed}")
    rows = []
    modes = {"on": [True], "off": [False], "both": [True, False]}.get(think, [None])
    for a, b in pairs(task, digits, -(-n // len(modes)), split, seed, test_share):
        row_lang = rng.choice(LANGS) if lang == "mix" else lang
        text = mod.steps(a, b, row_lang)
        mod.check(a, b, text, row_lang)  # a generator bug must never reach a dataset
        for mode in modes:
            out = text if mode is None else with_thinking(text, mode)
            rows.append({"instruction": mod.question(a, b, row_lang), "input": "", "output": out})
    return rows[:n]


def parse_question(task: str, text: str) -> tuple[int, int, str] | None:
    """``计算12*34`` → (12, 34, "zh"); None when it is no question of this task."""
    return parse_ask(ASK[task], text)


def check_row(task: str, row: dict) -> str | None:
    """None when every step of the row's answer holds, else why not (the first bad line)."""
    q = parse_question(task, str(row.get("instruction", "")) + str(row.get("input") or ""))
    if q is None:
        return f"instruction is not a {task} question"
    a, b, lang = q
    reasoning, answer = split_think(str(row.get("output", "")))
    try:  # an answer with its steps in a think block is checked as the steps then the final line
        TASKS[task].check(a, b, answer if reasoning is None else f"{reasoning}\n{answer}", lang)
    except StepError as e:
        return str(e)
    return None


def checked_task(row: dict) -> str | None:
    """The task whose step checker applies to an alpaca row: its instruction is a question of the
    task and its output passes ``check_row`` (a whole chain of thought, not a final line alone);
    else None. ``eval tasks`` judges the steps of a model's answer to such a row."""
    return next((t for t in TASKS if check_row(t, row) is None), None)
