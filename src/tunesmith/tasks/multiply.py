"""Multiplication as seed 001 wrote it: split each factor into place values, multiply every
pair of parts, then add the partial products one at a time, digit by digit, naming each carry.

    开始计算 874 * 265：
    把 (874, 265) 拆成：
    874 = 800 + 70 + 4
    265 = 200 + 60 + 5
    分别计算乘积：
    800 * 200 = 160000
    …
    开始相加乘积：
    计算 160000 + 048000：
    第0位，0 + 0 + 之前的进位 0 = 0
    …
    第4位，6 + 4 + 之前的进位 0 = 10；有进位1，保留0
    …
    所以，最终结果是231610
"""
from __future__ import annotations

from .steps import WORDS, Lines, StepError, addition_lines, check_addition, graded


def place_values(n: int) -> list[int]:
    """874 → [800, 70, 4]; zero digits are left out (805 → [800, 5]); 0 → [0]."""
    s = str(n)
    parts = [int(d) * 10 ** (len(s) - 1 - i) for i, d in enumerate(s) if d != "0"]
    return parts or [0]


def question(a: int, b: int, lang: str) -> str:
    return WORDS[lang]["ask_mul"].format(a=a, b=b)


def steps(a: int, b: int, lang: str) -> str:
    w = WORDS[lang]
    pa, pb = place_values(a), place_values(b)
    out = [w["start"].format(a=a, op="*", b=b), w["split"].format(a=a, b=b),
           f"{a} = " + " + ".join(map(str, pa)), f"{b} = " + " + ".join(map(str, pb)), w["parts"]]
    products = [x * y for x in pa for y in pb]
    out += [f"{x} * {y} = {x * y}" for x in pa for y in pb]
    total = products[0]
    if len(products) > 1:
        out.append(w["sum"])
        for p in products[1:]:
            out += addition_lines(total, p, lang)
            total += p
    return "\n".join(out + [w["final"].format(r=total)])


def check(a: int, b: int, text: str, lang: str) -> None:
    """Raise StepError at the first line of ``text`` that is not the right next step of a * b."""
    lines = Lines(text, lang)
    g = lines.take("start")
    if (g["a"], g["op"], g["b"]) != (str(a), "*", str(b)):
        lines.fail(f"starts on {g['a']} {g['op']} {g['b']}, the question is {a} * {b}")
    g = lines.take("split")
    if (g["a"], g["b"]) != (str(a), str(b)):
        lines.fail(f"splits ({g['a']}, {g['b']}), the question is ({a}, {b})")
    parts = []
    for n in (a, b):
        want = place_values(n)
        g = lines.take("split", f"{n} = " + " + ".join("{p%d}" % i for i in range(len(want))))
        got = [int(g[f"p{i}"]) for i in range(len(want))]
        if got != want:
            lines.fail(f"{n} splits into {' + '.join(map(str, want))}")
        parts.append(want)
    lines.take("parts")
    products = []
    for x in parts[0]:
        for y in parts[1]:
            g = lines.take("parts", "{x} * {y} = {z}")
            if (int(g["x"]), int(g["y"])) != (x, y) or g["z"] != str(x * y):
                lines.fail(f"expected {x} * {y} = {x * y}")
            products.append(x * y)
    total = products[0]
    if len(products) > 1:
        lines.take("sum")
        for p in products[1:]:
            total = check_addition(lines, total, p)
    g = lines.take("final")
    if g["r"] != str(a * b) or total != a * b:
        lines.fail(f"final result {g['r']}, expected {a * b}")
    lines.end()


def reward(completion: str, row: dict, step_weight: float = 0.5) -> float | None:
    """``1 - step_weight`` for the exact product, ``step_weight`` (default half) for the share of steps
    that hold (``steps.graded``); ``step_weight: 0`` rewards the exact product alone."""
    return graded(completion, row, "ask_mul", check, steps, lambda a, b: a * b, step_weight)


__all__ = ["check", "place_values", "question", "reward", "steps", "StepError"]
