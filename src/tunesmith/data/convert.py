"""The one message format → alpaca, sharegpt or OpenAI-messages rows (what ``data convert``
writes). Each writer is the inverse of the reader of its format, so a converted file reads
back to the same conversations. What a format can't hold is a RowError, never dropped."""
from __future__ import annotations

import json

from .formats import RowError
from .types import Conversation, PreferencePair, Turn


def answer_text(turn: Turn) -> str:
    """An answer with its reasoning inline, the way alpaca and sharegpt files carry it."""
    if turn.reasoning is None:
        return turn.content
    return f"<think>\n{turn.reasoning}\n</think>\n\n{turn.content}"


def to_alpaca(obj: Conversation | PreferencePair) -> dict:
    conv = obj.prompt if isinstance(obj, PreferencePair) else obj
    turns = conv.turns if isinstance(obj, PreferencePair) else conv.turns[:-1]
    if conv.tools or any(t.tool_calls or t.role == "tool" for t in conv.turns):
        raise RowError("tools", "alpaca can't hold tool calls; convert --to sharegpt or messages", "convert")
    pairs = [(turns[k].content, answer_text(turns[k + 1])) for k in range(0, len(turns) - 1, 2)]
    row: dict = {"instruction": turns[-1].content, "input": ""}
    if isinstance(obj, PreferencePair):
        row.update(chosen=answer_text(obj.chosen), rejected=answer_text(obj.rejected))
    else:
        row["output"] = answer_text(conv.turns[-1])
    if conv.system:
        row["system"] = conv.system
    if pairs:
        row["history"] = [list(p) for p in pairs]
    return row


def _sharegpt_turns(turns: list[Turn]) -> list[dict]:
    out = []
    for t in turns:
        if t.role == "assistant" and t.tool_calls:
            if t.content.strip() or t.reasoning:
                raise RowError("tool_calls", "sharegpt can't hold an answer with both text and tool calls; "
                               "convert --to messages", "convert")
            calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in t.tool_calls]
            value = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
            out.append({"from": "function_call", "value": value})
        else:
            tag = {"user": "human", "assistant": "gpt", "tool": "observation"}[t.role]
            out.append({"from": tag, "value": answer_text(t) if t.role == "assistant" else t.content})
    return out


def to_sharegpt(obj: Conversation | PreferencePair) -> dict:
    conv = obj.prompt if isinstance(obj, PreferencePair) else obj
    row: dict = {"conversations": _sharegpt_turns(conv.turns)}
    if conv.system:
        row["system"] = conv.system
    if conv.tools:
        row["tools"] = json.dumps(conv.tools, ensure_ascii=False)  # LLaMA-Factory keeps tools as JSON text
    if isinstance(obj, PreferencePair):
        row["chosen"] = _sharegpt_turns([obj.chosen])[0]
        row["rejected"] = _sharegpt_turns([obj.rejected])[0]
    return row


def _message(t: Turn) -> dict:
    return Conversation([t]).to_messages()[0]


def to_messages(obj: Conversation | PreferencePair) -> dict:
    conv = obj.prompt if isinstance(obj, PreferencePair) else obj
    row: dict = {"messages": conv.to_messages()}
    if conv.tools:
        row["tools"] = conv.tools
    if isinstance(obj, PreferencePair):
        row["chosen"] = _message(obj.chosen)
        row["rejected"] = _message(obj.rejected)
    return row


WRITERS = {"alpaca": to_alpaca, "sharegpt": to_sharegpt, "messages": to_messages}
