"""Side-by-side chat through the one engine: one ``Engine`` holds the base and each side's adapter as a named
adapter, so both answers decode in the same continuous batch; answers stream as the server's do (SSE lines
read with fetch), reasoning split from the answer by the same splitter."""
from __future__ import annotations

import asyncio
import threading
from typing import Any

from pydantic import Field

from ..config import Section
from ..errors import UserError
from .workspace import Workspace


class Pair(Section):
    model: str = Field(..., description="the base model both sides share")
    left: str | None = Field(None, description="adapter / run folder for the left side (empty: the base)")
    right: str | None = Field(None, description="adapter / run folder for the right side (empty: the base)")


class Ask(Section):
    side: str = Field(..., pattern="^(left|right)$")
    messages: list[dict[str, Any]] = Field(..., min_length=1)
    system: str | None = None
    thinking: bool = False
    max_tokens: int = Field(128, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0, le=2)


class Chats:
    """The loaded pair (one engine); loading another pair stops the old engine first."""

    def __init__(self, ws: Workspace):
        self.ws, self.key, self.engine, self.info = ws, None, None, {}
        self.lock = threading.Lock()

    def _adapter(self, given: str | None) -> str | None:
        if not given or not given.strip():
            return None
        p = self.ws.path(given, "adapter") if not given.startswith("/") else self.ws.path(given, "adapter")
        if not p.is_dir():
            raise UserError(f"adapter: {given} is not a folder")
        return str(p)

    def load(self, pair: Pair) -> dict:
        from ..infer.engine import Engine
        from ..models.template import supports_thinking

        left, right = self._adapter(pair.left), self._adapter(pair.right)
        key = (pair.model, left, right)
        with self.lock:
            if key != self.key:
                named = {k: v for k, v in (("left", left), ("right", right)) if v}
                engine = Engine.load(pair.model, named_adapters=named or None, max_batch=8, graphs=False)
                if self.engine is not None:
                    self.engine.stop()
                self.engine, self.key = engine, key
                self.info = {"model": pair.model, "left": pair.left or "base", "right": pair.right or "base",
                             "thinking": supports_thinking(engine.tok)}
        return self.info

    def close(self) -> None:
        if self.engine is not None:
            self.engine.stop()

    async def stream(self, ask: Ask):
        """SSE lines: ``{"reasoning"}`` / ``{"content"}`` pieces, then ``{"done": finish}`` (or ``{"error"}``)."""
        from ..infer import GenParams, Job
        from ..infer.think import ThinkSplitter
        from ..serve.app import _sse

        if self.engine is None:
            raise UserError("load a model first")
        eng = self.engine
        adapter = ask.side if ask.side in eng.adapters else None
        msgs = ([{"role": "system", "content": ask.system}] if ask.system else []) + ask.messages
        think = ask.thinking if self.info.get("thinking") else None
        try:
            prompt = await asyncio.to_thread(eng.prompt_ids, msgs, think)
        except Exception as e:  # noqa: BLE001 — a template refusing the conversation is the user's to fix
            raise UserError(f"the chat template rejects these messages: {e}") from None
        params = GenParams(max_new_tokens=ask.max_tokens, temperature=ask.temperature)
        job = Job(prompt, params, 1, adapter, None, asyncio.get_running_loop(), stream=True)
        eng.submit(job, bounded=False)
        prompt_text = eng.tok.decode(prompt[-16:])
        split = ThinkSplitter(prompt_text.rstrip().endswith("<think>"))

        async def events():
            try:
                while True:
                    ev = await job.events.get()
                    if ev.finish == "error":
                        yield _sse({"error": ev.text.splitlines()[0] if ev.text else "generation failed"})
                        return
                    r, c = split.feed(ev.text, final=ev.finish is not None)
                    if r:
                        yield _sse({"reasoning": r})
                    if c:
                        yield _sse({"content": c})
                    if ev.finish:
                        yield _sse({"done": ev.finish, "tokens": ev.tokens})
                        return
            finally:
                job.cancel()

        return events()
