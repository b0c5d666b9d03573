"""Addition with carries, the same digit-by-digit block the multiplication uses to add its parts.

    开始计算 478 + 356：
    计算 478 + 356：
    第0位，8 + 6 + 之前的进位 0 = 14；有进位1，保留4
    …
    得到结果 = 834
    所以，最终结果是834
"""
from __future__ import annotations

from .steps import WORDS, Lines, addition_lines, check_addition, graded


def question(a: int, b: int, lang: str) -> str:
    return WORDS[lang]["ask_add"].format(a=a, b=b)


def steps(a: int, b: int, lang: str) -> str:
    w = WORDS[lang]
    return "\n".join([w["start"].format(a=a, op="+", b=b), *addition_lines(a, b, lang), w["final"].format(r=a + b)])


def check(a: int, b: int, text: str, lang: str) -> None:
    """Raise StepError at the first line of ``text`` that is not the right next step of a + b."""
    lines = Lines(text, lang)
    g = lines.take("start")
    if (g["a"], g["op"], g["b"]) != (str(a), "+", str(b)):
        lines.fail(f"starts on {g['a']} {g['op']} {g['b']}, the question is {a} + {b}")
    total = check_addition(lines, a, b)
    g = lines.take("final")
    if g["r"] != str(a + b) or total != a + b:
        lines.fail(f"final result {g['r']}, expected {a + b}")
    lines.end()


def reward(completion: str, row: dict, step_weight: float = 0.5) -> float | None:
    """``1 - step_weight`` for the exact sum, ``step_weight`` (default half) for the share of steps
    that hold (``steps.graded``); ``step_weight: 0`` rewards the exact sum alone."""
    return graded(completion, row, "ask_add", check, steps, lambda a, b: a + b, step_weight)
