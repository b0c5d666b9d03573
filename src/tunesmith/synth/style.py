"""``tunesmith synth style``: answer each question of a corpus in its author's style.

Seed 001: for each question Q the teacher sees k *other* Q/A pairs of the author and answers
Q. Showing Q's own answer would teach copying, so it is never among the examples — nor is
any pair with the same question or the same answer text (a duplicate row would leak it).
Examples are drawn with a seeded generator per question, so a rerun sends the same prompts
and resumes.
"""
from __future__ import annotations

import random
import re
from typing import Literal

from pydantic import Field, field_validator

from ..config import Section
from ..data.types import Conversation, Turn
from ..errors import UserError
from .runner import Item, Outputs, item_key, run_items, teacher_info, to_row, write_rows
from .teacher import TeacherConfig

TEMPLATES = {
    "en": ("Below are questions answered by one author. Study the author's voice: word choice, sentence "
           "length, tone, how they open and close an answer.\n\n{examples}\n\nNow answer the next question "
           "the way this author would, in the same voice and at a similar length. Write only the answer.\n\n"
           "Question: {question}"),
    "zh": ("下面是同一位作者回答的几个问题。请仔细体会这位作者的风格：用词、句子长短、语气，以及开头和结尾的方式。\n\n"
           "{examples}\n\n请以这位作者的口吻、相近的篇幅回答下面的问题。只写回答本身。\n\n问题：{question}"),
}
EXAMPLE = {"en": "Question: {q}\nAnswer: {a}", "zh": "问题：{q}\n回答：{a}"}
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def language_of(texts: list[str]) -> str:
    """zh when CJK characters are at least a fifth of the letters, else en."""
    sample = "".join(texts)[:20000]
    letters = sum(ch.isalpha() for ch in sample) or 1
    return "zh" if len(CJK.findall(sample)) / letters >= 0.2 else "en"


class StyleConfig(Section):
    corpus: str = Field(..., description="the author's Q/A pairs: alpaca / messages / sharegpt JSONL or a "
                                         "LLaMA-Factory dataset")
    out: str = Field(..., description="output .jsonl file, or a folder (data.jsonl + manifest.json inside)")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    k: int = Field(3, ge=1, description="other Q/A pairs shown as style examples")
    seed: int = Field(0, description="which examples each question gets")
    language: Literal["auto", "en", "zh"] = Field("auto", description="the default template's language "
                                                                      "(auto: from the corpus)")
    template: str | None = Field(None, description="prompt with {examples} and {question} (default: a zh or en "
                                                   "template by language)")
    format: Literal["messages", "alpaca"] = Field("messages", description="output rows: messages or alpaca")
    max_items: int | None = Field(None, ge=1, description="answer only the first N questions (a cheap trial run)")

    @field_validator("template")
    @classmethod
    def _placeholders(cls, v):
        if v is not None and ("{examples}" not in v or "{question}" not in v):
            raise ValueError("the template needs both {examples} and {question}")
        return v


def build_items(cfg: StyleConfig) -> list[Item]:
    from .prompts import qa_pair, read_conversations

    convs = read_conversations(cfg.corpus, "corpus")
    pairs = [(p, c.source) for c in convs if (p := qa_pair(c))]
    if len(pairs) <= cfg.k:
        raise UserError(f"corpus: {cfg.corpus} has {len(pairs)} Q/A pairs; k={cfg.k} examples per question need "
                        f"at least {cfg.k + 1}")
    lang = cfg.language if cfg.language != "auto" else language_of([q + a for (q, a), _ in pairs])
    template = cfg.template or TEMPLATES[lang]
    items = []
    for i, ((q, a), source) in enumerate(pairs[:cfg.max_items]):
        # Never the question's own answer: not this row, nor a row repeating its question or answer.
        others = [j for j, ((q2, a2), _) in enumerate(pairs) if j != i and q2.strip() != q.strip()
                  and a2.strip() != a.strip()]
        if len(others) < cfg.k:
            raise UserError(f"{source}: only {len(others)} other Q/A pairs differ from this one; k={cfg.k}")
        picked = random.Random(f"{cfg.seed}:{i}").sample(others, cfg.k)
        examples = "\n\n".join(EXAMPLE[lang].format(q=pairs[j][0][0], a=pairs[j][0][1]) for j in picked)
        prompt = template.replace("{examples}", examples).replace("{question}", q)
        messages = [{"role": "user", "content": prompt}]
        items.append(Item(item_key(messages, cfg.teacher), messages,
                          {"source": source, "question": q, "examples": [pairs[j][1] for j in picked]}))
    return items


def style(cfg: StyleConfig) -> int:
    outputs = Outputs(cfg.out)
    items = build_items(cfg)
    res = run_items(items, cfg.teacher, outputs, "style", "style")
    rows, dropped = [], 0
    for it in items:
        a = res.answers[it.key]
        if a["finish_reason"] == "length" or not a["content"].strip():
            dropped += 1
            continue
        conv = Conversation([Turn("user", it.meta["question"]), Turn("assistant", a["content"], a["reasoning"])],
                            source=it.meta["source"])
        rows.append(to_row(conv, cfg.format))
    if dropped:
        print(f"  dropped {dropped} empty or truncated answers")
    write_rows(outputs, rows, {"kind": "synth style", "teacher": teacher_info(cfg.teacher), "corpus": cfg.corpus,
                               "k": cfg.k, "seed": cfg.seed, "format": cfg.format, "requested": len(items),
                               "dropped_empty_or_truncated": dropped, "requests_this_run": res.requests})
    return 0
