"""Tool calling for ``/v1/chat/completions``: what the chat template does with tools (found by
rendering it, never hand-written), OpenAI's request pieces turned into template messages, the
constraint that forces a call, and the model's call text parsed back into ``tool_calls``.

The call format is learned from the template itself: an assistant turn holding one call of a probe
function is rendered, and the text around the call's JSON is the format (Qwen/Hermes:
``<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>``; Llama 3: the bare JSON with
``"parameters"``). What a model fine-tuned through that template learned to write is what is parsed.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from ..infer.grammar import Constraint, GrammarError, response_format_schema, schema_grammar, tool_call_constraint
from .protocol import ChatRequest, Refused

PROBE = "tunesmith_probe_fn"
PROBE_ARGS = {"q": "Zq7xWv"}
PROBE_TOOL = {"type": "function", "function": {"name": PROBE, "description": "probe",
              "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
_MARK = "Qv8Jw3Tz"
_USER = [{"role": "user", "content": "hi"}]
NO_TOOLS = "this model's chat template does not render tools"


@dataclass(frozen=True)
class CallFormat:
    """How the template writes calls: ``prelude`` (what opens every assistant turn, e.g. an empty think
    block), then each call as ``before`` + JSON + ``after``, calls joined by ``sep`` (None: one call
    per turn), the JSON's keys ``name_key`` and ``args_key``."""
    prelude: str
    before: str
    after: str
    sep: str | None
    name_key: str
    args_key: str


@dataclass(frozen=True)
class ToolSupport:
    renders: bool                   # the template shows the model the tools it is given
    fmt: CallFormat | None          # None: it renders tools, but calls in a form not learned here


def _render(tok, msgs: list[dict], tools: list[dict] | None, gen: bool) -> str:
    return tok.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=gen)


def _call(i: int) -> dict:
    return {"id": f"call_probe{i}", "type": "function", "function": {"name": PROBE, "arguments": PROBE_ARGS}}


def _find_json(text: str) -> tuple[int, int, dict] | None:
    """The first JSON object in ``text`` that is the probe call: (start, end, object)."""
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch != "{":
            continue
        try:
            obj, end = dec.raw_decode(text, i)
        except ValueError:
            continue
        if isinstance(obj, dict) and PROBE in obj.values() and PROBE_ARGS in obj.values():
            return i, end, obj
    return None


def probe(tok) -> ToolSupport:
    """Render the template with and without a tool: it renders tools when the tool shows; then learn
    how it writes a call (and two calls) of that tool."""
    try:
        offered = _render(tok, _USER, [PROBE_TOOL], True)
        if offered == _render(tok, _USER, None, True) or PROBE not in offered:
            return ToolSupport(False, None)
    except Exception:  # noqa: BLE001 — a template that rejects tools does not render them
        return ToolSupport(False, None)
    try:
        answer = _render(tok, _USER + [{"role": "assistant", "content": _MARK}], [PROBE_TOOL], False)
        one = _render(tok, _USER + [{"role": "assistant", "content": "", "tool_calls": [_call(1)]}], [PROBE_TOOL],
                      False)
    except Exception:  # noqa: BLE001
        return ToolSupport(True, None)
    if not (answer.startswith(offered) and one.startswith(offered)) or _MARK not in answer:
        return ToolSupport(True, None)
    prelude, end = answer[len(offered):].split(_MARK, 1)
    tail = one[len(offered):]
    if not tail.startswith(prelude) or not tail.endswith(end) or len(tail) < len(prelude) + len(end):
        return ToolSupport(True, None)
    body = tail[len(prelude):len(tail) - len(end)]
    found = _find_json(body)
    if found is None:
        return ToolSupport(True, None)
    start, stop, obj = found
    name_key = next(k for k, v in obj.items() if v == PROBE)
    args_key = next(k for k, v in obj.items() if v == PROBE_ARGS)
    before, after = body[:start], body[stop:]
    sep = None
    try:
        two = _render(tok, _USER + [{"role": "assistant", "content": "", "tool_calls": [_call(1), _call(2)]}],
                      [PROBE_TOOL], False)[len(offered):]
        two = two[len(prelude):len(two) - len(end)] if two.startswith(prelude) and two.endswith(end) else ""
        if len(two) > 2 * len(body) and two.startswith(body) and two.endswith(body):
            sep = two[len(body):len(two) - len(body)]
    except Exception:  # noqa: BLE001 — a template that allows one call per turn (Llama 3.1 raises)
        pass
    return ToolSupport(True, CallFormat(prelude, before, after, sep, name_key, args_key))


# ---- the request ----

@dataclass
class ToolPlan:
    offered: list[dict] | None      # tools the template shows the model (None: not offered)
    forced: list[str] | None        # the answer must call (one of) these functions
    parallel: bool                  # more than one call per answer
    parse: bool                     # parse calls out of the answer


