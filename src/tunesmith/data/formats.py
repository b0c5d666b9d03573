"""Source formats → the one message format (``Conversation`` / ``PreferencePair``).

One small function per format; each takes a row (a dict) and a ``Plan`` (which column
holds what, which role tags mean what) and returns the conversation plus, for every turn,
the field it came from (so a later check can say ``conversations[3]: …``). Anything wrong
with the row's shape is a ``RowError(field, message, kind)``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .types import Conversation, PreferencePair, TextDoc, Turn

SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system",
                 "tool_calls_tag": "tool_calls", "reasoning_tag": "reasoning_content"}
MESSAGES_TAGS = {**SHAREGPT_TAGS, "role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "observation_tag": "tool"}

# Column roles (LLaMA-Factory's names) → the column a bare file uses for them.
DEFAULT_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output"},
    "sharegpt": {"messages": "conversations"},
    "messages": {"messages": "messages"},
    "prompt_completion": {"prompt": "prompt", "response": "completion"},
    "preference": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
    "text": {"prompt": "text"},  # LLaMA-Factory's pretraining entries map their text column as "prompt"
}
OPTIONAL_COLUMNS = {"system": "system", "history": "history", "tools": "tools"}
REQUIRED = {"alpaca": ("prompt", "response"), "sharegpt": ("messages",), "messages": ("messages",),
            "prompt_completion": ("prompt", "response"), "preference": ("chosen", "rejected"), "text": ("prompt",)}
LIST_COLUMNS = ("conversations", "messages")

_THINK = re.compile(r"\s*<think>(.*?)</think>\s*", re.S)


class RowError(Exception):
    def __init__(self, field: str, message: str, kind: str = "type"):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.kind = field, message, kind


@dataclass
class Plan:
    """How to read the rows of one file: the format, column for each role, role tags."""

    fmt: str
    cols: dict[str, str]
    tags: dict[str, str]


def kind_of(value: Any) -> str:
    return {str: "text", bool: "true/false", int: "a number", float: "a number", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


# Row fields that carry media: LLaMA-Factory's multimodal columns (mllm_demo and friends).
MEDIA_FIELDS = ("images", "videos", "audios")
KTO_MESSAGE = "KTO data (label) is not supported: tunesmith trains SFT and preference pairs"


def unsupported_row(row: Any) -> str | None:
    """Why a row is data tunesmith recognises but does not train on, or None.

    KTO rows carry a true/false ``label`` (LLaMA-Factory's kto_tag); multimodal rows a
    non-empty images/videos/audios list (with ``<image>`` placeholders in the text)."""
    if not isinstance(row, dict):
        return None
    if isinstance(row.get("label"), bool):
        return KTO_MESSAGE
    media = [k for k in MEDIA_FIELDS if row.get(k)]
    if media:
        return f"multimodal data ({', '.join(media)}) is not supported: tunesmith trains text only"
    return None


def detect_format(row: Any) -> str | None:
    """The format a row's fields suggest, or None. KTO and multimodal rows are told apart
    first ("kto", "multimodal"), so they are never read as plain SFT rows."""
    if not isinstance(row, dict):
        return None
    why = unsupported_row(row)
    if why:
        return "kto" if why == KTO_MESSAGE else "multimodal"
    keys = row.keys()
    if set(keys) == {"text"}:
        return "text"
    if "chosen" in keys and "rejected" in keys:
        return "preference"
    for col in LIST_COLUMNS:
        if col in keys:
            try:
                msgs = _maybe_json(row[col], col)
            except RowError:  # the row's own parse will say so
                msgs = None
            first = msgs[0] if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict) else {}
            if "from" in first or "value" in first:
                return "sharegpt"
            return "messages" if "role" in first or "content" in first or col == "messages" else "sharegpt"
    if "instruction" in keys:
        return "alpaca"
    if "prompt" in keys and "completion" in keys:
        return "prompt_completion"
    return None


def make_plan(fmt: str, columns: dict[str, str] | None, tags: dict[str, str] | None, keys: set[str],
              first: dict | None = None) -> Plan:
    """Columns for each role. With an explicit mapping (LLaMA-Factory's way) optional roles
    (system, history, tools) are read only when mapped; a bare file uses them when present,
    and its message lists' tags are told by the first row (``from`` or ``role``)."""
    cols = dict(DEFAULT_COLUMNS[fmt])
    base = MESSAGES_TAGS if fmt == "messages" else SHAREGPT_TAGS
    if columns is None:
        cols.update({role: c for role, c in OPTIONAL_COLUMNS.items() if c in keys})
        present = [c for c in LIST_COLUMNS if c in keys]
        if fmt in ("sharegpt", "messages", "preference") and present:
            cols["messages"] = present[0]
            style = detect_format({present[0]: (first or {}).get(present[0])})
            base = MESSAGES_TAGS if style == "messages" else SHAREGPT_TAGS
        elif fmt == "preference" and "instruction" not in keys and "prompt" in keys:
            cols["prompt"] = "prompt"
    else:
        cols.update(columns)
    return Plan(fmt, cols, {**base, **(tags or {})})


def missing_columns(plan: Plan, keys: set[str]) -> list[tuple[str, str]]:
    """(role, column) of required roles that no row has."""
    return [(role, plan.cols[role]) for role in REQUIRED[plan.fmt] if plan.cols.get(role) not in keys]


def parse_row(row: Any, plan: Plan, source: str) -> tuple[Conversation | PreferencePair, list[str]]:
    """One row → (conversation or pair, field of each turn). Raises RowError."""
    if not isinstance(row, dict):
        raise RowError("row", f"expected an object with fields, got {kind_of(row)}")
    return _PARSERS[plan.fmt](row, plan, source)


# ---- pieces shared by the formats -------------------------------------------------------------

def _maybe_json(value: Any, field: str) -> Any:
    """CSV cells and LLaMA-Factory's ``tools`` hold lists as JSON text. Only for fields that
    can't be text (message lists, history, tools, tool calls)."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise RowError(field, f"not valid JSON text: {e.msg}") from None
    return value


def _text(row: dict, col: str | None, required: bool = False) -> str | None:
    if col is None:
        return None
    value = row.get(col)
    if value is None:
        if required:
            raise RowError(col, "missing", "missing")
        return None
    if not isinstance(value, str):
        raise RowError(col, f"expected text, got {kind_of(value)}")
    return value


def _content(value: Any, field: str, allow_empty: bool = False) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        if allow_empty:
            return ""
        raise RowError(field, "missing", "missing")
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        # Content parts: OpenAI's {"type": "text", "text": …}, LLaMA-Factory v1's {"type": "text", "value": …}.
        kinds = sorted({str(p.get("type")) for p in value} - {"text"})
        if kinds:
            raise RowError(field, f"only text parts are supported, got {', '.join(kinds)} (text only)")
        texts = [p.get("text", p.get("value", "")) for p in value]
        bad = next((k for k, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise RowError(f"{field}[{bad}]", f"expected text, got {kind_of(texts[bad])}")
        return "".join(texts)
    raise RowError(field, f"expected text, got {kind_of(value)}")


def split_think(text: str, field: str) -> tuple[str | None, str]:
    """``<think>R</think> answer`` at the start of an answer → (R, answer)."""
    m = _THINK.match(text)
    if m:
        return m.group(1).strip(), text[m.end():]
    if text.lstrip().startswith("<think>"):
        raise RowError(field, "<think> is never closed by </think>", "think")
    return None, text


def _answer_turn(text: str, field: str) -> Turn:
    reasoning, content = split_think(text, field)
    return Turn("assistant", content, reasoning=reasoning)


def _tool_calls(value: Any, field: str) -> list[dict]:
    value = _maybe_json(value, field)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RowError(field, f"expected a list of tool calls, got {kind_of(value)}")
    calls = []
    for k, call in enumerate(value):
        f = f"{field}[{k}]"
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise RowError(f, f"expected a tool call object, got {kind_of(call)}")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise RowError(f"{f}.name", "missing", "missing")
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                raise RowError(f"{f}.arguments", "not valid JSON text") from None
        if not isinstance(args, dict):
            raise RowError(f"{f}.arguments", f"expected an object, got {kind_of(args)}")
        out = {"type": "function", "function": {"name": name, "arguments": args}}
        if isinstance(call.get("id"), str):
            out["id"] = call["id"]
        calls.append(out)
    return calls


def _tools(row: dict, col: str | None) -> list[dict] | None:
    if col is None or row.get(col) in (None, "", []):
        return None
    value = _maybe_json(row[col], col)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RowError(col, f"expected a list of tool descriptions, got {kind_of(value)}")
    # LLaMA-Factory lists bare function schemas; chat templates expect OpenAI's wrapper.
    return [t if "type" in t or "name" not in t else {"type": "function", "function": t} for t in value]


def _messages(value: Any, field: str, tags: dict[str, str]) -> tuple[str | None, list[Turn], list[str]]:
    """A list of role-tagged messages → (system, turns, fields)."""
    value = _maybe_json(value, field)
    if value is None:
        raise RowError(field, "missing", "missing")
    if not isinstance(value, list):
        raise RowError(field, f"expected a list of messages, got {kind_of(value)}")
    if not value:
        raise RowError(field, "no messages", "empty")
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["observation_tag"]: "tool",
             tags["function_tag"]: "function", tags["system_tag"]: "system"}
    role_tag, content_tag = tags["role_tag"], tags["content_tag"]
    system, turns, fields = None, [], []
    for j, msg in enumerate(value):
        f = f"{field}[{j}]"
        if not isinstance(msg, dict):
            raise RowError(f, f"expected a message object, got {kind_of(msg)}")
        tag = msg.get(role_tag)
        if tag is None:
            raise RowError(f"{f}.{role_tag}", "missing", "missing")
        role = roles.get(tag) if isinstance(tag, str) else None
        if role is None:
            raise RowError(f"{f}.{role_tag}", f"unknown role tag {tag!r} (expected one of {', '.join(roles)})",
                           "role_tag")
        if role == "system":
            if j != 0:
                raise RowError(f"{f}.{role_tag}", "a system message may only come first", "role_order")
            system = _content(msg.get(content_tag), f"{f}.{content_tag}")
            continue
        if role == "function":  # sharegpt's function_call turn: the assistant calling a tool
            turns.append(Turn("assistant", "", tool_calls=_tool_calls(msg.get(content_tag), f"{f}.{content_tag}")))
        elif role == "assistant":
            calls = msg.get(tags["tool_calls_tag"])
            calls = _tool_calls(calls, f"{f}.{tags['tool_calls_tag']}") if calls else None
            content = _content(msg.get(content_tag), f"{f}.{content_tag}", allow_empty=bool(calls))
            reasoning = msg.get(tags["reasoning_tag"])
            if reasoning is None:
                reasoning, content = split_think(content, f"{f}.{content_tag}")
            elif not isinstance(reasoning, str):
                raise RowError(f"{f}.{tags['reasoning_tag']}", f"expected text, got {kind_of(reasoning)}")
            turns.append(Turn("assistant", content, reasoning=reasoning, tool_calls=calls))
        else:
            turns.append(Turn(role, _content(msg.get(content_tag), f"{f}.{content_tag}")))
        fields.append(f)
    return system, turns, fields


def _history(row: dict, col: str | None) -> tuple[list[Turn], list[str]]:
    value = _maybe_json(row.get(col), col) if col else None
    if value in (None, ""):
        return [], []
    if not isinstance(value, list):
        raise RowError(col, f"expected a list of [question, answer] pairs, got {kind_of(value)}")
    turns, fields = [], []
    for k, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise RowError(f"{col}[{k}]", "expected a [question, answer] pair")
        for i, text in enumerate(pair):
            if not isinstance(text, str):
                raise RowError(f"{col}[{k}][{i}]", f"expected text, got {kind_of(text)}")
        turns += [Turn("user", pair[0]), _answer_turn(pair[1], f"{col}[{k}][1]")]
        fields += [f"{col}[{k}][0]", f"{col}[{k}][1]"]
    return turns, fields


def _alpaca_prompt(row: dict, cols: dict[str, str]) -> tuple[str | None, list[Turn], list[str]]:
    prompt = _text(row, cols.get("prompt"), required=True)
    query = _text(row, cols.get("query"))
    # LLaMA-Factory joins instruction and input with one newline.
    user = f"{prompt}\n{query}" if prompt and query else (prompt or query or "")
    turns, fields = _history(row, cols.get("history"))
    return _text(row, cols.get("system")), turns + [Turn("user", user)], fields + [cols["prompt"]]


# ---- one function per format ---------------------------------------------------------------------

def _alpaca(row: dict, plan: Plan, source: str):
    system, turns, fields = _alpaca_prompt(row, plan.cols)
    col = plan.cols["response"]
    turns.append(_answer_turn(_text(row, col, required=True), col))
    return Conversation(turns, system or None, _tools(row, plan.cols.get("tools")), source), fields + [col]


def _sharegpt(row: dict, plan: Plan, source: str):
    col = plan.cols["messages"]
    system, turns, fields = _messages(row.get(col), col, plan.tags)
    system = system or _text(row, plan.cols.get("system"))  # a system message wins over the column
    return Conversation(turns, system or None, _tools(row, plan.cols.get("tools")), source), fields


def _prompt_completion(row: dict, plan: Plan, source: str):
    system = _text(row, plan.cols.get("system"))
    turns, fields = [], []
    for role in ("prompt", "response"):
        col = plan.cols[role]
        value = row.get(col)  # text stays text, even text that looks like JSON
        if isinstance(value, list):
            sys2, more, f2 = _messages(value, col, MESSAGES_TAGS)
            system = system or sys2
            turns, fields = turns + more, fields + f2
        elif role == "prompt":
            turns.append(Turn("user", _text(row, col, required=True)))
            fields.append(col)
        else:
            turns.append(_answer_turn(_text(row, col, required=True), col))
            fields.append(col)
    return Conversation(turns, system or None, _tools(row, plan.cols.get("tools")), source), fields


def _preference_answer(value: Any, field: str, tags: dict[str, str]) -> Turn:
    if isinstance(value, str):
        return _answer_turn(value, field)
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and value:
        first = value[0] if isinstance(value[0], dict) else {}
        if tags["role_tag"] not in first:  # TRL writes {"role": ...} next to sharegpt prompts, and back
            tags = MESSAGES_TAGS if "role" in first else SHAREGPT_TAGS if "from" in first else tags
        _, turns, _ = _messages(value, field, tags)
        if turns and turns[-1].role == "assistant":
            return turns[-1]
        raise RowError(field, "expected an assistant answer", "role_order")
    if value is None:
        raise RowError(field, "missing", "missing")
    raise RowError(field, f"expected text or an assistant message, got {kind_of(value)}")


def _preference(row: dict, plan: Plan, source: str):
    cols = plan.cols
    prompt_value = row.get(cols.get("prompt", ""))
    if cols.get("messages"):
        system, turns, fields = _messages(row.get(cols["messages"]), cols["messages"], plan.tags)
        system = system or _text(row, cols.get("system"))
    elif isinstance(prompt_value, list):  # TRL's conversational prompt
        system, turns, fields = _messages(prompt_value, cols["prompt"], MESSAGES_TAGS)
    else:
        system, turns, fields = _alpaca_prompt(row, cols)
    chosen = _preference_answer(row.get(cols["chosen"]), cols["chosen"], plan.tags)
    rejected = _preference_answer(row.get(cols["rejected"]), cols["rejected"], plan.tags)
    prompt = Conversation(turns, system or None, _tools(row, cols.get("tools")), source)
    return PreferencePair(prompt, chosen, rejected, source), fields + [cols["chosen"], cols["rejected"]]


def _text_doc(row: dict, plan: Plan, source: str):
    col = plan.cols["prompt"]
    return TextDoc(_text(row, col, required=True), source), [col]


_PARSERS = {"text": _text_doc, "alpaca": _alpaca, "sharegpt": _sharegpt, "messages": _sharegpt,
            "prompt_completion": _prompt_completion, "preference": _preference}
