"""Request bodies of the OpenAI API, as far as this server honours them.

Unknown fields are refused (``extra="forbid"``), and known fields that cannot be honoured are refused
by ``refuse_unhonoured`` with a 400 naming the field: a client never gets an answer that silently
ignored what it asked for.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TextPart(_Body):
    type: Literal["text"]
    text: StrictStr


class FunctionCall(_Body):
    name: StrictStr
    arguments: StrictStr                # JSON text, as OpenAI sends it


class ToolCall(_Body):
    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart]
    name: StrictStr | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: StrictStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _calls_without_content(cls, data: Any) -> Any:
        """An assistant message that only calls tools has ``content: null`` (or none): that is empty text."""
        if isinstance(data, dict) and data.get("tool_calls") and data.get("content") is None:
            data = {**data, "content": ""}
        return data

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Body):
    include_usage: StrictBool = False


class JsonSchemaSpec(_Body):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), populate_by_name=True)
    name: StrictStr
    description: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: StrictBool | None = None    # the schema is enforced either way


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class FunctionDef(_Body):
    name: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None    # the parameters' schema is enforced whenever a call is forced


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDef


class _Sampling(_Body):
    model: StrictStr
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: StrictInt = Field(0, ge=0)   # vLLM's extension; 0 = off
    n: StrictInt = Field(1, ge=1)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: StrictStr | None = None      # an end-user id: nothing to honour, accepted as OpenAI does

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[Tool] | None = None
    tool_choice: Any = None             # "none" | "auto" | "required" | {"type": "function", …}: tools.plan checks it
    parallel_tool_calls: StrictBool | None = None
    reasoning_effort: StrictStr | None = None


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    logprobs: StrictInt | None = Field(None, ge=0, le=5)
    echo: StrictBool = False
    suffix: StrictStr | None = None
    best_of: StrictInt | None = Field(None, ge=1)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict"}
_EXPECTED = {"string_type": "a string", "list_type": "a list", "int_type": "an integer", "float_type": "a number",
             "bool_type": "true or false"}
# What an item of these lists is (FastAPI's errors do not name the model class).
_ITEMS = {"messages": 'a message object ({"role": "user", "content": "..."})',
          "content": 'a text part ({"type": "text", "text": "..."})'}
_OBJECT_ERRORS = ("model_type", "model_attributes_type", "dict_type")
_JSON_NAMES = {type(None): "null", bool: "true or false", int: "a number", float: "a number", str: "a string",
               list: "a list", dict: "an object"}


def field_loc(loc) -> tuple:
    """A validation error's location as the client knows it: pydantic also names the union branch
    it tried (``str``, ``list[TextPart]``) and the request part (``body``)."""
    return tuple(x for x in loc if x != "body" and not (isinstance(x, str) and (
        x in _TYPE_TAGS or "[" in x or "-" in x)))


def field_path(loc) -> str:
    """``("messages", 0, "content")`` → ``messages[0].content``."""
    out = ""
    for x in loc:
        out += f"[{x}]" if isinstance(x, int) else f".{x}" if out else str(x)
    return out


def explain(errors: list[dict]) -> tuple[dict, tuple, str]:
    """The error to report, its field and one line for it, e.g. ``messages[0]: expected a message
    object ({…}), got null``. The deepest error wins (the branch of a union that got furthest is the
    one the client meant); the branches that failed at that same field are merged into one line."""
    first = max(errors, key=lambda e: len(field_loc(e.get("loc", ()))))
    loc = field_loc(first.get("loc", ()))
    wants = []
    for e in errors:
        if field_loc(e.get("loc", ())) != loc:
            continue
        if e.get("type") in _OBJECT_ERRORS:
            item = len(loc) > 1 and isinstance(loc[-1], int) and loc[-2] in _ITEMS
            want = _ITEMS[loc[-2]] if item else "an object"
        else:
            want = _EXPECTED.get(e.get("type"))
        if want is None:
            wants = []
            break
        if want not in wants:
            wants.append(want)
    path = field_path(loc) or "body"
    if first.get("type") == "missing":
        return first, loc, f"{path}: required"
    got = _JSON_NAMES.get(type(first.get("input")), "another value")
    if not wants:
        null = ", got null" if "input" in first and first["input"] is None else ""
        return first, loc, f"{path}: {first.get('msg', 'invalid value')}{null}"
    if loc[-1:] == ("content",):
        wants = ["a list of text parts" if w == "a list" else w for w in wants]
    return first, loc, f"{path}: expected {' or '.join(wants)}, got {got}"


class Refused(Exception):
    """A request the server cannot honour: 400 naming ``param``."""

    def __init__(self, param: str, message: str, code: str = "unsupported_parameter", status: int = 400):
        super().__init__(message)
        self.param, self.code, self.status = param, code, status


def refuse_unhonoured(req: _Sampling, *, thinking: bool, max_n: int, structured: bool = False) -> None:
    """Every field whose value this server would have to ignore is an error instead. ``structured``:
    the caller enforces ``response_format`` and checks tools (``serve/tools.py``); without it both are refused."""
    if req.frequency_penalty:
        raise Refused("frequency_penalty", "frequency_penalty is not supported (only 0)")
    if req.presence_penalty:
        raise Refused("presence_penalty", "presence_penalty is not supported (only 0)")
    if req.logit_bias:
        raise Refused("logit_bias", "logit_bias is not supported")
    if req.n > max_n:
        raise Refused("n", f"n must be at most {max_n} on this server", "invalid_value")
    if req.stream_options is not None and not req.stream:
        raise Refused("stream_options", "stream_options is only allowed with stream: true", "invalid_value")
    stops = req.stops()
    if len(stops) > 4 or any(not s for s in stops):
        raise Refused("stop", "stop takes up to 4 non-empty strings", "invalid_value")
    if isinstance(req, ChatRequest):
        if not structured and (req.tools or req.tool_choice not in (None, "none") or req.parallel_tool_calls
                               or any(m.role == "tool" or m.tool_calls for m in req.messages)):
            raise Refused("tools", "tool calling is not supported by this server")
        rf = req.response_format
        if not structured and rf is not None and rf.type != "text":
            raise Refused("response_format", f"response_format {rf.type} is not supported "
                          "(no constrained decoding): only {\"type\": \"text\"}")
        if rf is not None and rf.type == "json_schema" and rf.json_schema is None:
            raise Refused("response_format.json_schema", "response_format.json_schema: required for type "
                          "json_schema", "invalid_value")
        if rf is not None and rf.type != "json_schema" and rf.json_schema is not None:
            raise Refused("response_format.json_schema", "response_format.json_schema is only allowed with type "
                          "json_schema", "invalid_value")
        if req.reasoning_effort is not None:
            raise Refused("reasoning_effort", "reasoning_effort is not supported; use "
                          "chat_template_kwargs.enable_thinking")
        if req.top_logprobs is not None and not req.logprobs:
            raise Refused("top_logprobs", "top_logprobs requires logprobs: true", "invalid_value")
        if req.max_tokens is not None and req.max_completion_tokens is not None \
                and req.max_tokens != req.max_completion_tokens:
            raise Refused("max_completion_tokens", "max_tokens and max_completion_tokens disagree", "invalid_value")
        for key, val in (req.chat_template_kwargs or {}).items():
            if key != "enable_thinking":
                raise Refused(f"chat_template_kwargs.{key}", f"chat_template_kwargs.{key} is not supported "
                              "(only enable_thinking)")
            if not isinstance(val, bool):
                raise Refused("chat_template_kwargs.enable_thinking", "enable_thinking must be true or false",
                              "invalid_type")
            if val and not thinking:
                raise Refused("chat_template_kwargs.enable_thinking", "this model's chat template has no "
                              "thinking switch")
        for i, m in enumerate(req.messages):
            if m.name is not None and m.role != "tool":  # a tool result's name is the function's: it is rendered
                raise Refused(f"messages[{i}].name", "message names are not supported")
            if m.tool_calls and m.role != "assistant":
                raise Refused(f"messages[{i}].tool_calls", "only assistant messages have tool_calls", "invalid_value")
            if m.tool_call_id is not None and m.role != "tool":
                raise Refused(f"messages[{i}].tool_call_id", "only tool messages have tool_call_id", "invalid_value")
    else:
        if req.echo:
            raise Refused("echo", "echo is not supported")
        if req.suffix:
            raise Refused("suffix", "suffix is not supported (no fill-in-the-middle)")
        if req.best_of not in (None, req.n):
            raise Refused("best_of", "best_of is not supported (only equal to n)")
