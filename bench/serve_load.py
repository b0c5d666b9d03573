"""Load test for ``tunesmith serve``: N concurrent streaming clients (the official async openai client)
against the same N requests sent one at a time; prints requests/s, tokens/s, p50/p95 time to first token
and the batching gain.

    .venv/bin/python bench/serve_load.py [--model smollm2-135m-instruct] [--clients 64] [--max_tokens 32]

With ``--peer``: the same model side by side with llama.cpp's own OpenAI server (llama-cpp-python's
``llama_cpp.server``, which needs ``pip install 'llama-cpp-python[server]==0.3.36'``) on the GGUF files
``tunesmith export gguf`` writes (f16 and q8_0, made once under bench/.cache/), at 1, 16 and 64
concurrent streaming clients (``--clients 1,16,64``): requests/s, tokens/s, TTFT p50/p95 and errors per
server, one server at a time on the same CPU, as a markdown table.

Starts each server as a subprocess on a free port unless ``--url`` names one (tunesmith only).
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
from pathlib import Path

import openai


_TOK = {}


def count_tokens(text: str) -> int:
    """Completion tokens counted one way for every server (llama.cpp's streams carry no usage): the
    embedded model's tokenizer on the streamed text."""
    if "tok" not in _TOK:
        from tunesmith.models import load_tokenizer, resolve_model

        _TOK["tok"] = load_tokenizer(resolve_model("smollm2-135m-instruct"))
    return len(_TOK["tok"](text, add_special_tokens=False)["input_ids"])


async def one(client, model: str, i: int, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    ttft, parts = None, []
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"Write two sentences about the number {i}."}],
        temperature=0, max_tokens=max_tokens, stream=True)
    async for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            ttft = ttft if ttft is not None else time.perf_counter() - t0
            parts.append(ch.choices[0].delta.content)
    return {"ttft": ttft, "total": time.perf_counter() - t0, "tokens": count_tokens("".join(parts))}


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
    await client.close()
    ok = [r for r in results if isinstance(r, dict)]
    failed = [r for r in results if not isinstance(r, dict)]
    if failed:
        print(f"{len(failed)} requests failed, first: {failed[0]!r:.300}", file=sys.stderr)
    if not ok:
        return {"mode": "concurrent" if concurrent else "one at a time", "requests": n, "errors": n,
                "wall_s": round(wall, 2), "req_per_s": 0, "tok_per_s": 0, "completion_tokens": 0,
                "ttft_p50_s": None, "ttft_p95_s": None}
    ttfts = sorted(r["ttft"] for r in ok if r["ttft"] is not None)
    toks = sum(r["tokens"] for r in ok)
    q = statistics.quantiles(ttfts, n=20) if len(ttfts) > 1 else ttfts * 19
    return {"mode": "concurrent" if concurrent else "one at a time", "requests": n,
            "errors": len(results) - len(ok), "wall_s": round(wall, 2), "req_per_s": round(len(ok) / wall, 3),
            "tok_per_s": round(toks / wall, 1), "completion_tokens": toks,
            "ttft_p50_s": round(statistics.median(ttfts), 3), "ttft_p95_s": round(q[18], 3)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, seconds: float = 300) -> bool:
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < seconds:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=5):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def start_tunesmith(model: str, max_batch: int) -> tuple[subprocess.Popen, str, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "serve", model, "--port", str(port),
                             "--max_batch", str(max_batch), "--max_n", str(min(8, max_batch)),
                             "--max_queue", str(max(256, max_batch)),
                             "--served_name", "bench"], stdout=subprocess.DEVNULL, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    if not _wait_http(url, proc):
        raise SystemExit("tunesmith serve did not start")
    return proc, url, "bench"


# llama.cpp's server, started with its own entry point; two things set for this machine, both said in
# docs/benchmarks.md: requests queue rather than interrupt each other (the server's default
# interrupt_requests cuts a running stream short when the next request comes), and weights are loaded
# without llama.cpp's extra CPU buffer types (its AMX repack path of this build segfaults on quantized
# multi-token batches on this VM, as tests/export/test_gguf.py notes; the server has no flag for it).
LLAMACPP = """
import sys
from llama_cpp.server.__main__ import main
from tunesmith.infer.gguf import no_extra_buffer_types
sys.argv = ["llama_cpp.server"] + sys.argv[1:]
with no_extra_buffer_types():
    main()
"""


def start_llamacpp(gguf: str, threads: int) -> tuple[subprocess.Popen, str, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", LLAMACPP, "--model", gguf, "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads),
                             "--n_threads_batch", str(threads), "--interrupt_requests", "False",
                             "--model_alias", "bench"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    if not _wait_http(url, proc):
        raise SystemExit("llama_cpp.server did not start: pip install 'llama-cpp-python[server]==0.3.36'")
    return proc, url, "bench"


def export_gguf(model: str) -> dict[str, str]:
    """The model's f16 and q8_0 GGUF files, exported once by ``tunesmith export gguf``."""
    out = Path(__file__).resolve().parent / ".cache" / f"gguf-{Path(model).name}"
    files = {q: str(out / f"model-{q}.gguf") for q in ("f16", "q8_0")}
    if not all(Path(f).is_file() for f in files.values()):
        subprocess.run([sys.executable, "-m", "tunesmith.cli", "export", "gguf", "--model", model, "--out", str(out),
                        "--quant", "f16,q8_0", "--overwrite"], check=True)
    return files


def side_by_side(args) -> int:
    clients = [int(c) for c in args.clients.split(",")]
    files = export_gguf(args.model)
    threads = os.cpu_count() or 2
    servers = [("tunesmith serve (HF weights)", lambda: start_tunesmith(args.model, max(clients))),
               ("llama.cpp server, f16", lambda: start_llamacpp(files["f16"], threads)),
               ("llama.cpp server, q8_0", lambda: start_llamacpp(files["q8_0"], threads))]
    rows, bad = [], 0
    for label, start in servers:
        proc, url, name = start()
        try:
            asyncio.run(run(url, name, 2, args.max_tokens, True))  # warm-up
            for n in clients:
                r = asyncio.run(run(url, name, n, args.max_tokens, True))
                r["server"], r["clients"] = label, n
                bad += r["errors"]
                print(json.dumps(r), flush=True)
                rows.append(r)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print("\n| server | clients | requests/s | tokens/s | TTFT p50 s | TTFT p95 s | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['clients']} | {r['req_per_s']} | {r['tok_per_s']} | {r['ttft_p50_s']} | "
              f"{r['ttft_p95_s']} | {r['errors']} |")
    return 0 if bad == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--clients", default="64", help="one count, or a comma list with --peer (e.g. 1,16,64)")
    ap.add_argument("--max_tokens", type=int, default=32)
    ap.add_argument("--url", help="an already running tunesmith server (else one is started)")
    ap.add_argument("--peer", action="store_true", help="side by side with llama.cpp's server on the same GGUF")
    args = ap.parse_args()
    if args.peer:
        return side_by_side(args)
    n = int(args.clients)
    proc = None
    url, name = args.url, args.model
    if url is None:
        proc, url, name = start_tunesmith(args.model, n)
    try:
        asyncio.run(run(url, name, 4, args.max_tokens, True))  # warm-up
        conc = asyncio.run(run(url, name, n, args.max_tokens, True))
        seq = asyncio.run(run(url, name, n, args.max_tokens, False))
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
