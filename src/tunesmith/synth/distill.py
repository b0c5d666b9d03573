"""``tunesmith synth distill``: prompts → a teacher's answers (with its reasoning) → training rows.

Seed 000 sent identity questions and reasoning prompts to DeepSeek at 50 requests in flight
and turned ``reasoning_content`` into ``<think>…</think>`` answers. Here the reasoning goes
into the row's reasoning field (``reasoning_content`` in messages rows, an inline ``<think>``
block in alpaca rows), which the data layer reads and the chat template renders. Empty answers
and answers cut off at ``max_tokens`` (finish_reason ``length``) are dropped and counted,
never trained on.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import Section
from ..data.types import Conversation, Turn
from ..fsutil import sha256_file
from .runner import Item, Outputs, item_key, run_items, teacher_info, to_row, write_rows
from .teacher import TeacherConfig


class DistillConfig(Section):
    prompts: str = Field(..., description="prompts: JSONL/JSON/CSV of {prompt} / alpaca / messages rows, a .txt "
                                          "file (one per line), or a LLaMA-Factory dataset (DIR or DIR:name)")
    out: str = Field(..., description="output .jsonl file, or a folder (data.jsonl + manifest.json inside)")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    system: str | None = Field(None, description="system prompt sent with every prompt (e.g. who the assistant "
                                                 "is); replaces a row's own system prompt in the request")
    keep_system: bool = Field(False, description="also write the system option into the rows (default: no, so "
                                                 "the student learns to answer that way without it)")
    samples_per_prompt: int = Field(1, ge=1, description="answers per prompt (use temperature > 0)")
    format: Literal["messages", "alpaca"] = Field("messages", description="output rows: messages (reasoning_content field) or alpaca "
                                                "(<think> inline)")
    max_items: int | None = Field(None, ge=1, description="use only the first N prompts (a cheap trial run)")


def build_items(cfg: DistillConfig) -> list[Item]:
    from .prompts import read_prompts

    prompts = read_prompts(cfg.prompts)[:cfg.max_items]
    items = []
    for messages, source in prompts:
        own_system = messages[0]["content"] if messages[0]["role"] == "system" else None
        body = messages[1:] if own_system is not None else messages
        sent = [{"role": "system", "content": cfg.system}, *body] if cfg.system else messages
        for s in range(cfg.samples_per_prompt):
            items.append(Item(item_key(sent, cfg.teacher, s), sent,
                              {"source": source, "sample": s, "own_system": own_system}))
    return items


def distill(cfg: DistillConfig) -> int:
    outputs = Outputs(cfg.out)
    items = build_items(cfg)
    res = run_items(items, cfg.teacher, outputs, "distill", "distill")
    rows, empty, truncated = [], 0, 0
    for it in items:
        a = res.answers[it.key]
        if a["finish_reason"] == "length":
            truncated += 1
            continue
        if not a["content"].strip():
            empty += 1
            continue
        body = [m for m in it.messages if m["role"] != "system"]
        turns = [Turn(m["role"], m["content"]) for m in body] + [Turn("assistant", a["content"], a["reasoning"])]
        system = cfg.system if (cfg.system and cfg.keep_system) else it.meta["own_system"]
        rows.append(to_row(Conversation(turns, system=system, source=it.meta["source"]), cfg.format))
    if empty or truncated:
        print(f"  dropped {empty} empty and {truncated} truncated answers (finish_reason length: raise "
              "teacher.max_tokens)")
    write_rows(outputs, rows, {"kind": "synth distill", "teacher": teacher_info(cfg.teacher),
                               "prompts": cfg.prompts, "prompts_sha256": _sha(cfg.prompts), "system": cfg.system,
                               "samples_per_prompt": cfg.samples_per_prompt, "format": cfg.format,
                               "requested": len(items), "dropped_empty": empty, "dropped_truncated": truncated,
                               "with_reasoning": sum(bool(res.answers[it.key]["reasoning"]) for it in items),
                               "requests_this_run": res.requests, "tokens_this_run": res.tokens})
    return 0


def _sha(path: str) -> str | None:
    from pathlib import Path

    p = Path(path)
    return sha256_file(p) if p.is_file() else None
