"""The official ``openai`` client, unmodified, against a real server on the embedded SmolLM2."""
from __future__ import annotations

import threading

import openai
import pytest

from serve_helpers import NAME, Running

pytestmark = pytest.mark.xdist_group("serve")
Q = [{"role": "user", "content": "What is the capital of France?"}]


def greedy(client, messages=Q, **kw):
    return client.chat.completions.create(model=NAME, messages=messages, temperature=0, max_tokens=12, **kw)


def test_chat_answers_with_usage_equal_to_tokenizer_counts(server, tokenizer):
    r = greedy(server.client())
    c = r.choices[0]
    assert "Paris" in c.message.content and c.message.role == "assistant"
    prompt = tokenizer.apply_chat_template(Q, add_generation_prompt=True, tokenize=True)["input_ids"]
    assert r.usage.prompt_tokens == len(prompt)
    assert r.usage.completion_tokens == len(tokenizer(c.message.content, add_special_tokens=False)["input_ids"])
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert c.finish_reason == "stop" and r.model == NAME


def test_length_finish_and_max_completion_tokens(server):
    r = server.client().chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Tell me a story."}],
                                                temperature=0, max_completion_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5


def test_stream_reassembles_to_the_greedy_answer_with_usage(server):
    full = greedy(server.client())
    chunks = list(greedy(server.client(), stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) > 2  # really streamed
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage


def test_n2_gives_two_choices_and_seeded_sampling_repeats(server):
    c = server.client()
    r = c.chat.completions.create(model=NAME, messages=Q, n=2, temperature=1.0, seed=7, max_tokens=10)
    assert [x.index for x in r.choices] == [0, 1]
    again = c.chat.completions.create(model=NAME, messages=Q, n=2, temperature=1.0, seed=7, max_tokens=10)
    assert [x.message.content for x in r.choices] == [x.message.content for x in again.choices]
    assert r.usage.completion_tokens == sum(len(x.logprobs.content) for x in
                                            c.chat.completions.create(model=NAME, messages=Q, n=2, temperature=1.0,
                                                                      seed=7, max_tokens=10, logprobs=True).choices)


def test_stop_strings_cut_the_answer(server):
    full = greedy(server.client()).choices[0].message.content
    word = full.split()[2]
    r = greedy(server.client(), stop=[word, "zzzz"])
    assert r.choices[0].message.content == full[:full.index(word)]
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(ch.choices[0].delta.content or "" for ch in greedy(server.client(), stop=word, stream=True))
    assert streamed == full[:full.index(word)]


def test_logprobs_and_top_logprobs(server):
    r = greedy(server.client(), logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs.content
    assert "".join(x.token for x in lp) == r.choices[0].message.content
    assert len(lp) == r.usage.completion_tokens
    for x in lp:  # greedy: the chosen token is the most likely one
        assert len(x.top_logprobs) == 3 and x.top_logprobs[0].token == x.token
        assert x.logprob == pytest.approx(x.top_logprobs[0].logprob) and x.logprob <= 0


def test_completions_endpoint(server, tokenizer):
    c = server.client()
    r = c.completions.create(model=NAME, prompt="The capital of France is", max_tokens=6, temperature=0, logprobs=2)
    assert "Paris" in r.choices[0].text
    assert r.usage.prompt_tokens == len(tokenizer("The capital of France is")["input_ids"])
    assert r.usage.completion_tokens == len(r.choices[0].logprobs.tokens) == 6
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model=NAME, prompt="The capital of France is", max_tokens=6, temperature=0, stream=True) if ch.choices)
    assert streamed == r.choices[0].text


def test_models_lists_the_served_name(server):
    models = server.client().models.list().data
    assert [m.id for m in models] == [NAME]


def test_concurrent_requests_are_batched_and_match_solo_answers(server):
    c = server.client()
    prompts = [[{"role": "user", "content": f"Name {k} fruits."}] for k in (2, 3, 4, 5)]
    solo = [greedy(c, p).choices[0].message.content for p in prompts]
    before = server.engine.stats["max_rows"]
    server.engine.stats["max_rows"] = 0
    got = [None] * 4
    barrier = threading.Barrier(4)

    def ask(i):
        barrier.wait()
        got[i] = greedy(c, prompts[i]).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.engine.stats["max_rows"] >= 2, "requests that arrived together were not decoded together"
    assert got == solo
    server.engine.stats["max_rows"] = max(before, server.engine.stats["max_rows"])


def test_a_request_joins_a_running_batch_with_the_same_answer(server):
    c = server.client()
    long_q = [{"role": "user", "content": "Write a long story about a dragon."}]
    solo_long = c.chat.completions.create(model=NAME, messages=long_q, temperature=0, max_tokens=60)
    solo_short = greedy(c)
    joins = server.engine.stats["joins"]
    with c.chat.completions.create(model=NAME, messages=long_q, temperature=0, max_tokens=60, stream=True) as s:
        parts = [next(iter(s)).choices[0].delta.content or ""]
        joined = greedy(c)  # arrives while the long answer is being generated
        parts += [ch.choices[0].delta.content or "" for ch in s if ch.choices]
    assert server.engine.stats["joins"] > joins
    assert joined.choices[0].message.content == solo_short.choices[0].message.content
    assert "".join(parts) == solo_long.choices[0].message.content


