"""Prompts and Q/A pairs for the synth verbs, read through the data layer.

A prompts file needs no answers: a JSONL/JSON/CSV/parquet file of ``{"prompt"}``,
``{"instruction", "input"}`` (alpaca) or ``{"messages"}`` rows (a trailing answer is
dropped), or a .txt file with one prompt per line. Anything else the data layer reads (a
LLaMA-Factory folder, ``DIR:name``, a recipe) is read as conversations whose last answer is
dropped.
"""
from __future__ import annotations

from pathlib import Path

from ..data.load import load_conversations
from ..data.readers import SUFFIXES, TEXT_SUFFIX, read_file
from ..data.specs import expand_spec
from ..data.types import Conversation
from ..errors import UserError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}


def _row_messages(row: object, where: str) -> list[dict]:
    if not isinstance(row, dict):
        raise UserError(f"{where}: a prompt row is an object with prompt, instruction or messages")
    system = row.get("system")
    head = [{"role": "system", "content": system}] if isinstance(system, str) and system.strip() else []
    if isinstance(row.get("prompt"), str):
        return head + [{"role": "user", "content": row["prompt"]}]
    if isinstance(row.get("instruction"), str):
        extra = row.get("input")
        text = row["instruction"] + (f"\n{extra}" if isinstance(extra, str) and extra else "")
        return head + [{"role": "user", "content": text}]
    if isinstance(row.get("text"), str):
        return [{"role": "user", "content": row["text"]}]
    msgs = row.get("messages", row.get("conversations"))
    if isinstance(msgs, list) and all(isinstance(m, dict) for m in msgs):
        out = [{"role": SHAREGPT_ROLES.get(m.get("role", m.get("from")), "?"),
                "content": m.get("content", m.get("value"))} for m in msgs]
        while out and out[-1]["role"] == "assistant":
            out.pop()
        if out and out[-1]["role"] == "user" and all(isinstance(m["content"], str) and m["role"] != "?" for m in out):
            return head + out
    raise UserError(f"{where}: a prompt row needs prompt, instruction or messages ending with a user turn")


def read_prompts(spec: str, field: str = "prompts") -> list[tuple[list[dict], str]]:
    """``(messages, "file:row")`` for every prompt. Raises UserError naming the bad row."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() in SUFFIXES + (TEXT_SUFFIX,):
        records, problems = read_file(path)
        if problems:
            raise UserError(f"{field}: {problems[0]}")
        out = [(_row_messages(r.data, f"{r.file}:{r.row}"), f"{r.file}:{r.row}") for r in records]
        if not out:
            raise UserError(f"{field}: {spec} has no prompts")
        for msgs, where in out:
            if not msgs[-1]["content"].strip():
                raise UserError(f"{where}: the prompt is empty")
        return out
    convs = read_conversations(spec, field)
    return [(c.to_messages()[:-1], c.source) for c in convs]


def read_conversations(spec: str, field: str) -> list[Conversation]:
    """Every good conversation a SPEC names; the first bad row is an error (synth spends money
    on every row, so it does not guess)."""
    if not Path(spec).expanduser().exists() and ":" not in spec:
        raise UserError(f"{field}: {spec} not found")
    expanded = expand_spec(spec)
    convs: list[Conversation] = []
    for ds in expanded.datasets:
        rows, problems = load_conversations(ds, expanded.dataset_dir)
        if problems:
            raise UserError(f"{field}: {problems[0]}")
        convs += rows
    if not convs:
        raise UserError(f"{field}: {spec} has no rows")
    return convs


def qa_pair(conv: Conversation) -> tuple[str, str] | None:
    """The last question and its answer, or None when the conversation does not end so."""
    if len(conv.turns) < 2 or conv.turns[-1].role != "assistant" or conv.turns[-2].role != "user":
        return None
    return conv.turns[-2].content, conv.turns[-1].content
