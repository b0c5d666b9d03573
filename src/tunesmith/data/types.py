"""The one message format every source format is turned into."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..errors import UserError

Role = Literal["system", "user", "assistant", "tool"]


@dataclass
class Turn:
    """One message. ``reasoning`` is the assistant's thinking (rendered as the template
    expects, e.g. ``<think>…</think>``); ``tool_calls`` are kept as OpenAI dicts."""

    role: Role
    content: str
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class Conversation:
    """An optional system prompt, then turns. ``source`` is ``file:row`` for messages."""

    turns: list[Turn]
    system: str | None = None
    tools: list[dict[str, Any]] | None = None
    source: str = ""

    def to_messages(self) -> list[dict[str, Any]]:
        """OpenAI-style messages, ready for ``tokenizer.apply_chat_template``."""
        msgs: list[dict[str, Any]] = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        for t in self.turns:
            m: dict[str, Any] = {"role": t.role, "content": t.content}
            if t.reasoning is not None:
                m["reasoning_content"] = t.reasoning
            if t.tool_calls:
                m["tool_calls"] = t.tool_calls
            msgs.append(m)
        return msgs


@dataclass
class PreferencePair:
    """A DPO row: a shared prompt conversation, then a chosen and a rejected answer."""

    prompt: Conversation
    chosen: Turn
    rejected: Turn
    source: str = ""


@dataclass
class TextDoc:
    """One document of plain text for continued pretraining (``format: text``)."""

    text: str
    source: str = ""


class Unsupported(UserError):
    """Data tunesmith recognises but does not train on (KTO, multimodal, hub-only)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data, printed as ``file:row: field: message``.

    ``row`` is the line for JSONL and CSV files, the position (from 1) for JSON lists and
    parquet; a problem with a whole file (bad encoding, unknown format, a mapped column no
    row has) points at its first row. ``kind`` groups problems for the summary ("json",
    "encoding", "type", "missing", "empty", "role_order", "role_tag", "think", "duplicate",
    "column", "format", "template", "convert", "placeholder"). A ``warning`` does not make the
    row bad: training goes on with it (``data check --strict`` counts it as an error)."""

    file: str
    row: int | None
    field: str
    message: str
    kind: str = "type"
    warning: bool = False

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}:{self.row}"
        mark = "warning: " if self.warning else ""
        return f"{where}: {self.field}: {mark}{self.message}"