def plan(req: ChatRequest, support: ToolSupport) -> ToolPlan:
    """What the request asks of tools, checked against what the template can do (400s name the field)."""
    # What the template shows the model; ``strict`` is a request flag (the schema is enforced when a call is forced).
    tools = [t.model_dump(exclude_none=True, exclude={"function": {"strict"}}) for t in req.tools or []]
    choice = req.tool_choice
    named = None
    if isinstance(choice, dict):
        fn = choice.get("function")
        if choice.get("type") != "function" or set(choice) != {"type", "function"} or not isinstance(fn, dict) \
                or set(fn) != {"name"} or not isinstance(fn["name"], str):
            raise Refused("tool_choice", 'tool_choice must be "none", "auto", "required" or '
                          '{"type": "function", "function": {"name": "..."}}', "invalid_value")
        named = fn["name"]
    elif choice not in (None, "none", "auto", "required"):
        raise Refused("tool_choice", 'tool_choice must be "none", "auto", "required" or '
                      '{"type": "function", "function": {"name": "..."}}', "invalid_value")
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) < len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise Refused("tools", f"two tools are named '{dup}'", "invalid_value")
    if (choice == "required" or named) and not tools:
        raise Refused("tool_choice", "tool_choice requires tools", "invalid_value")
    if named is not None and named not in names:
        raise Refused("tool_choice", f"tool_choice names '{named}', which is not one of tools", "invalid_value")
    history = any(m.role == "tool" or m.tool_calls for m in req.messages)
    if choice == "none" or not tools:
        if history and not support.renders:
            i = next(i for i, m in enumerate(req.messages) if m.role == "tool" or m.tool_calls)
            raise Refused(f"messages[{i}]", NO_TOOLS)
        return ToolPlan(None, None, False, False)
    if not support.renders:
        raise Refused("tools", NO_TOOLS)
    if support.fmt is None:
        raise Refused("tools", "this model's chat template renders tools, but writes calls in a form this server "
                      "cannot parse")
    for i, t in enumerate(tools):
        try:
            schema_grammar(t["function"].get("parameters") or {"type": "object"})
        except GrammarError as e:
            raise Refused(f"tools[{i}].function.parameters", f"tools[{i}].function.parameters: {e}",
                          "invalid_value") from None
    forced = [named] if named else names if choice == "required" else None
    parallel = req.parallel_tool_calls is not False and support.fmt.sep is not None
    return ToolPlan(tools, forced, parallel, True)


