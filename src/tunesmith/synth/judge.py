"""``tunesmith synth judge``: a teacher scores each row 1–10 against a rubric; good rows are kept.

Judges answer in many shapes ("Score: 8", "**8/10**", "评分：8分", "I'd give it 8 out of 10");
``parse_score`` reads those and nothing else. A reply with no readable score is counted and the
row is not kept (an unscored row is not a good row), and every score — or its absence — is
written to scores.jsonl beside the output.
"""
from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import Field

from ..config import Section
from ..data.convert import answer_text
from ..data.types import Conversation
from ..fsutil import write_atomic
from .runner import Item, Outputs, item_key, run_items, teacher_info, to_row, write_rows
from .teacher import TeacherConfig

RUBRIC = {
    "faithfulness": "The answer is correct and stays true to the question (and to any passage given): no "
                    "invented facts, nothing that contradicts the source.",
    "style": "The answer reads naturally, is well organised and fits the voice the question calls for.",
}
TEMPLATE = ("You are a strict grader. Rate the answer below from 1 (useless) to 10 (excellent) against "
            "these criteria:\n{rubric}\n\n[Question]\n{question}\n\n[Answer]\n{answer}\n\nGive one overall "
            "score. End your reply with a line of the form: Score: N")

_PATTERNS = [
    re.compile(r"(?:score|rating|grade|评分|得分|分数)\s*(?:is|of|=|:|：)?\s*[*_\s]*(\d{1,2}(?:\.\d+)?)", re.I),
    re.compile(r"(\d{1,2}(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.I),
    re.compile(r"(\d{1,2}(?:\.\d+)?)\s*分"),
    re.compile(r"^\W*(\d{1,2}(?:\.\d+)?)\W*$"),
]


def parse_score(text: str) -> float | None:
    """The score (1–10) a judge's reply gives, or None. The last match of the most explicit form
    wins ("Score: 3 … revised Score: 8" is 8); numbers outside 1–10 are not scores."""
    for pat in _PATTERNS:
        found = [float(m) for m in pat.findall(text or "")]
        found = [v for v in found if 1 <= v <= 10]
        if found:
            return found[-1]
    return None


class JudgeConfig(Section):
    input: str = Field(..., description="rows to judge (alpaca / messages JSONL or a LLaMA-Factory dataset)")
    out: str = Field(..., description="kept rows: a .jsonl file, or a folder (data.jsonl + scores.jsonl inside)")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    min_score: float = Field(7.0, ge=1, le=10, description="keep rows scoring at least this (1-10)")
    rubric: dict[str, str] = Field(default_factory=lambda: dict(RUBRIC), description="criterion → what it means "
                                                                                      "(default: faithfulness, style)")
    template: str = Field(TEMPLATE, description="judge prompt with {rubric}, {question} and {answer}")
    format: Literal["messages", "alpaca"] = Field("messages", description="output rows: messages or alpaca")
    max_items: int | None = Field(None, ge=1, description="judge only the first N rows (a cheap trial run)")


def judge_items(convs: list[Conversation], teacher: TeacherConfig, rubric: dict[str, str], template: str) -> list[Item]:
    crit = "\n".join(f"- {name}: {what}" for name, what in rubric.items())
    items = []
    for c in convs:
        question = "\n\n".join(t.content for t in c.turns[:-1] if t.role == "user")
        prompt = template.replace("{rubric}", crit).replace("{question}", question) \
            .replace("{answer}", answer_text(c.turns[-1]))
        messages = [{"role": "user", "content": prompt}]
        items.append(Item(item_key(messages, teacher), messages, {"source": c.source}))
    return items


def score_all(convs: list[Conversation], teacher: TeacherConfig, rubric: dict[str, str], template: str,
              outputs: Outputs, step: str = "judge") -> list[tuple[float | None, str]]:
    """``(score or None, the judge's reply)`` for each conversation, in order; scores.jsonl written."""
    items = judge_items(convs, teacher, rubric, template)
    res = run_items(items, teacher, outputs, step, "judge")
    out = [(parse_score(res.answers[it.key]["content"]), res.answers[it.key]["content"]) for it in items]
    write_atomic(outputs.beside("scores.jsonl"), "".join(
        json.dumps({"source": it.meta["source"], "score": s, "reply": reply[-300:]}, ensure_ascii=False) + "\n"
        for it, (s, reply) in zip(items, out)))
    bad = sum(s is None for s, _ in out)
    if bad:
        print(f"  judge: {bad} of {len(out)} replies had no score that could be read (score null in "
              f"{outputs.beside('scores.jsonl')}); those rows are not kept")
    return out


def judge(cfg: JudgeConfig) -> int:
    from .prompts import read_conversations

    outputs = Outputs(cfg.out)
    convs = read_conversations(cfg.input, "input")[:cfg.max_items]
    scores = score_all(convs, cfg.teacher, cfg.rubric, cfg.template, outputs)
    kept = [c for c, (s, _) in zip(convs, scores) if s is not None and s >= cfg.min_score]
    unparsed = sum(s is None for s, _ in scores)
    print(f"  kept {len(kept)} of {len(convs)} rows scoring ≥ {cfg.min_score}")
    write_rows(outputs, [to_row(c, cfg.format) for c in kept],
               {"kind": "synth judge", "teacher": teacher_info(cfg.teacher), "input": cfg.input,
                "min_score": cfg.min_score, "rubric": cfg.rubric, "judged": len(convs), "kept": len(kept),
                "unparseable": unparsed, "scores": str(outputs.beside("scores.jsonl")), "format": cfg.format})
    return 0
