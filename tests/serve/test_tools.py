"""Tool calling: the call format learned from real chat templates, the call parser over any chunking,
and /v1/chat/completions with tools on a tiny model whose template renders them (raw HTTP: the exact
OpenAI shapes, streamed deltas included)."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import httpx
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from serve_helpers import NAME, TOOL_NAME
from tool_model import TOOL_TEMPLATE

from tunesmith.serve.tools import CallFormat, CallParser, ToolSupport, probe

pytestmark = pytest.mark.xdist_group("serve")
TRL_TEMPLATES = Path(list(importlib.util.find_spec("trl").submodule_search_locations)[0]) / "chat_templates"
QWEN = CallFormat("", "<tool_call>\n", "\n</tool_call>", "\n", "name", "arguments")
LLAMA = CallFormat("", "", "", None, "name", "parameters")
CITY = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]}},
        "required": ["city"], "additionalProperties": False}
UNITS = {"type": "object", "properties": {"unit": {"enum": ["C", "F"]}, "days": {"type": "integer", "minimum": 1,
                                                                                 "maximum": 7}},
         "required": ["unit", "days"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": CITY}},
         {"type": "function", "function": {"name": "forecast", "parameters": UNITS}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _tok(embedded_dir, template: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_dir)
    tok.chat_template = template
    return tok


@pytest.mark.parametrize("name, support", [
    ("qwen2_5.jinja", ToolSupport(True, QWEN)),
    ("qwen3.jinja", ToolSupport(True, replace(QWEN, prelude="<think>\n\n</think>\n\n"))),
    ("llama3_1.jinja", ToolSupport(True, LLAMA)),   # one call per turn: the template raises on two
    ("llama3_2.jinja", ToolSupport(True, LLAMA)),
    ("gptoss.jinja", ToolSupport(True, None)),      # renders tools, writes calls in its own channel syntax
    ("gemma3.jinja", ToolSupport(False, None)),
    ("phi3.jinja", ToolSupport(False, None)),
])
def test_the_call_format_is_learned_from_real_templates(embedded_dir, name, support):
    assert probe(_tok(embedded_dir, (TRL_TEMPLATES / name).read_text())) == support


def test_the_test_template_renders_tools_and_smollm2s_does_not(embedded_dir, tokenizer):
    assert probe(_tok(embedded_dir, TOOL_TEMPLATE)) == ToolSupport(True, QWEN)
    assert probe(tokenizer) == ToolSupport(False, None)


PARSE = [
    # (format, answer text, content (None: null, the answer is calls), calls as (name, arguments))
    (QWEN, '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>', None, [("f", {"x": 1})]),
    (QWEN, 'Let me look.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n<tool_call>\n'
           '{"name": "g", "arguments": {"a": "<tool_call>"}}\n</tool_call>', "Let me look.",
     [("f", {}), ("g", {"a": "<tool_call>"})]),
    (QWEN, '  \n<tool_call>\n{"name": "f", "arguments": "{\\"x\\": 2}"}\n</tool_call>\n', None, [("f", {"x": 2})]),
    (QWEN, "a < b, and <tool_ no call", "a < b, and <tool_ no call", []),
    (QWEN, '<tool_call>\n{"name": "f", "argum', '<tool_call>\n{"name": "f", "argum', []),  # cut by max_tokens
    (QWEN, "<tool_call>\nnot json\n</tool_call>", "<tool_call>\nnot json\n</tool_call>", []),
    (QWEN, " plain \n", " plain \n", []),
    (LLAMA, '{"name": "f", "parameters": {"x": 1}}', None, [("f", {"x": 1})]),
    (LLAMA, 'The answer is {"a": 1}', 'The answer is {"a": 1}', []),
    (LLAMA, '{"a": 1}', '{"a": 1}', []),
]


def parse(fmt: CallFormat, text: str, cuts: list[int], parallel: bool = True):
    p = CallParser(fmt, parallel)
    content, calls = [], []
    bounds = sorted({0, len(text), *[x % (len(text) + 1) for x in cuts]})
    for a, b in zip(bounds, bounds[1:]):
        c, k = p.feed(text[a:b])
        content.append(c)
        calls += k
    c, k = p.feed("", final=True)
    return "".join(content + [c]), [(x["function"]["name"], json.loads(x["function"]["arguments"])) for x in calls + k]


@given(st.sampled_from(PARSE), st.lists(st.integers(0, 300), max_size=8))
def test_calls_parse_the_same_however_the_stream_cuts_them(case, cuts):
    fmt, text, content, calls = case
    assert parse(fmt, text, cuts) == (content or "", calls)


def test_parallel_false_keeps_the_first_call():
    text = PARSE[1][1]
    assert parse(QWEN, text, [], parallel=False) == ("Let me look.", [("f", {})])


# ---- over HTTP, on the tiny tool model ----

def chat(server, **kw):
    body = {"model": TOOL_NAME, "messages": ASK, "temperature": 0, "max_tokens": 60, **kw}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def stream(server, **kw) -> list[dict]:
    body = {"model": TOOL_NAME, "messages": ASK, "temperature": 0, "max_tokens": 60, "stream": True, **kw}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        lines = [x[len("data: "):] for x in r.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


def check_calls(calls: list[dict], names: set[str]) -> None:
    params = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    assert calls and len({c["id"] for c in calls}) == len(calls)
    for c in calls:
        assert c["type"] == "function" and c["id"].startswith("call_") and c["function"]["name"] in names
        jsonschema.validate(json.loads(c["function"]["arguments"]), params[c["function"]["name"]])


@pytest.mark.parametrize("choice, names", [
    ("required", {"get_weather", "forecast"}),
    ({"type": "function", "function": {"name": "forecast"}}, {"forecast"}),
])
def test_a_forced_call_is_always_valid_and_streams_in_openais_shape(tool_server, choice, names):
    whole = chat(tool_server, tools=TOOLS, tool_choice=choice)
    c = whole["choices"][0]
    assert c["finish_reason"] == "tool_calls" and c["message"]["content"] is None
    check_calls(c["message"]["tool_calls"], names)
    chunks = stream(tool_server, tools=TOOLS, tool_choice=choice)
    deltas = [ch["choices"][0]["delta"] for ch in chunks if ch["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    got: dict[int, dict] = {}
    for d in deltas[1:]:
        assert set(d) <= {"tool_calls"}, d  # no content beside the calls
        for tc in d.get("tool_calls", []):
            if "id" in tc:   # a call opens with its id, type and name; its arguments follow
                assert tc["type"] == "function" and tc["function"]["arguments"] == "" and tc["index"] not in got
                got[tc["index"]] = {"id": tc["id"], "type": "function", "function": dict(tc["function"])}
            else:
                got[tc["index"]]["function"]["arguments"] += tc["function"]["arguments"]
    assert sorted(got) == list(range(len(got)))
    assert [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"] and ch["choices"][0]["finish_reason"]] \
        == ["tool_calls"]
    strip = [{**x, "id": None} for x in c["message"]["tool_calls"]]
    assert [{**got[i], "id": None} for i in sorted(got)] == strip  # greedy: the stream is the same answer


def test_parallel_tool_calls_false_gives_exactly_one_call(tool_server):
    c = chat(tool_server, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, seed=3,
             temperature=1.0, n=4)
    for choice in c["choices"]:
        assert len(choice["message"]["tool_calls"]) == 1 and choice["finish_reason"] == "tool_calls"


def test_the_round_trip_renders_the_call_and_the_result_through_the_template(tool_server):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tool_server.cfg.model)
    first = chat(tool_server, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    msg = first["choices"][0]["message"]
    call = msg["tool_calls"][0]
    history = ASK + [msg, {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature_c": 18}'}]
    answer = chat(tool_server, messages=history, tools=TOOLS, max_tokens=5)
    a = answer["choices"][0]
    assert isinstance(a["message"]["content"], str) and a["finish_reason"] in ("stop", "length", "tool_calls")
    rendered = ASK + [{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": call["function"]["name"],
                                          "arguments": json.loads(call["function"]["arguments"])}}]},
        {"role": "tool", "content": '{"temperature_c": 18}'}]
    text = tok.apply_chat_template(rendered, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert "<tool_response>\n{\"temperature_c\": 18}\n</tool_response>" in text and "<tool_call>" in text
    assert answer["usage"]["prompt_tokens"] == len(tok(text, add_special_tokens=False)["input_ids"])


def test_tools_are_offered_with_auto_and_not_with_none(tool_server):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tool_server.cfg.model)

    def prompt_len(tools):
        return len(tok.apply_chat_template(ASK, tools=tools, add_generation_prompt=True, tokenize=True)["input_ids"])

    auto = chat(tool_server, tools=TOOLS, max_tokens=4)
    assert auto["usage"]["prompt_tokens"] == prompt_len(TOOLS)
    assert auto["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")
    none = chat(tool_server, tools=TOOLS, tool_choice="none", max_tokens=4)
    assert none["usage"]["prompt_tokens"] == prompt_len(None)
    assert "tool_calls" not in none["choices"][0]["message"]


def test_auto_with_a_response_format_answers_a_call_or_that_json(tool_server):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "ok", "schema": schema}}
    # room for two calls; a sampled row that keeps calling may still be cut by max_tokens (finish "length"):
    # its complete calls must hold, the cut text is not checked
    r = chat(tool_server, tools=TOOLS, response_format=fmt, temperature=1.0, seed=0, n=6, max_tokens=120)
    kinds = set()
    for c in r["choices"]:
        if c["finish_reason"] == "tool_calls":
            check_calls(c["message"]["tool_calls"], {"get_weather", "forecast"})
            kinds.add("call")
        elif c["finish_reason"] == "length":
            if c["message"].get("tool_calls"):
                check_calls(c["message"]["tool_calls"], {"get_weather", "forecast"})
        else:
            jsonschema.validate(json.loads(c["message"]["content"]), schema)
            kinds.add("json")
    assert kinds


BAD = [
    # (server, body changes, status, param, words in the message)
    ("tools", {"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", '"none", "auto", "required"'),
    ("tools", {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice",
     "not one of tools"),
    ("tools", {"tool_choice": "required"}, "tool_choice", "requires tools"),
    ("tools", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "bogus"}}}]},
     "tools[0].function.parameters", "Invalid type: bogus"),
    ("tools", {"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools.0.function.name",
     "pattern"),
    ("tools", {"tools": TOOLS + TOOLS[:1]}, "tools", "two tools are named 'get_weather'"),
    ("tools", {"messages": ASK + [{"role": "tool", "content": "18"}]}, "messages[1].tool_call_id", "tool_call_id"),
    ("tools", {"messages": ASK + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{oops"}}]}]},
     "messages[1].tool_calls[0].function.arguments", "JSON"),
    ("tools", {"messages": [{"role": "user", "content": "x", "tool_call_id": "c1"}]}, "messages[0].tool_call_id",
     "only tool messages"),
    ("plain", {"tools": TOOLS}, "tools", "this model's chat template does not render tools"),
    ("plain", {"tools": TOOLS, "tool_choice": "required"}, "tools", "does not render tools"),
    ("plain", {"messages": ASK + [{"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}]},
     "messages[1]", "does not render tools"),
]


@pytest.mark.parametrize("which, change, param, words", BAD)
def test_a_tool_request_that_cannot_be_honoured_is_a_400_naming_the_field(server, tool_server, which, change, param,
                                                                          words):
    s, name = (tool_server, TOOL_NAME) if which == "tools" else (server, NAME)
    body = {"model": name, "messages": ASK, "max_tokens": 2, **change}
    r = httpx.post(s.url + "/v1/chat/completions", json=body, timeout=60)
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == param and words in err["message"], r.text
    assert "\n" not in err["message"]


def test_tool_choice_none_with_tools_is_fine_on_a_model_without_tool_rendering(server):
    r = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": NAME, "messages": ASK, "max_tokens": 2, "tools": TOOLS, "tool_choice": "none"})
    assert r.status_code == 200 and "tool_calls" not in r.json()["choices"][0]["message"]
