"""What makes a parsed row bad (empty turns, roles out of order, no answer), duplicates and
unfilled placeholders: row-level checks only (``data/audit.py`` checks whole datasets)."""
from __future__ import annotations

import hashlib
import re

from .types import Conversation, PreferencePair, TextDoc, Turn

# Identity placeholders: ms-swift's {{NAME}}/{{AUTHOR}} and LLaMA-Factory's {{name}}/{{author}}.
PLACEHOLDER = re.compile(r"\{\{\s*(NAME|AUTHOR|name|author)\s*\}\}")
FILL_HINT = ("fill them with `tunesmith identity --identity_data DIR:NAME --name ... --author ...` "
             "(or replace them in the file)")

# Which role may follow which; "start" is before the first turn.
_NEXT = {"start": {"user"}, "user": {"assistant"}, "assistant": {"user"}, "tool": {"tool", "assistant"}}
_ROLE_WORDS = {"user": "a user turn", "assistant": "an assistant turn", "tool": "a tool result", "start": "the start"}


def turn_problems(turns: list[Turn], fields: list[str], answer_last: bool = True) -> list[tuple[str, str, str]]:
    """(field, message, kind) for each problem of a turn sequence; only the first order problem."""
    out: list[tuple[str, str, str]] = []
    prev, prev_calls, order_bad = "start", False, False
    for turn, f in zip(turns, fields):
        if turn.role == "assistant":
            if not turn.content.strip() and not turn.tool_calls:
                out.append((f, "empty answer", "empty"))
        elif not turn.content.strip():
            out.append((f, f"empty {turn.role} turn", "empty"))
        allowed = _NEXT[prev] | ({"tool"} if prev == "assistant" and prev_calls else set())
        if turn.role not in allowed and not order_bad:
            want = " or ".join(_ROLE_WORDS[r] for r in sorted(allowed))
            out.append((f, f"roles out of order: {_ROLE_WORDS[turn.role]} after {_ROLE_WORDS[prev]} "
                           f"(expected {want})", "role_order"))
            order_bad = True
        prev, prev_calls = turn.role, bool(turn.tool_calls)
    if not turns:
        out.append((fields[0] if fields else "row", "no turns", "empty"))
    elif answer_last and prev != "assistant" and not order_bad:
        out.append((fields[-1], "missing response: the last turn must be the assistant's answer", "missing"))
    elif not answer_last and prev not in ("user", "tool") and not order_bad:
        out.append((fields[-1], "the prompt must end with a user turn", "role_order"))
    return out


def row_problems(obj: Conversation | PreferencePair | TextDoc, fields: list[str]) -> list[tuple[str, str, str]]:
    if isinstance(obj, TextDoc):
        return [] if obj.text.strip() else [(fields[0], "empty document", "empty")]
    if isinstance(obj, Conversation):
        return turn_problems(obj.turns, fields)
    *prompt_fields, chosen_f, rejected_f = fields
    out = turn_problems(obj.prompt.turns, prompt_fields or [chosen_f], answer_last=False)
    for turn, f in ((obj.chosen, chosen_f), (obj.rejected, rejected_f)):
        if not turn.content.strip() and not turn.tool_calls:
            out.append((f, "empty answer", "empty"))
    if (obj.chosen.content, obj.chosen.reasoning) == (obj.rejected.content, obj.rejected.reasoning):
        out.append((rejected_f, "the same answer as chosen", "duplicate"))
    return out


def placeholder_field(obj: Conversation | PreferencePair | TextDoc, fields: list[str]) -> str | None:
    """The first field of a row that still holds an identity placeholder, or None."""
    if isinstance(obj, TextDoc):
        return fields[0] if PLACEHOLDER.search(obj.text) else None
    conv = obj.prompt if isinstance(obj, PreferencePair) else obj
    turns = conv.turns + ([obj.chosen, obj.rejected] if isinstance(obj, PreferencePair) else [])
    if conv.system and PLACEHOLDER.search(conv.system):
        return "system"
    for k, t in enumerate(turns):
        if PLACEHOLDER.search(t.content) or (t.reasoning and PLACEHOLDER.search(t.reasoning)):
            return fields[k] if k < len(fields) else "row"
    return None


def fingerprint(obj: Conversation | PreferencePair | TextDoc) -> bytes:
    """Equal for rows with the same content, whatever their source."""
    if isinstance(obj, TextDoc):
        key = ("text", obj.text)
    elif isinstance(obj, PreferencePair):
        key = (fingerprint(obj.prompt), _turn_key(obj.chosen), _turn_key(obj.rejected))
    else:
        key = (obj.system, repr(obj.tools), tuple(_turn_key(t) for t in obj.turns))
    return hashlib.blake2b(repr(key).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _turn_key(t: Turn):
    return (t.role, t.content, t.reasoning, repr(t.tool_calls))
