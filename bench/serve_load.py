"""Load test for ``tunesmith serve``: N concurrent streaming clients (the official async openai client)
against the same N requests sent one at a time; prints requests/s, tokens/s, p50/p95 time to first token
and the batching gain.

    .venv/bin/python bench/serve_load.py [--model smollm2-135m-instruct] [--clients 64] [--max_tokens 32]

Starts the server as a subprocess (``tunesmith serve``) on a free port unless ``--url`` names one.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import openai


async def one(client, model: str, i: int, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    ttft, usage = None, None
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"Write two sentences about the number {i}."}],
        temperature=0, max_tokens=max_tokens, stream=True, stream_options={"include_usage": True})
    async for ch in stream:
        if ttft is None and ch.choices and ch.choices[0].delta.content:
            ttft = time.perf_counter() - t0
        if ch.usage:
            usage = ch.usage
    return {"ttft": ttft, "total": time.perf_counter() - t0, "tokens": usage.completion_tokens}


async def run(url: str, model: str, n: int, max_tokens: int, concurrent: bool) -> dict:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    t0 = time.perf_counter()
    if concurrent:
        results = await asyncio.gather(*(one(client, model, i, max_tokens) for i in range(n)), return_exceptions=True)
    else:
        results = []
        for i in range(n):
            try:
                results.append(await one(client, model, i, max_tokens))
            except Exception as e:  # noqa: BLE001 — counted as an error, reported below
                results.append(e)
    wall = time.perf_counter() - t0
    ok = [r for r in results if isinstance(r, dict)]
    ttfts = sorted(r["ttft"] for r in ok if r["ttft"] is not None)
    toks = sum(r["tokens"] for r in ok)
    q = statistics.quantiles(ttfts, n=20) if len(ttfts) > 1 else ttfts * 19
    return {"mode": "concurrent" if concurrent else "one at a time", "requests": n,
            "errors": len(results) - len(ok), "wall_s": round(wall, 2), "req_per_s": round(len(ok) / wall, 3),
            "tok_per_s": round(toks / wall, 1), "completion_tokens": toks,
            "ttft_p50_s": round(statistics.median(ttfts), 3), "ttft_p95_s": round(q[18], 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--max_tokens", type=int, default=32)
    ap.add_argument("--url", help="an already running server (else one is started)")
    args = ap.parse_args()
    proc = None
    url, name = args.url, args.model
    if url is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "serve", args.model, "--port", str(port),
                                 "--max_batch", str(args.clients), "--served_name", "bench"],
                                stdout=subprocess.PIPE, text=True, env={**os.environ})
        line = proc.stdout.readline()
        if not line.startswith("serving"):
            print("server did not start", file=sys.stderr)
            return 1
        url, name = f"http://127.0.0.1:{port}", "bench"
    try:
        asyncio.run(run(url, name, 4, args.max_tokens, True))  # warm-up
        conc = asyncio.run(run(url, name, args.clients, args.max_tokens, True))
        seq = asyncio.run(run(url, name, args.clients, args.max_tokens, False))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    for r in (conc, seq):
        print(json.dumps(r))
    print(json.dumps({"batching_gain_req_per_s": round(conc["req_per_s"] / seq["req_per_s"], 2),
                      "batching_gain_tok_per_s": round(conc["tok_per_s"] / seq["tok_per_s"], 2)}))
    return 0 if conc["errors"] == 0 and seq["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