def template_messages(req: ChatRequest) -> list[dict[str, Any]]:
    """The request's messages as the chat template takes them: a call's arguments as an object (what
    templates' ``tojson`` expects), a tool result with the name of the function it answers."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, m in enumerate(req.messages):
        d: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.tool_calls:
            calls = []
            for j, c in enumerate(m.tool_calls):
                try:
                    args = json.loads(c.function.arguments) if c.function.arguments.strip() else {}
                except ValueError:
                    raise Refused(f"messages[{i}].tool_calls[{j}].function.arguments",
                                  "a tool call's arguments must be JSON text", "invalid_value") from None
                names[c.id] = c.function.name
                calls.append({"id": c.id, "type": "function", "function": {"name": c.function.name,
                                                                             "arguments": args}})
            d["tool_calls"] = calls
        if m.role == "tool":
            if not m.tool_call_id:
                raise Refused(f"messages[{i}].tool_call_id", "a tool message needs tool_call_id", "invalid_value")
            d["tool_call_id"] = m.tool_call_id
            name = m.name or names.get(m.tool_call_id)
            if name:
                d["name"] = name
        out.append(d)
    return out


def answer_constraint(tok, req: ChatRequest, tp: ToolPlan, fmt: CallFormat | None, prompt_text: str):
    """The grammar the answer must follow (None: free text): a forced call, JSON for response_format,
    or — tools offered and a response_format — either a call or that JSON."""
    schema = None
    if req.response_format is not None:
        try:
            schema = response_format_schema(req.response_format.model_dump(by_alias=True, exclude_none=True))
            if schema is not None:
                schema_grammar(schema)
        except GrammarError as e:
            raise Refused("response_format.json_schema.schema", f"response_format.json_schema.schema: {e}",
                          "invalid_value") from None
    if (tp.forced or (tp.parse and schema is not None)) and fmt is not None:
        funcs = [(t["function"]["name"], t["function"].get("parameters")) for t in tp.offered or []]
        if tp.forced:
            funcs = [f for f in funcs if f[0] in tp.forced]
        prelude = "" if prompt_text.endswith(fmt.prelude) else fmt.prelude
        return tool_call_constraint(tok, funcs, before=fmt.before, after=fmt.after, sep=fmt.sep or "",
                                    prelude=prelude, name_key=fmt.name_key, args_key=fmt.args_key,
                                    multiple=tp.parallel, or_schema=None if tp.forced else schema)
    return None if schema is None else Constraint(tok, schema_grammar(schema))


# ---- the answer ----

def openai_call(name: str, args: Any) -> dict:
    return {"id": f"call_{secrets.token_hex(12)}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}


class CallParser:
    """The answer's text → content and calls, fed piece by piece (``feed`` returns what is certain so
    far: content to stream and calls complete). Text that may be the start of a call is held back;
    a call that does not parse is returned as content, unchanged."""

    def __init__(self, fmt: CallFormat, parallel: bool = True):
        self.fmt, self.parallel = fmt, parallel
        self.opening = fmt.before.strip()
        self.closing = fmt.after.strip()
        self.buf = ""
        self.inside = False         # after an opening marker (or, without one, at a '{' that may be a call)
        self.calls: list[dict] = []
        self.said = False           # content other than whitespace was sent

    def _parse(self, final: bool) -> tuple[dict | None, int | None]:
        """In a call: (call, characters used) when complete; (None, None) to wait; (None, -1) when it is not a call."""
        text = self.buf
        start = len(text) - len(text.lstrip())
        if start == len(text):
            return (None, -1) if final else (None, None)
        if text[start] != "{":
            return None, -1
        try:
            obj, end = json.JSONDecoder().raw_decode(text, start)
        except ValueError:
            return (None, -1) if final else (None, None)
        name = obj.get(self.fmt.name_key) if isinstance(obj, dict) else None
        args = obj.get(self.fmt.args_key, obj.get("arguments", obj.get("parameters"))) if isinstance(obj, dict) \
            else None
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                args = None
        if not isinstance(name, str) or not isinstance(args, dict):
            return None, -1
        rest = text[end:]
        if self.closing:
            stripped = rest.lstrip()
            if stripped.startswith(self.closing):
                end += len(rest) - len(stripped) + len(self.closing)
            elif self.closing.startswith(stripped) and not final:
                return None, None
        return {"name": name, "arguments": args}, end

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        self.buf += text
        content, calls = [], []
        while True:
            if self.inside:
                call, used = self._parse(final)
                if used is None:
                    break
                if call is None:  # not a call after all: its text is content
                    self.inside, self.said = False, True
                    content.append(self.opening + self.buf)
                    self.buf = ""
                    break
                self.buf, self.inside = self.buf[used:], False
                if self.parallel or not self.calls:
                    c = openai_call(call["name"], call["arguments"])
                    self.calls.append(c)
                    calls.append(c)
                continue
            if self.calls:  # what joins calls (whitespace) is not content
                self.buf = self.buf.lstrip()
            keep = 0
            if self.opening:
                at = self.buf.find(self.opening)
                if at >= 0:
                    content.append(self.buf[:at].rstrip())
                    self.buf, self.inside = self.buf[at + len(self.opening):], True
                    continue
                if not final:
                    keep = next((k for k in range(len(self.opening) - 1, 0, -1)
                                 if self.buf.endswith(self.opening[:k])), 0)
            elif not self.said and self.buf.lstrip().startswith("{"):  # bare JSON calls (Llama 3)
                self.inside = True
                continue
            piece = self.buf[:len(self.buf) - keep]
            if not final:  # trailing whitespace waits: before a call it is dropped
                piece = piece.rstrip()
            content.append(piece)
            self.buf = self.buf[len(piece):]
            break
        out = "".join(content)
        self.said = self.said or bool(out.strip())
        return ("" if self.calls and not out.strip() else out), calls


class ChoiceCalls:
    """One choice's tool calls while its answer streams in: ``feed`` passes content through the parser
    (when calls are parsed at all) and returns the content left and the new calls as stream deltas."""

    def __init__(self, tp: ToolPlan, fmt: CallFormat | None):
        self.parser = CallParser(fmt, tp.parallel) if tp.parse and fmt is not None else None
        self.calls: list[dict] = []

    def feed(self, content: str, final: bool) -> tuple[str, list[dict]]:
        if self.parser is None:
            return content, []
        content, new = self.parser.feed(content, final)
        deltas = [d for k, c in enumerate(new, len(self.calls)) for d in call_delta(k, c)]
        self.calls += new
        return content, deltas

    def finish(self, reason: str) -> str:
        return "tool_calls" if self.calls and reason == "stop" else reason

    def message(self, msg: dict) -> dict:
        """The whole answer's message: with calls, ``tool_calls`` and ``content`` null when it is empty."""
        if self.calls:
            msg["content"] = msg["content"] or None
            msg["tool_calls"] = self.calls
        return msg


def prompt_ids(tok, messages: list[dict], tools: list[dict] | None, enable_thinking: bool | None) -> list[int]:
    """The prompt, rendered by the chat template with the tools offered (Engine.prompt_ids, plus tools)."""
    from ..models.template import template_kwargs

    out = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True,
                                  **template_kwargs(tok, enable_thinking))
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def call_delta(index: int, call: dict) -> list[dict]:
    """One call as OpenAI streams it: a delta with its id and name, then one with its arguments."""
    fn = call["function"]
    return [{"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                             "function": {"name": fn["name"], "arguments": ""}}]},
            {"tool_calls": [{"index": index, "function": {"arguments": fn["arguments"]}}]}]
