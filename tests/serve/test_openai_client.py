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
    before = server.batcher.stats["max_rows"]
    server.batcher.stats["max_rows"] = 0
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
    assert server.batcher.stats["max_rows"] >= 2, "requests that arrived together were not decoded together"
    assert got == solo
    server.batcher.stats["max_rows"] = max(before, server.batcher.stats["max_rows"])


def test_a_request_joins_a_running_batch_with_the_same_answer(server):
    c = server.client()
    long_q = [{"role": "user", "content": "Write a long story about a dragon."}]
    solo_long = c.chat.completions.create(model=NAME, messages=long_q, temperature=0, max_tokens=60)
    solo_short = greedy(c)
    joins = server.batcher.stats["joins"]
    with c.chat.completions.create(model=NAME, messages=long_q, temperature=0, max_tokens=60, stream=True) as s:
        parts = [next(iter(s)).choices[0].delta.content or ""]
        joined = greedy(c)  # arrives while the long answer is being generated
        parts += [ch.choices[0].delta.content or "" for ch in s if ch.choices]
    assert server.batcher.stats["joins"] > joins
    assert joined.choices[0].message.content == solo_short.choices[0].message.content
    assert "".join(parts) == solo_long.choices[0].message.content


def test_adapter_changes_the_answer(server, embedded_dir, lora_dir):
    tuned = Running(server.cfg.model_copy(update={"adapter": [str(lora_dir)]}))
    try:
        a = greedy(tuned.client()).choices[0].message.content
    finally:
        tuned.close()
    assert a != greedy(server.client()).choices[0].message.content


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
