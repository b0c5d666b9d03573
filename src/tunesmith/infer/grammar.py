"""Structured output: a grammar limits every next token (llguidance, on CPU; the mask moves to the logits' device).

``json_constraint`` builds one from an OpenAI ``response_format`` (``json_object``: any JSON object;
``json_schema``: that schema); ``tool_call_constraint`` one that admits only tool calls, each wrapped
in the chat template's markers (``<tool_call>\\n{…}\\n</tool_call>``). Both return a ``Constraint``
with the engine's interface (``infer/sampling.py``): ``mask(logits)`` puts every token the grammar
does not allow at -inf, ``advance(token)``, ``is_done()`` and ``fork()``. The end-of-turn tokens are
allowed exactly when the grammar is complete, so an answer that ends by itself always parses.

Why llguidance (measured on SmolLM2's 49k-token tokenizer, 1 CPU thread; docs/serve.md has the table):
no dependencies (xgrammar requires triton, ~1 GB, on every Linux x86_64 install, CPU-only ones too),
it reads a transformers tokenizer as is (outlines-core builds its vocabulary from the hub only),
schemas compile in ~2 ms and a mask takes ~0.1 ms a token; its Lark grammars embed JSON schemas,
which is how a tool call gets its template's markers.
"""
from __future__ import annotations

import json
import threading
import weakref
from typing import Any

# How generated JSON is laid out: one space after ':' and ',' (what json.dumps and the templates'
# ``tojson`` write, so what models saw in training); no free whitespace, which a weak model can repeat
# until it runs out of tokens.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

_LOCK = threading.Lock()
_TOKENIZERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


class GrammarError(ValueError):
    """A schema the grammar library refuses (its own message, e.g. ``Invalid type: foo``)."""


def _lib():
    try:
        import llguidance
    except ImportError:
        raise GrammarError("structured output needs llguidance: pip install 'tunesmith[serve]'") from None
    return llguidance


def _ll_tokenizer(tok):
    """llguidance's view of ``tok`` (~0.3 s to build; once per tokenizer). Its end-of-sequence tokens
    are the template's end-of-turn tokens, the ones the engine stops on."""
    with _LOCK:
        got = _TOKENIZERS.get(tok)
        if got is None:
            import llguidance.hf

            from ..models.template import end_of_turn_ids

            stop = end_of_turn_ids(tok)
            got = (llguidance.hf.from_tokenizer(tok, eos_token=stop), frozenset(stop))
            _TOKENIZERS[tok] = got
        return got


def _check(grammar: str) -> None:
    is_error, messages = _lib().LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise GrammarError("; ".join(messages) or "invalid grammar")


def schema_grammar(schema: Any) -> str:
    """The grammar of JSON text valid against ``schema`` (a dict); GrammarError if the schema is not
    one the library can enforce."""
    if not isinstance(schema, dict):
        raise GrammarError(f"a JSON schema is an object, got {type(schema).__name__}")
    try:
        grammar = _lib().LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_LAYOUT)
    except (ValueError, TypeError) as e:
        raise GrammarError(str(e)) from None
    _check(grammar)
    return grammar


def response_format_schema(response_format: dict) -> dict | None:
    """The schema an OpenAI ``response_format`` asks for; None for ``text``."""
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        return spec.get("schema") if spec.get("schema") is not None else {}
    raise GrammarError(f"unknown response_format type {kind!r}")


def json_constraint(tok, response_format: dict) -> "Constraint | None":
    """A constraint for OpenAI's ``response_format`` (None for ``{"type": "text"}``)."""
    schema = response_format_schema(response_format)
    return None if schema is None else Constraint(tok, schema_grammar(schema))


def _lit(text: str) -> str:
    return json.dumps(text)  # a Lark string literal: JSON's escapes


def _embed(schema: dict) -> str:
    """``%json {…}`` for a Lark grammar, laid out as ``JSON_LAYOUT`` (Lark's own default is free whitespace)."""
    return "%json " + json.dumps({**schema, "x-guidance": JSON_LAYOUT})


def call_schema(name: str, parameters: dict | None, name_key: str = "name", args_key: str = "arguments") -> dict:
    """The JSON of one call of function ``name``, as the template writes it: ``{"name": …, "arguments": {…}}``."""
    params = parameters if parameters else {"type": "object", "properties": {}}
    return {"type": "object", "properties": {name_key: {"const": name}, args_key: params},
            "required": [name_key, args_key], "additionalProperties": False}


