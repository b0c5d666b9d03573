"""The written step format shared by the task generators and their checkers (seed 001), and the
graded reward both arithmetic tasks give a completion.

Each line of a chain of thought is one template below, in Chinese (the seed's own wording) or
English. A generator fills the templates; a checker matches each line against its template
(numbers become ``(\\d+)`` groups) and recomputes every number, so a wrong digit anywhere fails.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from .answers import last_number, split_think

WORDS = {
    "zh": {"ask_mul": "计算{a}*{b}", "ask_add": "计算{a}+{b}", "start": "开始计算 {a} {op} {b}：",
           "split": "把 ({a}, {b}) 拆成：", "parts": "分别计算乘积：", "sum": "开始相加乘积：",
           "add": "计算 {x} + {y}：", "digit": "第{i}位，{p} + {q} + 之前的进位 {c} = {s}",
           "carry": "；有进位1，保留{k}", "result": "得到结果 = {r}", "final": "所以，最终结果是{r}"},
    "en": {"ask_mul": "Compute {a}*{b}", "ask_add": "Compute {a}+{b}", "start": "Start computing {a} {op} {b}:",
           "split": "Split ({a}, {b}) into:", "parts": "Multiply the parts:", "sum": "Add the products:",
           "add": "Compute {x} + {y}:", "digit": "Digit {i}: {p} + {q} + previous carry {c} = {s}",
           "carry": "; carry 1, keep {k}", "result": "Result = {r}", "final": "So the final result is {r}"},
}
LANGS = tuple(WORDS)


class StepError(ValueError):
    """A line of a chain of thought that does not hold: ``line`` is 1-based (0: the whole text)."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line


def pattern(template: str) -> re.Pattern:
    """A template as a full-line regex: each ``{name}`` is a run of digits (``op``: + or *)."""
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out += re.escape(template[pos:m.start()])
        out += r"(?P<op>[+*])" if m.group(1) == "op" else rf"(?P<{m.group(1)}>\d+)"
        pos = m.end()
    return re.compile(out + re.escape(template[pos:]) + r"\Z")


class Lines:
    """A cursor over the non-blank lines of an answer, matching one template at a time."""

    def __init__(self, text: str, lang: str):
        self.lines = [s.strip() for s in text.strip().splitlines() if s.strip()]
        self.words, self.n = WORDS[lang], 0

    def take(self, key: str, template: str | None = None) -> dict[str, str]:
        self.n += 1
        if self.n > len(self.lines):
            raise StepError(self.n, f"missing (expected '{self.words[key]}')")
        m = pattern(template or self.words[key]).match(self.lines[self.n - 1])
        if not m:
            raise StepError(self.n, f"'{self.lines[self.n - 1]}' is not '{template or self.words[key]}'")
        return m.groupdict()

    def fail(self, message: str):
        raise StepError(self.n, message)

    def end(self) -> None:
        if self.n < len(self.lines):
            raise StepError(self.n + 1, f"unexpected line '{self.lines[self.n]}' after the final result")


def addition_lines(x: int, y: int, lang: str) -> list[str]:
    """``x + y`` digit by digit: both padded with zeros to the longer operand's width, each
    position with the carry it received and, when it makes one, the carry it passes on; a carry
    out of the top position gets one more line (``0 + 0 + carry 1 = 1``).

    The width comes from the operands, not the sum: every line is then decided by text already
    written, where padding to the sum's width would need the sum before its first digit."""
    w = WORDS[lang]
    width = max(len(str(x)), len(str(y)))
    xs, ys = str(x).zfill(width), str(y).zfill(width)
    out, carry = [w["add"].format(x=xs, y=ys)], 0
    for i in range(width):
        p, q = int(xs[-1 - i]), int(ys[-1 - i])
        s = p + q + carry
        line = w["digit"].format(i=i, p=p, q=q, c=carry, s=s)
        out.append(line + (w["carry"].format(k=s % 10) if s >= 10 else ""))
        carry = s // 10
    if carry:
        out.append(w["digit"].format(i=width, p=0, q=0, c=carry, s=carry))
    return out + [w["result"].format(r=x + y)]


def check_addition(lines: Lines, x: int, y: int) -> int:
    """Check one addition block of ``x + y`` at the cursor; returns the sum."""
    g = lines.take("add")
    xs, ys = g["x"], g["y"]
    if int(xs) != x or int(ys) != y:
        lines.fail(f"adds {int(xs)} + {int(ys)}, expected {x} + {y}")
    width = max(len(str(x)), len(str(y)))
    if len(xs) != width or len(ys) != width:
        lines.fail(f"operands must be padded to {width} digits, the width of the longer one")
    carry = 0
    for i in range(width + 1):
        if i == width and not carry:
            break
        p, q = (int(xs[-1 - i]), int(ys[-1 - i])) if i < width else (0, 0)
        s = p + q + carry
        want = {"i": str(i), "p": str(p), "q": str(q), "c": str(carry), "s": str(s)}
        tpl = lines.words["digit"] + (lines.words["carry"] if s >= 10 else "")
        g = lines.take("digit", tpl)
        if s >= 10:
            want["k"] = str(s % 10)
        bad = [k for k in want if g.get(k) != want[k]]
        if bad:
            lines.fail(f"position {i}: expected " + lines.words["digit"].format(**want))
        carry = s // 10
    g = lines.take("result")
    if g["r"] != str(x + y):
        lines.fail(f"result {g['r']}, expected {x + y}")
    return x + y


def parse_ask(key: str, text: str) -> tuple[int, int, str] | None:
    """``计算12*34`` with ``key`` "ask_mul" → (12, 34, "zh"); None when ``text`` is no such question."""
    for lang in LANGS:
        m = pattern(WORDS[lang][key]).match((text or "").strip())
        if m:
            return int(m["a"]), int(m["b"]), lang
    return None


def step_share(check: Callable, a: int, b: int, text: str, lang: str, n_lines: int) -> float:
    """Share of the ``n_lines`` lines of the right answer that ``text`` writes right before its
    first wrong one: 1.0 when every line holds; a right answer with a line too many gets (n-1)/n."""
    try:
        check(a, b, text, lang)
    except StepError as e:
        return min(max(e.line - 1, 0), n_lines - 1) / n_lines
    return 1.0


def graded(completion: str, row: dict, ask: str, check: Callable, steps: Callable,
           value: Callable[[int, int], int], weight: float = 0.5) -> float | None:
    """An arithmetic task's reward in [0, 1]: ``1 - weight`` for the exact final result (the last
    number of the answer, after a think block if any), ``weight`` (default half) for the share of
    steps that hold. None when the row's prompt is no question of the task (the reward does not
    apply to it)."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ValueError(f"step_weight must be a number from 0 to 1, got {weight!r}")
    q = parse_ask(ask, row.get("prompt", ""))
    if q is None:
        return None
    a, b, lang = q
    _, answer = split_think(completion)
    exact = float(last_number(answer) == str(value(a, b)))
    if not weight:
        return exact
    return (1 - weight) * exact + weight * step_share(check, a, b, answer, lang, len(steps(a, b, lang).splitlines()))
