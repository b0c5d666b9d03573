"""A small OpenAI-compatible teacher that misbehaves on purpose, deterministically.

On a request's first attempt (the SDK's ``x-stainless-retry-count`` header is 0) one request in
five fails, chosen by a hash of its messages: HTTP 500, HTTP 429 with ``Retry-After: 1``, or a
hang past the client's timeout. Retries succeed, so a run converges, and the same prompts fail
the same way every time. A third of the answers carry ``reasoning_content``, another third an
inline ``<think>`` block. Every request's messages are recorded (``self.requests``).

``bad`` (settable at any time) makes it answer HTTP 200 with a broken body: ``bad(messages,
attempt)`` (attempt: how many times these messages came before) names one of ``FAULTS`` or
returns None for a good answer. ``usage(messages)`` is the ``total_tokens`` a good answer reports.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from serve_helpers import free_port


def digest(messages: list[dict]) -> int:
    return int(hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest(), 16)


def default_answer(messages: list[dict]) -> str:
    return "ANSWER: " + messages[-1]["content"][::-1]


# HTTP 200 bodies that are not a usable chat completion (and two that are well-formed but empty).
FAULTS = {
    "garbage": ("text/html", b"<html><body>502 Bad Gateway</body></html>"),
    "empty-body": ("application/json", b""),
    "not-object": ("application/json", b'["a", "list"]'),
    "no-choices": ("application/json", b"{}"),
    "error-200": ("application/json", b'{"error": {"message": "upstream overloaded"}}'),
    "choices-string": ("application/json", b'{"choices": "oops"}'),
    "choice-number": ("application/json", b'{"choices": [7]}'),
    "no-message": ("application/json", b'{"choices": [{"index": 0, "finish_reason": "stop"}]}'),
    "message-string": ("application/json", b'{"choices": [{"index": 0, "message": "hi", "finish_reason": "stop"}]}'),
    "null-content": ("application/json",
                     b'{"choices": [{"message": {"role": "assistant", "content": null}, "finish_reason": "stop"}]}'),
    "number-content": ("application/json",
                       b'{"choices": [{"message": {"role": "assistant", "content": 42}, "finish_reason": "stop"}]}'),
    "usage-string": ("application/json", b'{"choices": [{"message": {"role": "assistant", "content": "ok"}, '
                                          b'"finish_reason": "stop"}], "usage": "lots"}'),
    "usage-total-string": ("application/json", b'{"choices": [{"message": {"role": "assistant", "content": "ok"}, '
                                               b'"finish_reason": "stop"}], "usage": {"total_tokens": "10"}}'),
    # well-formed, only empty: a Reply the verbs drop and count, never a failure
    "empty-choices": ("application/json", b'{"choices": [], "usage": {"total_tokens": 3}}'),
    "empty-content": ("application/json", b'{"choices": [{"message": {"role": "assistant", "content": ""}, '
                                          b'"finish_reason": "stop"}], "usage": {"total_tokens": 4}}'),
    # cut off at max_tokens before any answer: content null is then well-formed (vLLM with a reasoning parser)
    "empty-cut": ("application/json", b'{"choices": [{"message": {"role": "assistant", "content": null, '
                                      b'"reasoning_content": "so far"}, "finish_reason": "length"}], '
                                      b'"usage": {"total_tokens": 5}}'),
}


def reasoning_for(messages: list[dict]) -> tuple[str, str | None]:
    """How the fake gives reasoning for these messages: ("field" | "inline" | "none", text)."""
    h = digest(messages) // 15
    kind = ("field", "inline", "none")[h % 3]
    return kind, None if kind == "none" else f"thinking about {messages[-1]['content'][:20].strip()}"


class FakeTeacher:
    def __init__(self, fail_every: int = 5, hang: float = 4.0, latency: float = 0.0, answer=default_answer,
                 bad=None, usage=lambda msgs: 10):
        self.requests: list[list[dict]] = []
        self.hang, self.answer, self.bad, self.usage = hang, answer, bad, usage
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(req: Request):
            body = await req.json()
            msgs = body["messages"]
            self.requests.append(msgs)
            h = digest(msgs)
            if latency:
                await asyncio.sleep(latency)
            if fail_every and req.headers.get("x-stainless-retry-count", "0") == "0" and h % fail_every == 0:
                kind = (h // fail_every) % 3
                if kind == 0:
                    return JSONResponse({"error": {"message": "injected 500"}}, status_code=500)
                if kind == 1:
                    return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                                        headers={"Retry-After": "1"})
                await asyncio.sleep(self.hang)  # the client has timed out and retried by now
            fault = self.bad(msgs, self.requests[:-1].count(msgs)) if self.bad else None
            if fault:
                media, raw = FAULTS[fault]
                return Response(raw, status_code=200, media_type=media)
            kind, thought = reasoning_for(msgs)
            content = self.answer(msgs)
            message = {"role": "assistant", "content": content}
            if kind == "field":
                message["reasoning_content"] = thought
            elif kind == "inline":
                message["content"] = f"<think>\n{thought}\n</think>\n\n{content}"
            return {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": self.usage(msgs)}}

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "fake teacher did not start"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