def test_adapter_changes_the_answer(server, embedded_dir, lora_dir):
    tuned = Running(server.cfg.model_copy(update={"adapter": [str(lora_dir)]}))
    try:
        a = greedy(tuned.client()).choices[0].message.content
    finally:
        tuned.close()
    assert a != greedy(server.client()).choices[0].message.content
    # The same adapter named beside the base: a request picks it by "model", from one copy of the base.
    both = Running(server.cfg.model_copy(update={"named_adapters": {"tuned": str(lora_dir)}}))
    try:
        c = both.client()
        assert [m.id for m in c.models.list().data] == [NAME, "tuned"]
        answers = {}

        def ask(model):
            answers[model] = c.chat.completions.create(model=model, messages=Q, temperature=0, max_tokens=12)

        threads = [threading.Thread(target=ask, args=(m,)) for m in (NAME, "tuned")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(openai.NotFoundError, match="serves 'smollm2', 'tuned'"):
            c.chat.completions.create(model="other", messages=Q, max_tokens=2)
    finally:
        both.close()
    assert answers["tuned"].choices[0].message.content == a
    assert answers[NAME].choices[0].message.content == greedy(server.client()).choices[0].message.content


def test_api_key_is_required_when_set(embedded_dir, tiny_model, monkeypatch):
    from tunesmith.serve import ServeConfig

    monkeypatch.setenv("TS_TEST_KEY", "s3cret")
    s = Running(ServeConfig(model=str(tiny_model), served_name=NAME, api_key_env="TS_TEST_KEY"))
    try:
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong").models.list()
        with pytest.raises(openai.AuthenticationError):
            greedy(s.client(api_key="wrong"))
        assert [m.id for m in s.client(api_key="s3cret").models.list().data] == [NAME]
        assert greedy(s.client(api_key="s3cret")).choices[0].finish_reason in ("stop", "length")
    finally:
        s.close()


# ---- structured output and tools (the tools round trip runs on tool_server: a tiny model whose template renders them)

CAPITAL = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                            "country": {"type": "string", "maxLength": 40},
                                            "population_millions": {"type": "number", "minimum": 0}},
           "required": ["city", "country", "population_millions"], "additionalProperties": False}
JSON_Q = [{"role": "user", "content": "Which city is the capital of France? Answer in JSON."}]


def test_response_format_json_schema_always_parses_and_validates(server):
    import json

    import jsonschema

    c = server.client()
    fmt = {"type": "json_schema", "json_schema": {"name": "capital", "schema": CAPITAL, "strict": True}}
    r = c.chat.completions.create(model=NAME, messages=JSON_Q, temperature=0, max_tokens=80, response_format=fmt)
    answer = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(answer), CAPITAL)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model=NAME, messages=JSON_Q, temperature=0, max_tokens=80, response_format=fmt, stream=True) if ch.choices)
    assert streamed == answer
    sampled = c.chat.completions.create(model=NAME, messages=JSON_Q, temperature=1.0, seed=1, n=3, max_tokens=80,
                                        response_format=fmt)
    for ch in sampled.choices:  # each row its own grammar state
        if ch.finish_reason == "stop":
            jsonschema.validate(json.loads(ch.message.content), CAPITAL)
    obj = c.chat.completions.create(model=NAME, messages=JSON_Q, temperature=0, max_tokens=80,
                                    response_format={"type": "json_object"})
    assert obj.choices[0].finish_reason == "stop" and isinstance(json.loads(obj.choices[0].message.content), dict)


def test_parse_with_a_pydantic_model(server):
    from pydantic import BaseModel, Field

    class Capital(BaseModel):
        city: str = Field(max_length=40)
        country: str = Field(max_length=40)

    r = server.client().chat.completions.parse(model=NAME, messages=JSON_Q, temperature=0, max_tokens=80,
                                               response_format=Capital)
    assert isinstance(r.choices[0].message.parsed, Capital) and r.choices[0].message.parsed.city


def test_an_invalid_schema_or_format_is_a_400_naming_the_field(server):
    c = server.client()
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=NAME, messages=JSON_Q, max_tokens=5, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": 5}}})
    assert e.value.body["param"] == "response_format.json_schema.schema"
    assert "properties must be an object" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=NAME, messages=JSON_Q, max_tokens=5, response_format={"type": "xml"})
    assert e.value.body["param"] == "response_format.type"


def test_tools_round_trip(tool_server):
    import json

    import jsonschema
    from serve_helpers import TOOL_NAME

    city = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]}},
            "required": ["city"], "additionalProperties": False}
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": city, "strict": True}}]
    c = tool_server.client()
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = c.chat.completions.create(model=TOOL_NAME, messages=messages, tools=tools, tool_choice="required",
                                  temperature=0, max_tokens=60)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and msg.content is None and msg.tool_calls
    for tc in msg.tool_calls:
        assert tc.function.name == "get_weather"
        jsonschema.validate(json.loads(tc.function.arguments), city)
    messages.append(msg)  # the SDK's own message object goes back as it came
    messages += [{"role": "tool", "tool_call_id": tc.id, "content": '{"temperature_c": 18}'} for tc in msg.tool_calls]
    answer = c.chat.completions.create(model=TOOL_NAME, messages=messages, tools=tools, temperature=0, max_tokens=6)
    assert isinstance(answer.choices[0].message.content, str)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
    with c.chat.completions.stream(model=TOOL_NAME, messages=messages[:1], tools=tools, temperature=0, max_tokens=60,
                                   tool_choice={"type": "function", "function": {"name": "get_weather"}}) as s:
        final = s.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert [(t.function.name, t.function.arguments) for t in final.choices[0].message.tool_calls] == \
        [(t.function.name, t.function.arguments) for t in msg.tool_calls]  # greedy: the same calls, streamed
