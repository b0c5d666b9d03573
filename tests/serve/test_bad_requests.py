"""Malformed and hostile requests: each gets a 4xx with an OpenAI-shaped error, and the server keeps answering."""
from __future__ import annotations

import httpx
import pytest
from serve_helpers import NAME

pytestmark = pytest.mark.xdist_group("serve")
JSON = {"Content-Type": "application/json"}
OK_MSG = [{"role": "user", "content": "Hi"}]


def chat(**kw):
    return {"model": NAME, "messages": OK_MSG, "max_tokens": 2, **kw}


# (name, method, path, body: dict → JSON, bytes → raw, status, param the error must name or None)
CASES = [
    ("not json", "POST", "/v1/chat/completions", b"{bad", 400, None),
    ("json array body", "POST", "/v1/chat/completions", b"[1, 2]", 400, None),
    ("deeply nested json", "POST", "/v1/chat/completions", b"[" * 100000 + b"]" * 100000, 400, None),
    ("missing messages", "POST", "/v1/chat/completions", {"model": NAME}, 400, "messages"),
    ("empty messages", "POST", "/v1/chat/completions", chat(messages=[]), 400, "messages"),
    ("messages is a string", "POST", "/v1/chat/completions", chat(messages="hi"), 400, "messages"),
    ("unknown role", "POST", "/v1/chat/completions", chat(messages=[{"role": "wizard", "content": "x"}]), 400,
     "messages.0.role"),
    ("content is a number", "POST", "/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]), 400,
     "messages.0.content"),
    ("null message", "POST", "/v1/chat/completions", chat(messages=[None]), 400, "messages.0"),
    ("null content", "POST", "/v1/chat/completions", chat(messages=[{"role": "user", "content": None}]), 400,
     "messages.0.content"),
    ("null role", "POST", "/v1/chat/completions", chat(messages=[{"role": None, "content": "x"}]), 400,
     "messages.0.role"),
    ("null text part", "POST", "/v1/chat/completions", chat(messages=[{"role": "user", "content": [None]}]), 400,
     "messages.0.content.0"),
    ("null messages", "POST", "/v1/chat/completions", chat(messages=None), 400, "messages"),
    ("image part", "POST", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400, None),
    ("max_tokens 0", "POST", "/v1/chat/completions", chat(max_tokens=0), 400, "max_tokens"),
    ("max_tokens a string", "POST", "/v1/chat/completions", chat(max_tokens="ten"), 400, "max_tokens"),
    ("max_tokens past the context", "POST", "/v1/chat/completions", chat(max_tokens=10**9), 400, "max_tokens"),
    ("temperature too high", "POST", "/v1/chat/completions", chat(temperature=5), 400, "temperature"),
    ("n zero", "POST", "/v1/chat/completions", chat(n=0), 400, "n"),
    ("n huge", "POST", "/v1/chat/completions", chat(n=100000), 400, "n"),
    ("five stop strings", "POST", "/v1/chat/completions", chat(stop=list("abcde")), 400, "stop"),
    ("tools without a tool template", "POST", "/v1/chat/completions",
     chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools"),
    ("unknown response_format type", "POST", "/v1/chat/completions", chat(response_format={"type": "xml"}), 400,
     "response_format.type"),
    ("json_schema without its schema object", "POST", "/v1/chat/completions",
     chat(response_format={"type": "json_schema"}), 400, "response_format.json_schema"),
    ("unknown field", "POST", "/v1/chat/completions", chat(foo=1), 400, "foo"),
    ("thinking on a model without it", "POST", "/v1/chat/completions",
     chat(chat_template_kwargs={"enable_thinking": True}), 400, "chat_template_kwargs.enable_thinking"),
    ("top_logprobs without logprobs", "POST", "/v1/chat/completions", chat(top_logprobs=2), 400, "top_logprobs"),
    ("frequency_penalty", "POST", "/v1/chat/completions", chat(frequency_penalty=1.0), 400, "frequency_penalty"),
    ("stream_options without stream", "POST", "/v1/chat/completions",
     chat(stream_options={"include_usage": True}), 400, "stream_options"),
    ("prompt longer than the context", "POST", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": "hello " * 9000}]), 400, "messages"),
    ("model not served", "POST", "/v1/chat/completions", chat(model="gpt-4"), 404, "model"),
    ("completion: empty prompt", "POST", "/v1/completions", {"model": NAME, "prompt": ""}, 400, "prompt"),
    ("completion: token id out of range", "POST", "/v1/completions", {"model": NAME, "prompt": [-1, 10**9]}, 400,
     "prompt"),
    ("completion: logprobs 99", "POST", "/v1/completions", {"model": NAME, "prompt": "a", "logprobs": 99}, 400,
     "logprobs"),
    ("completion: echo", "POST", "/v1/completions", {"model": NAME, "prompt": "a", "echo": True}, 400, "echo"),
    ("GET on a POST route", "GET", "/v1/chat/completions", None, 405, None),
    ("unknown route", "POST", "/v1/embeddings", {"model": NAME, "input": "x"}, 404, None),
]


def test_every_bad_request_is_a_4xx_and_the_server_keeps_answering(server):
    assert len(CASES) >= 15
    wrong = []
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for name, method, path, body, status, param in CASES:
            kw = {"content": body, "headers": JSON} if isinstance(body, bytes) else {"json": body}
            r = c.request(method, path, **({} if body is None else kw))
            err = r.json().get("error", {}) if r.headers.get("content-type", "").startswith("application/json") else {}
            if r.status_code != status or not isinstance(err.get("message"), str) or "type" not in err \
                    or (param is not None and err.get("param") != param):
                wrong.append(f"{name}: {r.status_code} {r.text[:200]}")
        assert not wrong, "\n".join(wrong)
        assert c.get("/health").json() == {"status": "ok"}
        r = c.post("/v1/chat/completions", json=chat(temperature=0))
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("messages, text", [
    ([None], 'messages[0]: expected a message object ({"role": "user", "content": "..."}), got null'),
    ([OK_MSG[0], {"role": "assistant", "content": None}],
     "messages[1].content: expected a string or a list of text parts, got null"),
    ([{"role": "user", "content": [None]}], "messages[0].content[0]: expected a text part"),
    ([{"role": "user"}], "messages[0].content: required"),
    (["hi"], "messages[0]: expected a message object"),
])
def test_a_null_or_missing_message_part_is_named_in_the_message(server, messages, text):
    r = httpx.post(server.url + "/v1/chat/completions", json=chat(messages=messages), timeout=60)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "invalid_value"
    assert err["message"].startswith(text), err["message"]


def test_an_oversized_body_is_a_413_said_before_it_is_read(server):
    """8 MiB by default (serve --max_request_mb): with a Content-Length the server answers at once;
    a chunked upload is cut off as soon as it passes the limit. The server keeps answering."""
    big = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * (9 * 2**20) + b'"}]}'

    def chunks():
        for i in range(0, len(big), 2**20):
            yield big[i:i + 2**20]

    with httpx.Client(base_url=server.url, timeout=120) as c:
        for body in (big, chunks()):
            r = c.post("/v1/chat/completions", content=body, headers=JSON)
            assert r.status_code == 413, r.text[:200]
            assert r.json()["error"]["code"] == "too_large" and "max_request_mb" in r.json()["error"]["message"]
        r = c.post("/v1/chat/completions", json=chat(temperature=0))
        assert r.status_code == 200

