"""The teacher: any OpenAI-compatible chat endpoint (DeepSeek, vLLM, ``tunesmith serve``…).

The official ``openai`` SDK does the HTTP work and its own retries (429 and 5xx with
``Retry-After`` honoured, timeouts, dropped connections); tunesmith adds only a semaphore for
``concurrency`` and a run-level budget. The API key is read from the environment variable
that ``api_key_env`` names, so no key is ever written into a config, a manifest or a log.

A reply is data, never trusted: the body of an HTTP 200 is read as raw bytes and checked here
(``read_reply``), not handed to the SDK's lenient parser. A body that is not a chat completion
(not JSON, empty, no ``choices``, a ``message`` or ``content`` of the wrong kind, a bad ``usage``)
is a ``BadReply``: retried here (the SDK retries only HTTP errors), then this request's failure.
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from ..config import Section
from ..errors import UserError


class TeacherConfig(Section):
    base_url: str = Field("http://127.0.0.1:8000/v1", description="the teacher's OpenAI-compatible endpoint "
                                                                  "(…/v1), e.g. https://api.deepseek.com/v1")
    model: str = Field("default", description="the model name the endpoint serves (e.g. deepseek-reasoner)")
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the API key "
                                                      "(e.g. DEEPSEEK_API_KEY); unset: no key (local servers)")
    concurrency: int = Field(8, ge=1, description="requests in flight at once")
    timeout: float = Field(120.0, gt=0, description="seconds per request before it is retried")
    max_retries: int = Field(4, ge=0, description="retries per request (429, 5xx, timeouts; Retry-After honoured)")
    max_requests: int | None = Field(None, ge=1, description="budget: stop after this many requests in one run")
    max_total_tokens: int | None = Field(None, ge=1, description="budget: stop once the teacher reports this many "
                                                                 "tokens (prompt + completion) in one run")
    temperature: float | None = Field(None, ge=0, description="sampling temperature (unset: the endpoint's default)")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling (unset: the endpoint's default)")
    max_tokens: int | None = Field(None, ge=1, description="most tokens per answer (unset: the endpoint's default)")
    seed: int | None = Field(None, description="sampling seed sent to the endpoint (if it supports one)")

    def params(self) -> dict[str, Any]:
        """The sampling fields that are set: part of every request and of its resume key."""
        keys = ("temperature", "top_p", "max_tokens", "seed")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass
class Reply:
    content: str
    reasoning: str | None
    finish_reason: str | None
    tokens: int

    def to_json(self) -> dict:
        return {"content": self.content, "reasoning": self.reasoning, "finish_reason": self.finish_reason,
                "tokens": self.tokens}


class TeacherDown(UserError):
    """The teacher can't answer at all (unreachable, wrong URL or model, key refused): the run stops."""


class BudgetSpent(Exception):
    """The run's request or token budget is used up: no new request is sent."""


class BadReply(Exception):
    """HTTP 200 with a body that is not a chat completion: this request failed (``str`` is the
    reason for errors.jsonl). ``tokens``: what its ``usage`` reported, if that much was readable."""

    def __init__(self, reason: str, tokens: int = 0):
        super().__init__(reason)
        self.tokens = tokens


def api_key(cfg: TeacherConfig) -> str:
    """The key from the named environment variable. Raises UserError naming the variable (never a value)."""
    if not cfg.api_key_env:
        return "none"  # the SDK insists on some key; local servers ignore it
    key = os.environ.get(cfg.api_key_env, "").strip()
    if not key:
        raise UserError(f"teacher.api_key_env: the environment variable {cfg.api_key_env} is not set "
                        f"(export {cfg.api_key_env}=... before running)")
    return key


def split_reasoning(message: dict) -> tuple[str | None, str]:
    """``(reasoning, answer)`` of a chat message: ``reasoning_content`` (DeepSeek), ``reasoning``
    (vLLM, OpenRouter) or inline ``<think>…</think>`` at the start of the content. An unclosed
    ``<think>`` (the answer was cut off inside its reasoning) gives reasoning None and content ''."""
    from ..data.formats import RowError, split_think

    content = message.get("content") or ""
    for name in ("reasoning_content", "reasoning"):
        value = message.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip(), content.strip()
    try:
        reasoning, answer = split_think(content, "content")
    except RowError:
        return None, ""
    return reasoning, answer.strip()


def _kind(value: Any) -> str:
    """What a JSON value is, in words: 'null', 'a string', 'a list', …"""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _clip(text: str, n: int = 80) -> str:
    """The first ``n`` characters, quoted, on one line."""
    return repr(text[:n] + ("…" if len(text) > n else ""))


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tokens(data: dict) -> int:
    """The reply's own ``usage.total_tokens`` (or prompt + completion); 0 without usage."""
    usage = data.get("usage")
    if usage is None:
        return 0
    if not isinstance(usage, dict):
        raise BadReply(f"reply's usage was {_kind(usage)}, not an object")
    total = usage.get("total_tokens")
    if total is None:  # some servers give only the parts
        parts = [usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0]
        return sum(parts) if all(_count(p) for p in parts) else 0
    if not _count(total):
        raise BadReply(f"reply's usage.total_tokens was {_clip(json.dumps(total), 40)}, not a whole number")
    return total


