"""The UI's FastAPI app: static pages (``static/``: HTML, JS, CSS, no build step, nothing from elsewhere) and a
JSON API. Every request needs the token (``?token=`` once, then an HttpOnly cookie) or ``Authorization: Bearer``;
every mistake is a 4xx with one line (``{"error", "field"}``), never a traceback."""
from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserError
from .data import check as data_check_, fix_row, preview as data_preview_, row_text, upload
from .forms import catalog, check as form_check_, load_yaml
from .runs import export_info, list_runs, progress, report as run_report
from .chat import Ask, Chats, Pair
from .jobs import Jobs
from .workspace import Workspace

STATIC = Path(__file__).with_name("static")
COOKIE = "tunesmith_ui"


class State:
    def __init__(self, root: Path, token: str, model: str):
        self.ws = Workspace(root)
        self.root, self.token, self.model = self.ws.root, token, model
        self.jobs = Jobs(self.ws)
        self.chats = Chats(self.ws)
        self._catalog = None

    def catalog(self) -> list[dict]:
        if self._catalog is None:
            self._catalog = catalog()
        return self._catalog

    def close(self) -> None:
        self.chats.close()


class Form(BaseModel):
    values: dict[str, Any] = Field(default_factory=dict)


class Save(Form):
    path: str
    overwrite: bool = False


class Specs(BaseModel):
    specs: list[str]
    model: str | None = None
    cutoff_len: int | None = Field(None, gt=0)


class Preview(BaseModel):
    spec: str
    model: str
    n: int = Field(5, ge=1, le=50)


class Upload(BaseModel):
    name: str
    text: str


class Row(BaseModel):
    file: str
    row: int = Field(..., ge=1)
    text: str | None = None


class PathIn(BaseModel):
    path: str


def fail(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def build_app(st: State) -> FastAPI:
    app = FastAPI(title="tunesmith ui", docs_url=None, redoc_url=None, openapi_url=None)
    ws = st.ws

    @app.exception_handler(UserError)
    async def _user(request: Request, exc: UserError):
        return fail(400, str(exc), getattr(exc, "field", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        e = (list(exc.errors()) or [{"loc": (), "msg": "invalid request"}])[0]
        loc = ".".join(str(x) for x in e.get("loc", ())[1:]) or "body"
        return fail(400, f"{loc}: {e['msg']}", loc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return fail(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return fail(500, f"internal error: {type(exc).__name__}: {first}")

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        given = request.query_params.get("token")
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        cookie = request.cookies.get(COOKIE, "")
        good = any(x and secrets.compare_digest(x.encode(), st.token.encode()) for x in (given, bearer, cookie))
        if not good:
            msg = "missing or wrong token: open the URL `tunesmith ui` printed (…/?token=…)"
            if request.url.path.startswith("/api/"):
                return fail(401, msg)
            return PlainTextResponse(msg, status_code=401)
        response = await call_next(request)
        if given and cookie != st.token:  # later links and fetches need no token in the URL
            response.set_cookie(COOKIE, st.token, httponly=True, samesite="strict")
        return response

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}")
    async def static(name: str):
        p = STATIC / Path(name).name
        if not p.is_file():
            raise UserError(f"no file {name}")
        kind = {".js": "text/javascript", ".css": "text/css"}.get(p.suffix, "application/octet-stream")
        return FileResponse(p, media_type=kind)

    @app.get("/api/info")
    async def info():
        return {"workspace": str(st.root), "model": st.model}

    # ---- forms
    @app.get("/api/verbs")
    async def verbs():
        return await asyncio.to_thread(st.catalog)

    @app.post("/api/forms/{name}/check")
    async def form_check(name: str, body: Form):
        r = await asyncio.to_thread(form_check_, name, body.values)
        return {k: r[k] for k in ("argv", "cli", "yaml")}

    @app.post("/api/forms/{name}/save")
    async def form_save(name: str, body: Save):
        r = await asyncio.to_thread(form_check_, name, body.values)
        p = ws.write(body.path, r["yaml"], "path", body.overwrite)
        return {"path": ws.rel(p), "yaml": r["yaml"], "cli": r["cli"]}

    @app.post("/api/forms/{name}/load")
    async def form_load(name: str, body: PathIn):
        return await asyncio.to_thread(load_yaml, name, _read_path(body.path))

    @app.get("/api/recipes")
    async def recipes():
        found = [p for d in ("recipes", ".") for p in sorted((st.root / d).glob("*.y*ml"))]
        return [ws.rel(p) for p in found]

    # ---- jobs
    @app.get("/api/jobs")
    async def jobs():
        return [_job_view(j) for j in await asyncio.to_thread(st.jobs.all)]

    @app.post("/api/jobs/{name}")
    async def start(name: str, body: Form):
        return _job_view(await asyncio.to_thread(st.jobs.start, name, body.values))

    @app.get("/api/job/{jid}")
    async def job(jid: str):
        j = await asyncio.to_thread(st.jobs.get, jid)
        log = st.jobs.log_tail(j)
        run = ws.path(j["run"]) if j.get("run") else None
        return {**_job_view(j), "log": log, "progress": progress(run, log, j["status"])}

    @app.post("/api/job/{jid}/stop")
    async def stop(jid: str):
        return _job_view(st.jobs.stop(jid))

    @app.post("/api/job/{jid}/resume")
    async def resume(jid: str):
        return _job_view(await asyncio.to_thread(st.jobs.resume, jid))

    # ---- data
    @app.post("/api/data/check")
    async def data_check(body: Specs):
        return await asyncio.to_thread(data_check_, ws, body.specs, body.model, body.cutoff_len)

    @app.post("/api/data/preview")
    async def data_preview(body: Preview):
        return await asyncio.to_thread(data_preview_, ws, body.spec, body.model, body.n)

    @app.post("/api/data/upload")
    async def data_upload(body: Upload):
        return {"path": upload(ws, body.name, body.text)}

    @app.post("/api/data/row")
    async def data_row(body: Row):
        if body.text is None:
            return {"text": row_text(ws, body.file, body.row)}
        return {"path": fix_row(ws, body.file, body.row, body.text)}

    # ---- runs, evidence, export
    @app.get("/api/runs")
    async def run_list():
        return list_runs(ws)

    @app.get("/api/report")
    async def report(path: str):
        return await asyncio.to_thread(run_report, ws, path)

    @app.get("/api/export")
    async def export(path: str):
        return export_info(ws, path)

    @app.get("/api/file")
    async def file(path: str):
        p = ws.path(path, "file")
        if not p.is_file():
            raise UserError(f"no file {path}")
        return FileResponse(p, filename=p.name)

    # ---- chat
    @app.post("/api/chat/load")
    async def chat_load(body: Pair):
        return await asyncio.to_thread(st.chats.load, body)

    @app.post("/api/chat/stream")
    async def chat_stream(body: Ask):
        events = await st.chats.stream(body)
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def _read_path(given: str) -> str:
        p = Path(given).expanduser()
        return str(p if p.is_absolute() else st.root / p)

    return app


def _job_view(j: dict) -> dict:
    return {k: j.get(k) for k in ("id", "verb", "cli", "argv", "run", "status", "rc", "started", "finished",
                                  "attempts", "values")}
