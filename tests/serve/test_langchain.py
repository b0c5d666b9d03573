"""LangChain's ``ChatOpenAI`` (langchain-openai), unmodified, against real servers: invoke, stream, batch on
the embedded SmolLM2, ``with_structured_output`` (json_schema) on it, and ``bind_tools`` with a forced
call on the tiny tool model, round trip included."""
from __future__ import annotations

import operator
from functools import reduce
from typing import Literal

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field
from serve_helpers import NAME, TOOL_NAME

pytestmark = pytest.mark.xdist_group("serve")
Q = "What is the capital of France?"


def llm(server, model: str = NAME, **kw) -> ChatOpenAI:
    kw = {"temperature": 0, "max_tokens": 12, **kw}
    return ChatOpenAI(model=model, base_url=server.url + "/v1", api_key="none", max_retries=0, **kw)


class GetWeather(BaseModel):
    """Current weather in a city."""

    city: Literal["Paris", "Rome", "Oslo"]
    unit: Literal["C", "F"]


class Capital(BaseModel):
    """A country's capital."""

    city: str = Field(max_length=40)
    country: str = Field(max_length=40)


def test_invoke_stream_and_batch(server):
    m = llm(server)
    answer = m.invoke(Q)
    assert isinstance(answer, AIMessage) and "Paris" in answer.content
    assert answer.response_metadata["finish_reason"] == "stop"
    chunks = list(m.stream(Q))
    assert len(chunks) > 2 and "".join(c.content for c in chunks) == answer.content
    both = m.batch([Q, "Name two fruits."])
    assert both[0].content == answer.content and both[1].content and both[1].content != answer.content


def test_with_structured_output_json_schema(server):
    out = llm(server, max_tokens=80).with_structured_output(Capital, method="json_schema").invoke(
        "Which city is the capital of France? Answer in JSON.")
    assert isinstance(out, Capital) and out.city and out.country


def test_bind_tools_forced_call_and_the_answer_after_the_tool_result(tool_server):
    forced = llm(tool_server, TOOL_NAME, max_tokens=60).bind_tools([GetWeather], tool_choice="GetWeather", strict=True)
    ask = HumanMessage("What is the weather in Paris?")
    msg = forced.invoke([ask])
    assert msg.response_metadata["finish_reason"] == "tool_calls" and not msg.invalid_tool_calls
    [call] = msg.tool_calls
    assert call["name"] == "GetWeather" and call["id"]
    GetWeather(**call["args"])  # the arguments fit the schema
    streamed = reduce(operator.add, forced.stream([ask]))  # tool_call_chunks merged by LangChain
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [(call["name"], call["args"])]
    after = llm(tool_server, TOOL_NAME, max_tokens=6).bind_tools([GetWeather]).invoke(
        [ask, msg, ToolMessage('{"temperature": 18}', tool_call_id=call["id"])])
    assert isinstance(after, AIMessage) and after.response_metadata["finish_reason"] in ("stop", "length",
                                                                                         "tool_calls")
    required = llm(tool_server, TOOL_NAME, max_tokens=60).bind_tools([GetWeather], tool_choice="any", strict=True)
    got = required.invoke([ask])  # "any" is OpenAI's "required"
    assert got.response_metadata["finish_reason"] == "tool_calls", got
    assert [c["name"] for c in got.tool_calls] and {c["name"] for c in got.tool_calls} == {"GetWeather"}