def read_reply(body: bytes) -> Reply:
    """The Reply in the raw body of an HTTP 200, or BadReply naming what is wrong with it. A
    well-formed reply with an empty answer (``choices: []`` or ``content: ""``) is a Reply
    (the verbs drop and count it); ``content: null`` is accepted only when the answer was cut
    off (finish_reason ``length``), where it means nothing was written yet."""
    text = body.decode("utf-8", "replace")
    if not text.strip():
        raise BadReply("reply was empty (HTTP 200 with no body)")
    try:
        data = json.loads(text)
    except ValueError:
        raise BadReply(f"reply was not JSON: {_clip(text.strip())}") from None
    if not isinstance(data, dict):
        raise BadReply(f"reply was {_kind(data)}, not a JSON object: {_clip(text.strip())}")
    tokens = _tokens(data)
    if "choices" not in data:
        err = data.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        tail = f" (it held an error: {_clip(str(msg), 160)})" if msg else ""
        raise BadReply(f"reply had no choices{tail}", tokens)
    choices = data["choices"]
    if not isinstance(choices, list):
        raise BadReply(f"reply's choices was {_kind(choices)}, not a list", tokens)
    if not choices:
        return Reply("", None, "empty", tokens)
    choice = choices[0]
    if not isinstance(choice, dict):
        raise BadReply(f"reply's choices[0] was {_kind(choice)}, not an object", tokens)
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise BadReply(f"reply's finish_reason was {_kind(finish)}, not a string", tokens)
    message = choice.get("message")
    if message is None:
        raise BadReply("reply's choices[0] had no message", tokens)
    if not isinstance(message, dict):
        raise BadReply(f"reply's message was {_kind(message)}, not an object", tokens)
    content = message.get("content")
    if content is None and finish == "length":
        message = {**message, "content": ""}
    elif not isinstance(content, str):
        raise BadReply(f"reply's message content was {_kind(content)}, not text", tokens)
    reasoning, answer = split_reasoning(message)
    return Reply(answer, reasoning, finish, tokens)


class Teacher:
    """One async client for a run. ``ask(messages)`` → Reply; raises TeacherDown for errors that
    every request would hit, BudgetSpent when the budget is used, and ``openai.APIError`` or
    BadReply for a failure of this one request (it goes to errors.jsonl and is retried on the
    next run)."""

    def __init__(self, cfg: TeacherConfig):
        import openai

        self.cfg = cfg
        self.client = openai.AsyncOpenAI(base_url=cfg.base_url, api_key=api_key(cfg), timeout=cfg.timeout,
                                         max_retries=cfg.max_retries)
        self.sem = asyncio.Semaphore(cfg.concurrency)
        self.requests = 0
        self.tokens = 0

    def _check_budget(self) -> None:
        c = self.cfg
        if (c.max_requests is not None and self.requests >= c.max_requests) or \
                (c.max_total_tokens is not None and self.tokens >= c.max_total_tokens):
            raise BudgetSpent()

    async def ask(self, messages: list[dict]) -> Reply:
        """One answer. A BadReply is asked again up to ``max_retries`` times (short backoff, each
        attempt a counted request); the last one is raised. A budget used up between attempts
        ends the retries with the BadReply, not BudgetSpent (the request was sent)."""
        last: BadReply | None = None
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                await asyncio.sleep(min(0.25 * 2 ** (attempt - 1), 4.0))
            try:
                return await self._ask_once(messages)
            except BudgetSpent:
                if last is None:
                    raise
                raise last from None
            except BadReply as e:
                last = e
        assert last is not None
        raise last

    async def _ask_once(self, messages: list[dict]) -> Reply:
        import openai

        async with self.sem:
            self._check_budget()
            self.requests += 1
            try:
                raw = await self.client.chat.completions.with_raw_response.create(
                    model=self.cfg.model, messages=messages, **self.cfg.params())
            except openai.APITimeoutError:
                raise  # a slow answer is this request's failure (errors.jsonl), not the teacher's
            except openai.APIConnectionError as e:
                # The SDK already retried: the endpoint is not there (down, wrong host or port).
                raise TeacherDown(f"teacher at {self.cfg.base_url} is not reachable ({_cause(e)}); start it or "
                                  "fix teacher.base_url") from None
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                raise TeacherDown(f"teacher at {self.cfg.base_url} refused the API key ({e.status_code}); check "
                                  f"the variable teacher.api_key_env names ({self.cfg.api_key_env or 'unset'})") from None
            except openai.NotFoundError as e:
                raise TeacherDown(f"teacher at {self.cfg.base_url}: 404 for model '{self.cfg.model}' "
                                  f"({_short(e)}); check teacher.base_url (it ends in /v1) and teacher.model") from None
        try:
            reply = read_reply(raw.content)
        except BadReply as e:
            self.tokens += e.tokens
            raise
        self.tokens += reply.tokens
        return reply

    async def close(self) -> None:
        await self.client.close()


def _cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:160]
