"""``tunesmith ui``: a local web app over the verbs — data check, recipe forms built from the verbs' schemas,
runs (each a ``tunesmith`` subprocess, state on disk), reports, side-by-side chat and export.

FastAPI pages with static HTML/JS/CSS (no build step, nothing fetched from elsewhere); docs/ui.md says why
this stack and not gradio. Bound to 127.0.0.1 unless told otherwise; every request needs the token printed
in the URL (kept as an HttpOnly cookie after the first visit) or the API key from the environment.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import Field

from ..config import EnvName, Section
from ..errors import UserError


class UiConfig(Section):
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 exposes the app (and your files) to the "
                                               "network")
    port: int = Field(7860, ge=0, le=65535, description="TCP port (0 = any free port)")
    workspace: str = Field(".", description="folder the app works in: runs, uploads, saved recipes and its job "
                                            "state (.tunesmith-ui/); it writes nowhere else")
    api_key_env: EnvName = Field("TUNESMITH_API_KEY", description="environment variable holding a key to use instead "
                             "of a random token (keys never go in files or argv)")
    model: str = Field("smollm2-135m-instruct", description="model the data preview and chat start with")

    def token(self) -> str:
        """The key from the environment, else a fresh random token (printed in the URL)."""
        return os.environ.get(self.api_key_env) or secrets.token_urlsafe(18)


def build(cfg: UiConfig, token: str | None = None):
    """``(app, state)``; tests call this to drive the app in-process."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("tunesmith ui needs FastAPI and uvicorn: pip install 'tunesmith[serve]'") from None
    from .app import State, build_app

    root = Path(cfg.workspace).expanduser()
    if not root.is_dir():
        raise UserError(f"workspace: {cfg.workspace} is not a folder")
    st = State(root.resolve(), token or cfg.token(), cfg.model)
    return build_app(st), st


def ui(cfg: UiConfig) -> int:
    from ..serve import _bind  # bind before anything loads: a busy port is one line at once

    sock = _bind(cfg.host, cfg.port)
    try:
        app, st = build(cfg)
    except BaseException:
        sock.close()
        raise
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3))
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    port = sock.getsockname()[1]
    orig = server.startup

    async def startup(sockets=None):  # print once listening, so the URL works the moment it appears
        await orig(sockets)
        shown = f"${cfg.api_key_env}" if os.environ.get(cfg.api_key_env) else st.token
        print(f"tunesmith ui at http://{host}:{port}/?token={shown}  (workspace {st.root}; Ctrl-C stops; "
              "jobs keep running)", flush=True)

    server.startup = startup
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        st.close()
        sock.close()
    print("stopped", flush=True)
    return 0
