"""Reasoning split from <think> tags, however the stream cuts the text into pieces."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tunesmith.infer.think import ThinkSplitter

CASES = [
    # (answer text, template opened the block in the prompt, reasoning, content)
    ("<think>\nadd 2 and 2\n</think>\n\nIt is 4.", False, "\nadd 2 and 2\n", "It is 4."),
    ("  <think>x</think>y", False, "x", "y"),
    ("plain answer, no tags", False, "", "plain answer, no tags"),
    ("a <think> later is text", False, "", "a <think> later is text"),
    ("only reasoning</think>\n\nthe answer", True, "only reasoning", "the answer"),
    ("<think>cut off by max_tokens", False, "cut off by max_tokens", ""),
    ("<thin", False, "", "<thin"),
]


def run(text: str, opened: bool, cuts: list[int]) -> tuple[str, str, bool]:
    s = ThinkSplitter(opened)
    r, c = [], []
    bounds = sorted({0, len(text), *[x % (len(text) + 1) for x in cuts]})
    for a, b in zip(bounds, bounds[1:]):
        x, y = s.feed(text[a:b])
        r.append(x)
        c.append(y)
    x, y = s.feed("", final=True)
    return "".join(r + [x]), "".join(c + [y]), s.seen


@given(st.sampled_from(CASES), st.lists(st.integers(0, 200), max_size=8))
def test_split_is_the_same_for_any_chunking(case, cuts):
    text, opened, reasoning, content = case
    got_r, got_c, seen = run(text, opened, cuts)
    assert (got_r, got_c) == (reasoning, content)
    assert seen == (opened or "<think>" in text.lstrip()[:7])
