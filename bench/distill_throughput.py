"""Teacher-client throughput: a fake OpenAI-compatible teacher with a fixed 0.5 s latency
(``asyncio.sleep`` in its handler, in its own process), driven through the real synth path
(AsyncOpenAI, semaphore, journal with fsync per line). Goal: concurrency 50 reaches ≥ 90 % of
50 / 0.5 s = 100 requests/s.

    .venv/bin/python bench/distill_throughput.py [--requests 1500] [--concurrency 50]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import tempfile
import time

LATENCY = 0.5


def serve(port: int) -> None:
    import asyncio

    import json

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    # A bare Starlette route and a prebuilt reply: the fake's own cost per request stays far below
    # the client's, so the figure measures tunesmith's client, not the fake.
    reply = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()

    async def chat(request):
        await request.body()
        await asyncio.sleep(LATENCY)
        return Response(reply, media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def measure(url: str, n: int, concurrency: int, tag: str) -> float:
    from tunesmith.synth.runner import Item, Outputs, item_key, run_items
    from tunesmith.synth.teacher import TeacherConfig

    cfg = TeacherConfig(base_url=url, model="fake", concurrency=concurrency, max_retries=0, timeout=30)
    items = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"{tag} prompt {i}"}]
        items.append(Item(item_key(msgs, cfg), msgs))
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        run_items(items, cfg, Outputs(f"{d}/out"), "bench", tag)
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--sequential", type=int, default=10, help="requests for the concurrency-1 figure")
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = mp.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):  # wait for the server
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        measure(url, 50, a.concurrency, "warmup")
        seq = measure(url, a.sequential, 1, "sequential")
        conc = measure(url, a.requests, a.concurrency, "concurrent")
    finally:
        proc.terminate()
    ideal = a.concurrency / LATENCY
    print(f"sequential (concurrency 1): {seq:.2f} req/s (ideal {1 / LATENCY:.1f})")
    print(f"concurrency {a.concurrency}: {conc:.1f} req/s = {conc / ideal:.0%} of the ideal {ideal:.0f} req/s "
          f"({conc / seq:.0f}x sequential)")


if __name__ == "__main__":
    main()
