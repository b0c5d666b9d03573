"""The FastAPI app: OpenAI-shaped routes over the engine's job API; every client mistake is a 4xx with an
OpenAI-shaped error body (``{"error": {"message", "type", "param", "code"}}``), never a 500."""
from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..infer import GenParams, Job, QueueFull
from ..infer.context import ContextExceeded, model_context, room_for_answer
from ..infer.think import ThinkSplitter
from .tools import ChoiceCalls, ToolPlan, answer_constraint, plan, probe, prompt_ids, template_messages
from .protocol import ChatRequest, CompletionRequest, Refused, explain, refuse_unhonoured

PAGE = Path(__file__).with_name("page") / "index.html"


def error(status: int, message: str, param: str | None = None, code: str | None = None,
          headers: dict | None = None) -> JSONResponse:
    kind = {401: "authentication_error", 404: "not_found_error", 503: "server_busy"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


class BodyLimit:
    """A request body over ``limit`` bytes is a 413, said before it is read whole (Content-Length) or as
    soon as the streamed body passes the limit (chunked uploads)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = error(413, f"request body over {self.limit} bytes (serve --max_request_mb)", code="too_large")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await too_big(scope, receive, send)
        seen, refused = 0, False

        async def counted():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # answer now; the app sees the client gone and its reply is dropped
                    refused = True
                    await too_big(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message):
            if not refused:
                await send(message)

        await self.app(scope, counted, guarded)


class State:
    """What the routes share: the engine (its tokenizer, its job API) and the serving limits."""

    def __init__(self, engine, cfg):
        self.engine, self.tok, self.cfg = engine, engine.tok, cfg
        self.context = model_context(engine.model, cfg.max_model_len)
        from ..models.template import supports_thinking

        self.thinking = supports_thinking(self.tok)
        self.tools = probe(self.tok)  # does the template render tools, and how it writes a call
        self.created = int(time.time())


def _budget(st: State, prompt: list[int], asked: int | None, default: int) -> int:
    """Completion tokens for this request; the check is predict's too (infer/context.py)."""
    try:
        room = room_for_answer(len(prompt), st.context, asked, "max_tokens")
    except ContextExceeded as e:
        raise Refused("messages" if e.prompt_alone else "max_tokens", str(e), "context_length_exceeded") from None
    return asked if asked is not None else default if room is None else min(default, room)


async def _admit(st: State, job: Job) -> JSONResponse | None:
    """Queue the job and wait until it is being generated; a full queue or a long wait is a 503."""
    retry = {"Retry-After": str(max(1, int(st.cfg.queue_timeout)))}
    try:
        st.engine.submit(job)
    except QueueFull:
        return error(503, "the server is busy: too many requests waiting", code="queue_full", headers=retry)
    try:
        await asyncio.wait_for(job.started.wait(), timeout=st.cfg.queue_timeout)
    except asyncio.TimeoutError:
        job.cancel()
        return error(503, f"the server is busy: waited {st.cfg.queue_timeout:g} s for a slot", code="queue_timeout",
                     headers=retry)
    return None


def _sampling(req, max_new: int) -> GenParams:
    """The request's sampling, as the engine takes it (protocol.py checked the ranges)."""
    return GenParams(max_new_tokens=max_new, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                     seed=req.seed, stop=req.stops())


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def build_app(st: State) -> FastAPI:
    app = FastAPI(title="tunesmith", docs_url=None, redoc_url=None, openapi_url=None)
    name = st.cfg.served_name

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        e, loc, text = explain(list(exc.errors()) or [{"loc": (), "msg": "invalid request"}])
        param = ".".join(str(x) for x in loc) or None
        if e.get("type") == "json_invalid":
            return error(400, f"the body is not valid JSON: {e.get('ctx', {}).get('error', e['msg'])}",
                         code="invalid_json")
        if e.get("type") == "extra_forbidden":
            return error(400, f"unsupported field '{param}'", param=param, code="unsupported_parameter")
        if not loc and e.get("type") in ("model_attributes_type", "dict_type"):
            return error(400, "the body must be a JSON object (sent with Content-Type: application/json)",
                         code="invalid_type")
        return error(400, text, param=param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused):
        return error(exc.status, str(exc), param=exc.param, code=exc.code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    app.add_middleware(BodyLimit, limit=int(st.cfg.max_request_mb * 2**20))

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        key = st.cfg.resolved_key
        if key and request.url.path.startswith("/v1/"):
            got = request.headers.get("authorization", "")
            if not secrets.compare_digest(got.encode(), f"Bearer {key}".encode()):
                return error(401, "missing or wrong API key (Authorization: Bearer KEY)", code="invalid_api_key")
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/")
    async def page():
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": m, "object": "model", "created": st.created,
                                            "owned_by": "tunesmith", "max_model_len": st.context,
                                            "thinking": st.thinking} for m in (name, *st.engine.adapters)]}

    def check_model(req) -> str | None:
        """The adapter the request's ``model`` names (None: the served model itself)."""
        if req.model == name:
            return None
        if req.model in st.engine.adapters:
            return req.model
        served = "', '".join((name, *st.engine.adapters))
        raise Refused("model", f"model '{req.model}' is not served here (this server serves '{served}')",
                      "model_not_found", 404)

    def prepare_chat(req: ChatRequest, tp: ToolPlan):
        """Render and tokenize the conversation and build its grammar: CPU work, run off the event loop."""
        think = (req.chat_template_kwargs or {}).get("enable_thinking")
        msgs = template_messages(req)
        try:
            prompt = prompt_ids(st.tok, msgs, tp.offered, think)
            prompt_text = st.tok.decode(prompt[-32:])
        except Exception as e:  # noqa: BLE001 — a template that rejects the conversation (roles, order)
            raise Refused("messages", f"the chat template rejects these messages: {e}", "invalid_value") from None
        constraint = answer_constraint(st.tok, req, tp, st.tools.fmt, prompt_text)  # structured output, forced calls
        if constraint is not None and prompt_text.rstrip().endswith("<think>"):
            raise Refused("chat_template_kwargs.enable_thinking", "response_format and forced tool calls need "
                          "enable_thinking: false on this model (its template opens a think block)", "invalid_value")
        return prompt, prompt_text, constraint

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        adapter = check_model(req)
        refuse_unhonoured(req, thinking=st.thinking, max_n=st.cfg.max_n, structured=True)
        tp = plan(req, st.tools)
        prompt, prompt_text, constraint = await asyncio.to_thread(prepare_chat, req, tp)
        asked = req.max_completion_tokens or req.max_tokens
        params = _sampling(req, _budget(st, prompt, asked, st.cfg.max_tokens)).with_constraint(constraint)
        job = Job(prompt, params, req.n, adapter, (req.top_logprobs or 0) if req.logprobs else None,
                  asyncio.get_running_loop(), stream=req.stream)
        if (busy := await _admit(st, job)) is not None:
            return busy
        # A template that opens the think block itself (the prompt ends in "<think>") starts in reasoning.
        opened = prompt_text.rstrip().endswith("<think>")
        return await _chat_answer(st, req, job, opened, request, tp)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        adapter = check_model(req)
        refuse_unhonoured(req, thinking=st.thinking, max_n=st.cfg.max_n)
        p = req.prompt
        if isinstance(p, list) and len(p) != 1 and not all(isinstance(x, int) for x in p):
            raise Refused("prompt", "one prompt per request (a string or a list of token ids)")
        p = p[0] if isinstance(p, list) and p and not isinstance(p[0], int) else p
        prompt = list(p) if isinstance(p, list) else (await asyncio.to_thread(st.tok, p))["input_ids"]
        if not prompt:
            raise Refused("prompt", "the prompt is empty", "invalid_value")
        if any(t < 0 or t >= len(st.tok) for t in prompt):
            raise Refused("prompt", f"token ids must be in [0, {len(st.tok)})", "invalid_value")
        params = _sampling(req, _budget(st, prompt, req.max_tokens, 16))
        job = Job(prompt, params, req.n, adapter, req.logprobs, asyncio.get_running_loop(), stream=req.stream)
        if (busy := await _admit(st, job)) is not None:
            return busy
        return await _completion_answer(st, req, job)

    return app


