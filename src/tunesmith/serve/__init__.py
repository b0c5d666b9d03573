"""``tunesmith serve``: an OpenAI-compatible server (FastAPI + uvicorn) over the engine's continuous batching,
with a chat page."""
from __future__ import annotations

import os

from pydantic import Field

from ..config import AdaptedModelSection, EnvName
from ..errors import UserError


class ServeConfig(AdaptedModelSection):
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 exposes the server to the network")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port)")
    served_name: str | None = Field(None, description="model id clients send and /v1/models lists (default: MODEL's name)")
    api_key_env: EnvName = Field("TUNESMITH_API_KEY", description="environment variable holding the API key; when it is "
                             "set, /v1/* requests need 'Authorization: Bearer KEY' (keys never go in files or argv)")
    max_batch: int = Field(32, ge=1, description="most sequences decoded together")
    prefill_rows: int = Field(8, ge=1, description="most new prompts prefilled in one step (a request's n answers share one; smaller: running "
                              "answers stall less when many requests arrive at once)")
    max_queue: int = Field(256, ge=1, description="most sequences waiting; beyond that a request gets 503")
    queue_timeout: float = Field(60.0, gt=0, description="seconds a request may wait for a slot before a 503 with Retry-After")
    max_tokens: int = Field(512, ge=1, description="completion tokens when a chat request does not say")
    max_n: int = Field(8, ge=1, description="largest n (choices per request) accepted")
    max_model_len: int | None = Field(None, ge=1, description="cap on prompt + completion tokens (default: the model's)")
    max_request_mb: float = Field(8.0, gt=0, description="largest request body in MiB; a larger one gets 413")
    cuda_graphs: bool = Field(False, description="on a GPU, decode fixed batches as one CUDA graph a step (faster "
                              "steps; a request that arrives mid-batch waits for the batch to end instead of joining it)")
    named_adapters: dict[str, str] = Field(default_factory=dict, description="adapters a request picks by its "
                                           "'model' field, e.g. {mira: runs/identity-…}: each trained on MODEL (+ "
                                           "adapter), all served beside MODEL from one copy of it")

    @property
    def resolved_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None


def build(cfg: ServeConfig, engine=None):
    """``(app, engine, cfg)``; tests call this to serve in-process."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("tunesmith serve needs FastAPI and uvicorn: pip install 'tunesmith[serve]'") from None
    from ..infer.engine import Engine
    from .app import State, build_app

    if cfg.max_n > cfg.max_batch:
        raise UserError(f"max_n ({cfg.max_n}) must not exceed max_batch ({cfg.max_batch})")
    if cfg.served_name is None:
        cfg = cfg.model_copy(update={"served_name": os.path.basename(os.path.normpath(cfg.model)) or cfg.model})
    if cfg.served_name in cfg.named_adapters:
        raise UserError(f"named_adapters: '{cfg.served_name}' is the served model's own name; name the adapter "
                        "otherwise (or set --served_name)")
    engine = engine or Engine.load(cfg.model, cfg.adapter, cfg.dtype, cfg.device, cfg.trust_remote_code,
                                   named_adapters=cfg.named_adapters, max_batch=cfg.max_batch,
                                   max_queue=cfg.max_queue, prefill_rows=cfg.prefill_rows,
                                   graphs=None if cfg.cuda_graphs else False)
    return build_app(State(engine, cfg)), engine, cfg


def _bind(host: str, port: int):
    """Bind before loading the model: a busy port is one line at once, not a traceback after the load."""
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"could not listen on {host}:{port}: {e.strerror} (pick another --port or --host)") from None
    return sock


def serve(cfg: ServeConfig) -> int:
    sock = _bind(cfg.host, cfg.port)
    try:
        app, engine, cfg = build(cfg)
    except BaseException:
        sock.close()
        raise
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    port = sock.getsockname()[1]

    # Print once the server is listening, so the printed curl line works the moment it appears.
    orig = server.startup

    async def startup(sockets=None):
        await orig(sockets)
        url = f"http://{host}:{port}"
        auth = f' -H "Authorization: Bearer ${cfg.api_key_env}"' if cfg.resolved_key else ""
        print(f"serving {cfg.served_name} at {url}  (chat page: {url}/ ; Ctrl-C stops)", flush=True)
        print(f"curl {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} -d "
              f"'{{\"model\": \"{cfg.served_name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'",
              flush=True)

    server.startup = startup
    try:
        server.run(sockets=[sock])  # uvicorn handles SIGINT/SIGTERM: stops accepting, lets open answers end
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; for a server that is the normal end
        pass
    finally:
        engine.stop()
        sock.close()
    print("stopped", flush=True)
    return 0
