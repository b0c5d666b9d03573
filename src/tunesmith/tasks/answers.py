"""Reading an answer: its final number, its normal form, whether it names a value, its think block.

The one copy of answer extraction and matching: ``eval tasks`` scores with it, the step checker's
final line is read with it, and the rewards (rewards.py) judge completions with it.
"""
from __future__ import annotations

import re
import unicodedata

NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
END_PUNCT = " \t\n.。!！?？,，;；:：\"'“”‘’()（）[]【】"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def last_number(text: str) -> str | None:
    """The final number of a text ("所以，最终结果是231610" → "231610"; thousands commas dropped)."""
    found = NUMBER.findall(text or "")
    return found[-1].replace(",", "") if found else None


def normalise(text: str) -> str:
    t = unicodedata.normalize("NFKC", text or "").casefold()
    return " ".join(t.split()).strip(END_PUNCT)


def correct(kind: str, answer: str, expect: str) -> bool:
    """``number``: same final number; ``contains``: the normalised answer contains the expected
    text; else (``exact``, ``label``) the normalised texts are equal."""
    if kind == "number":
        got = last_number(answer)
        return got is not None and got == last_number(expect)
    if kind == "contains":
        return normalise(expect) in normalise(answer)
    return normalise(answer) == normalise(expect)


def as_label(answer: str, labels: list[str]) -> str | None:
    """The label a generated answer names exactly (normalised), else None."""
    n = normalise(answer)
    return next((l for l in labels if normalise(l) == n), None)


def mentions(text: str, values: list[str]) -> bool:
    """Whether ``text`` names any of ``values`` (case-insensitive). Latin names match as whole
    words ("Mira" is not in "admiral"); CJK names match anywhere, as CJK has no spaces."""
    for v in values:
        if not v:
            continue
        pattern = re.escape(v.casefold())
        if v[0].isascii() and v[0].isalnum():
            pattern = r"(?<![a-z0-9])" + pattern
        if v[-1].isascii() and v[-1].isalnum():
            pattern += r"(?![a-z0-9])"
        if re.search(pattern, text.casefold()):
            return True
    return False


def split_think(text: str) -> tuple[str | None, str]:
    """``(reasoning, answer)``: a ``<think>…</think>`` block at the start of ``text`` and what
    follows it; ``(None, text)`` when the text does not open with a closed think block."""
    t = (text or "").lstrip()
    if not t.startswith(THINK_OPEN):
        return None, text or ""
    end = t.find(THINK_CLOSE)
    if end < 0:
        return None, text
    return t[len(THINK_OPEN):end].strip(), t[end + len(THINK_CLOSE):].strip()