def _usage(prompt: list[int], done: dict[int, int]) -> dict:
    c = sum(done.values())
    return {"prompt_tokens": len(prompt), "completion_tokens": c, "total_tokens": len(prompt) + c}


async def _events(job: Job):
    """Every event of the job until all its rows finished; abandoning the iterator cancels the job."""
    left = job.n
    try:
        while left:
            ev = await job.events.get()
            if ev.finish == "error":
                raise RuntimeError(ev.text)
            left -= ev.finish is not None
            yield ev
    finally:
        job.cancel()  # client gone or answer complete: the engine drops any row still running


async def _chat_answer(st: State, req: ChatRequest, job: Job, opened: bool, request: Request, tp: ToolPlan):
    cid, created, name = f"chatcmpl-{secrets.token_hex(12)}", int(time.time()), st.cfg.served_name
    split = [ThinkSplitter(opened) for _ in range(req.n)]
    calls = [ChoiceCalls(tp, st.tools.fmt) for _ in range(req.n)]  # tool calls parsed out of the content
    done: dict[int, int] = {}

    def lps(ev) -> list[dict]:
        return [logprob_entry(st.tok, x) for x in ev.logprobs]

    if not req.stream:
        text = [[] for _ in range(req.n)]
        reason = [[] for _ in range(req.n)]
        logp = [[] for _ in range(req.n)]
        finish: dict[int, str] = {}
        async for ev in _events(job):
            r, c = split[ev.index].feed(ev.text, final=ev.finish is not None)
            c, _ = calls[ev.index].feed(c, final=ev.finish is not None)
            reason[ev.index].append(r)
            text[ev.index].append(c)
            logp[ev.index] += lps(ev)
            if ev.finish:
                finish[ev.index], done[ev.index] = ev.finish, ev.tokens
        choices = []
        for i in range(req.n):
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(text[i])}
            if split[i].seen:
                msg["reasoning_content"] = msg["reasoning"] = "".join(reason[i])
            choices.append({"index": i, "message": calls[i].message(msg),
                            "finish_reason": calls[i].finish(finish[i]),
                            "logprobs": {"content": logp[i]} if req.logprobs else None})
        return {"id": cid, "object": "chat.completion", "created": created, "model": name, "choices": choices,
                "usage": _usage(job.prompt, done)}

    usage_on = bool(req.stream_options and req.stream_options.include_usage)

    def chunk(choices: list[dict]) -> bytes:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name, "choices": choices}
        if usage_on:
            body["usage"] = None
        return _sse(body)

    async def stream():
        try:
            async for piece in _chat_chunks():
                yield piece
        finally:  # the client went away mid-stream: free its rows now, not when the generator is collected
            job.cancel()

    async def _chat_chunks():
        for i in range(req.n):
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None}])
        async for ev in _events(job):
            r, c = split[ev.index].feed(ev.text, final=ev.finish is not None)
            c, call_deltas = calls[ev.index].feed(c, final=ev.finish is not None)
            delta: dict[str, Any] = {}
            if r:
                delta["reasoning_content"] = delta["reasoning"] = r
            if c:
                delta["content"] = c
            lp = {"content": lps(ev)} if req.logprobs and ev.logprobs else None
            if delta or lp:
                yield chunk([{"index": ev.index, "delta": delta, "logprobs": lp, "finish_reason": None}])
            for d in call_deltas:
                yield chunk([{"index": ev.index, "delta": d, "logprobs": None, "finish_reason": None}])
            if ev.finish:
                done[ev.index] = ev.tokens
                yield chunk([{"index": ev.index, "delta": {}, "logprobs": None,
                              "finish_reason": calls[ev.index].finish(ev.finish)}])
        if usage_on:
            yield _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                        "choices": [], "usage": _usage(job.prompt, done)})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def logprob_entry(tok, item: dict[str, Any]) -> dict:
    """OpenAI's chat ``logprobs.content`` item for one generated token (an engine logprob item)."""
    def one(tid: int, lp: float) -> dict:
        text = tok.decode([tid])
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    d = one(item["id"], item["logprob"])
    d["top_logprobs"] = [one(t, v) for t, v in item["top"]]
    return d


