"""The teacher: any OpenAI-compatible chat endpoint (DeepSeek, vLLM, ``tunesmith serve``…).

The official ``openai`` SDK does the HTTP work and its own retries (429 and 5xx with
``Retry-After`` honoured, timeouts, dropped connections); tunesmith adds only a semaphore for
``concurrency`` and a run-level budget. The API key is read from the environment variable
that ``api_key_env`` names, so no key is ever written into a config, a manifest or a log.
"""
from __future__ import annotations

import asyncio
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


def api_key(cfg: TeacherConfig) -> str:
    """The key from the named environment variable. Raises UserError naming the variable (never a value)."""
    if not cfg.api_key_env:
        return "none"  # the SDK insists on some key; local servers ignore it
    key = os.environ.get(cfg.api_key_env, "").strip()
    if not key:
        raise UserError(f"teacher.api_key_env: the environment variable {cfg.api_key_env} is not set "
                        f"(export {cfg.api_key_env}=... before running)")
    return key


def split_reasoning(message: Any) -> tuple[str | None, str]:
    """``(reasoning, answer)`` of a chat message: ``reasoning_content`` (DeepSeek), ``reasoning``
    (vLLM, OpenRouter) or inline ``<think>…</think>`` at the start of the content. An unclosed
    ``<think>`` (the answer was cut off inside its reasoning) gives reasoning None and content ''."""
    from ..data.formats import RowError, split_think

    content = message.content or ""
    extra = getattr(message, "model_extra", None) or {}
    for name in ("reasoning_content", "reasoning"):
        value = extra.get(name, getattr(message, name, None))
        if isinstance(value, str) and value.strip():
            return value.strip(), content.strip()
    try:
        reasoning, answer = split_think(content, "content")
    except RowError:
        return None, ""
    return reasoning, answer.strip()


class Teacher:
    """One async client for a run. ``ask(messages)`` → Reply; raises TeacherDown for errors that
    every request would hit, BudgetSpent when the budget is used, and ``openai.APIError`` for a
    failure of this one request (it goes to errors.jsonl and is retried on the next run)."""

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
        import openai

        async with self.sem:
            self._check_budget()
            self.requests += 1
            try:
                resp = await self.client.chat.completions.create(model=self.cfg.model, messages=messages,
                                                                 **self.cfg.params())
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
        usage = getattr(resp, "usage", None)
        self.tokens += getattr(usage, "total_tokens", 0) or 0
        if not resp.choices:
            return Reply("", None, "empty", self.tokens)
        choice = resp.choices[0]
        reasoning, content = split_reasoning(choice.message)
        return Reply(content, reasoning, choice.finish_reason, getattr(usage, "total_tokens", 0) or 0)

    async def close(self) -> None:
        await self.client.close()


def _cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:160]
