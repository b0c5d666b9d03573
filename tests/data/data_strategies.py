"""Hypothesis strategies shared by the data tests: abstract conversations whose texts are
built from pieces that stress tokenizers, JSON and Jinja (CJK, emoji, U+2028, braces)."""
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from tunesmith.data import Conversation, Turn

PIECES = ["hello", "world", " Bob", "42", "3.14", "é", "中文", "🙂", "{{ x }}", "{% if %}", "<b>", "\n", "\n\n",
          "\t", " ", "  ", ",", ".", "?", "<", ">", "/", "\\", '"q"', "'", "im_end", "\u2028", "\x85", "Ünï"]
text = st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map(lambda p: "".join(p).strip()).filter(bool)
tool_name = st.sampled_from(["get_weather", "lookup", "calc"])
tool_args = st.dictionaries(st.sampled_from(["city", "q", "n"]), text, max_size=2)


@dataclass
class Answer:
    content: str
    reasoning: str | None = None
    calls: list[tuple[str, dict]] | None = None


@st.composite
def answers(draw):
    return Answer(draw(text), draw(st.none() | st.just("") | text))


@st.composite
def conversations(draw, multi: bool = True, tools: bool = False):
    """(system, turns): turns are ("user", str) | ("assistant", Answer) | ("tool", str)."""
    turns = []
    for _ in range(draw(st.integers(1, 3 if multi else 1))):
        turns.append(("user", draw(text)))
        if tools and draw(st.booleans()):
            calls = draw(st.lists(st.tuples(tool_name, tool_args), min_size=1, max_size=2))
            turns.append(("assistant", Answer("", None, calls)))
            turns += [("tool", draw(text)) for _ in calls]
        turns.append(("assistant", draw(answers())))
    return draw(st.none() | text), turns


def inline(a: Answer) -> str:
    return a.content if a.reasoning is None else f"<think>\n{a.reasoning}\n</think>\n\n{a.content}"


def tool_decl(turns) -> list[dict]:
    names = sorted({n for r, a in turns if r == "assistant" and a.calls for n, _ in a.calls})
    return [{"type": "function", "function": {"name": n, "description": f"the {n} tool",
                                               "parameters": {"type": "object", "properties": {}}}} for n in names]


def to_conversation(system, turns) -> Conversation:
    """The abstract conversation as tunesmith's own type (what reading any format must give)."""
    out = []
    for role, x in turns:
        if role != "assistant":
            out.append(Turn(role, x))
            continue
        calls = [{"type": "function", "function": {"name": n, "arguments": a}} for n, a in x.calls or []]
        out.append(Turn("assistant", x.content, reasoning=x.reasoning, tool_calls=calls or None))
    return Conversation(out, system=system, tools=tool_decl(turns) or None)