def _completion_lp(st: State, items: list[dict]) -> dict:
    toks = [st.tok.decode([x["id"]]) for x in items]
    return {"tokens": toks, "token_logprobs": [x["logprob"] for x in items],
            "top_logprobs": [{st.tok.decode([t]): v for t, v in x["top"]} for x in items], "text_offset": []}


async def _completion_answer(st: State, req: CompletionRequest, job: Job):
    cid, created, name = f"cmpl-{secrets.token_hex(12)}", int(time.time()), st.cfg.served_name
    done: dict[int, int] = {}
    want_lp = req.logprobs is not None
    if not req.stream:
        text = [[] for _ in range(req.n)]
        items = [[] for _ in range(req.n)]
        finish: dict[int, str] = {}
        async for ev in _events(job):
            text[ev.index].append(ev.text)
            items[ev.index] += ev.logprobs
            if ev.finish:
                finish[ev.index], done[ev.index] = ev.finish, ev.tokens
        choices = [{"index": i, "text": "".join(text[i]), "finish_reason": finish[i],
                    "logprobs": _completion_lp(st, items[i]) if want_lp else None} for i in range(req.n)]
        return {"id": cid, "object": "text_completion", "created": created, "model": name, "choices": choices,
                "usage": _usage(job.prompt, done)}

    usage_on = bool(req.stream_options and req.stream_options.include_usage)

    async def stream():
        try:
            async for piece in _completion_chunks():
                yield piece
        finally:  # the client went away mid-stream: free its rows now
            job.cancel()

    async def _completion_chunks():
        async for ev in _events(job):
            if ev.finish:
                done[ev.index] = ev.tokens
            if ev.text or ev.finish or (want_lp and ev.logprobs):
                body = {"id": cid, "object": "text_completion", "created": created, "model": name,
                        "choices": [{"index": ev.index, "text": ev.text, "finish_reason": ev.finish,
                                     "logprobs": _completion_lp(st, ev.logprobs) if want_lp else None}]}
                if usage_on:
                    body["usage"] = None
                yield _sse(body)
        if usage_on:
            yield _sse({"id": cid, "object": "text_completion", "created": created, "model": name, "choices": [],
                        "usage": _usage(job.prompt, done)})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
