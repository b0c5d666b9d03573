"""The structured-output constraint (infer/grammar.py, llguidance) on the embedded model's real tokenizer:
whatever the logits, the answer is JSON valid against the schema, and the end-of-turn tokens are allowed
exactly when it is complete."""
from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from tunesmith.infer.grammar import Constraint, GrammarError, json_constraint, tool_call_constraint

SCHEMAS = [
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "kind": {"enum": ["a", "b", "c"]},
                                      "n": {"type": "integer", "minimum": 0, "maximum": 99}},
     "required": ["ok", "kind", "n"], "additionalProperties": False},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
    {"$defs": {"p": {"type": "object", "properties": {"x": {"enum": [1, 2]}}, "required": ["x"],
                     "additionalProperties": False}},
     "type": "object", "properties": {"p": {"$ref": "#/$defs/p"}, "q": {"anyOf": [{"type": "null"}, {"const": "z"}]}},
     "required": ["p", "q"], "additionalProperties": False},
]


def complete(text: str, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def walk(tok, c: Constraint, seed: int, steps: int, check=None) -> str:
    """Decode with random logits (wider than the vocabulary, as a padded output layer is) through ``c``."""
    g = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    for _ in range(steps):
        logits = c.mask(torch.randn(len(tok) + 64, generator=g))
        assert torch.isinf(logits[len(tok):]).all()
        if check is not None:
            check(tok.decode(ids), logits)
        t = int(logits.argmax())
        c.advance(t)
        if t in c.stop:
            break
        ids.append(t)
        if c.is_done():
            break
    return tok.decode(ids)


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("seed", range(4))
def test_any_logits_give_valid_json_and_end_of_turn_only_when_complete(tokenizer, schema, seed):
    c = json_constraint(tokenizer, {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    stops = sorted(c.stop)

    def check(text, logits):
        allowed = bool(torch.isfinite(logits[stops]).all())
        assert allowed == complete(text, schema), text
        assert allowed or not torch.isfinite(logits[stops]).any()

    row = c.fork() if seed % 2 else c
    text = walk(tokenizer, row, seed, 200, check)
    assert complete(text, schema), text
    assert row.is_done()


def test_a_fork_starts_fresh_and_json_object_gives_objects(tokenizer):
    c = json_constraint(tokenizer, {"type": "json_object"})
    start = c.allowed().clone()
    walk(tokenizer, c, 0, 5)
    assert not torch.equal(c.allowed(), start)
    assert torch.equal(c.fork().allowed(), start)
    stops = sorted(c.stop)

    def check(text, logits):
        try:
            whole = isinstance(json.loads(text), dict)
        except ValueError:
            whole = False
        assert bool(torch.isfinite(logits[stops]).all()) == whole, text

    for seed in range(3):
        walk(tokenizer, c.fork(), seed, 60, check)
    assert json_constraint(tokenizer, {"type": "text"}) is None


@pytest.mark.parametrize("schema, words", [
    ({"type": "foo"}, "Invalid type: foo"),
    ({"type": "object", "properties": 5}, "properties must be an object"),
    ({"$ref": "#/nowhere"}, "does not exist"),
    ({"type": "string", "pattern": "(("}, "regex"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
    ([1, 2], "a JSON schema is an object"),
])
def test_a_schema_the_library_refuses_is_a_grammar_error(tokenizer, schema, words):
    with pytest.raises(GrammarError, match=words.replace("(", r"\(")):
        json_constraint(tokenizer, {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})


def test_tool_calls_are_wrapped_in_the_markers_and_follow_each_schema(tokenizer):
    city = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"],
            "additionalProperties": False}
    funcs = [("get_weather", city), ("now", {"type": "object", "properties": {}, "additionalProperties": False})]
    one = tool_call_constraint(tokenizer, funcs, before="<tool_call>\n", after="\n</tool_call>", sep="\n",
                               multiple=False)
    many = tool_call_constraint(tokenizer, funcs, before="<tool_call>\n", after="\n</tool_call>", sep="\n",
                                multiple=True)
    for seed in range(4):
        for c in (one, many):
            f = c.fork()
            text = walk(tokenizer, f, seed, 400)
            assert f.is_done(), text
            blocks = text.split("\n<tool_call>\n") if text.count("<tool_call>") > 1 else [text]
            assert len(blocks) == 1 if c is one else len(blocks) >= 1, text
            for b in blocks:
                body = b.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")
                call = json.loads(body)
                assert b.endswith("\n</tool_call>") and list(call) == ["name", "arguments"], text
                jsonschema.validate(call["arguments"], dict(funcs)[call["name"]])


def test_a_tool_call_or_the_answer_schema(tokenizer):
    answer = {"type": "object", "properties": {"v": {"type": "boolean"}}, "required": ["v"],
              "additionalProperties": False}
    none = {"type": "object", "properties": {}, "additionalProperties": False}
    c = tool_call_constraint(tokenizer, [("f", none)], before="<tool_call>\n", after="\n</tool_call>", sep="\n",
                             or_schema=answer)
    kinds = set()
    for seed in range(12):
        f = c.fork()
        text = walk(tokenizer, f, seed, 200)
        assert f.is_done(), text
        if text.startswith("<tool_call>\n"):
            assert json.loads(text.split("\n")[1]) == {"name": "f", "arguments": {}}, text
            kinds.add("call")
        else:
            assert complete(text, answer), text
            kinds.add("answer")
    assert kinds == {"call", "answer"}