def tool_call_grammar(functions: list[tuple[str, dict | None]], *, before: str, after: str, sep: str,
                      prelude: str = "", name_key: str = "name", args_key: str = "arguments",
                      multiple: bool = True, or_schema: dict | None = None) -> str:
    """A Lark grammar for one call (or, with ``multiple``, calls joined by ``sep``) of the given
    ``functions`` ((name, parameters schema) pairs), each call ``before`` + JSON + ``after``, all after
    ``prelude``; with ``or_schema``, JSON text valid against it is the other way to answer."""
    if not functions:
        raise GrammarError("no function to call")
    lines = []
    names = []
    for i, (name, params) in enumerate(functions):
        schema = call_schema(name, params, name_key, args_key)
        schema_grammar(schema)  # each function's schema on its own: the error names the function's parameters
        body = " ".join(x for x in (_lit(before) if before else "", _embed(schema),
                                    _lit(after) if after else "") if x)
        lines.append(f"call_{i}: {body}")
        names.append(f"call_{i}")
    calls = f"call ({_lit(sep)} call)*" if multiple and sep else "call+" if multiple else "call"
    head = f"{_lit(prelude)} {calls}" if prelude else calls
    start = f"start: {head}" + (" | answer" if or_schema is not None else "")
    lines = [start, f"call: {' | '.join(names)}", *lines]
    if or_schema is not None:
        schema_grammar(or_schema)
        lines.append(f"answer: {_embed(or_schema)}")
    grammar = _lib().LLMatcher.grammar_from_lark("\n".join(lines) + "\n")
    _check(grammar)
    return grammar


def tool_call_constraint(tok, functions: list[tuple[str, dict | None]], **kw) -> "Constraint":
    """A constraint that admits only tool calls (see ``tool_call_grammar`` for the arguments)."""
    return Constraint(tok, tool_call_grammar(functions, **kw))


class Constraint:
    """One row's grammar state. ``mask`` → the logits with every token the grammar forbids at -inf
    (end-of-turn allowed exactly when the grammar is complete); ``advance`` takes the picked token;
    ``is_done`` once nothing but the end of turn can follow; ``fork`` a fresh copy for another row."""

    def __init__(self, tok, grammar: str):
        import torch

        self.tok, self.grammar = tok, grammar
        self.lltok, self.stop = _ll_tokenizer(tok)
        self.matcher = _lib().LLMatcher(self.lltok, grammar)
        if self.matcher.is_error():
            raise GrammarError(self.matcher.get_error())
        self.words = (self.lltok.vocab_size + 31) // 32
        self.bits = torch.full((self.words,), -1, dtype=torch.int32)
        self.shifts = torch.arange(32, dtype=torch.int32)
        self.ended = False

    def fork(self) -> "Constraint":
        return Constraint(self.tok, self.grammar)

    def allowed(self):
        """A bool tensor over llguidance's vocabulary: the tokens the grammar allows next."""
        import torch

        if self.ended or self.matcher.is_stopped():
            out = torch.zeros(self.lltok.vocab_size, dtype=torch.bool)
        else:
            self.matcher.unsafe_compute_mask_ptr(self.bits.data_ptr(), self.words * 4)
            if self.matcher.is_error():
                raise ValueError(f"grammar: {self.matcher.get_error()}")
            out = ((self.bits[:, None] >> self.shifts) & 1).bool().flatten()[:self.lltok.vocab_size]
        complete = not self.ended and (self.matcher.is_accepting() or self.matcher.is_stopped())
        for t in self.stop:
            if t < out.shape[0]:
                out[t] = complete
        return out

    def mask(self, logits):
        import torch

        allowed = self.allowed()
        n = logits.shape[-1]
        if allowed.shape[0] < n:  # the model's output is wider than the vocabulary: padding rows are never picked
            allowed = torch.cat([allowed, allowed.new_zeros(n - allowed.shape[0])])
        return logits.masked_fill(~allowed[:n].to(logits.device, non_blocking=True), float("-inf"))

    def advance(self, token_id: int) -> None:
        if token_id in self.stop:
            self.ended = True
            return
        if not self.matcher.consume_token(token_id):
            raise ValueError(f"grammar: token {token_id} not allowed here ({self.matcher.get_error()})")

    def is_done(self) -> bool:
        return self.ended or self.matcher.is_stopped()
