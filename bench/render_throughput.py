"""Render throughput: N synthetic alpaca rows → input_ids + labels with the embedded
SmolLM2 tokenizer and its chat template, for each worker count asked for.

    .venv/bin/python bench/render_throughput.py --rows 100000 --workers 1 2

Rows are seeded and vary in length (a few words to a few hundred); the file is read
through the normal loader (timed apart), then ``render_many`` runs ``--repeat`` times per
worker count and the median is reported (shared CPUs make single runs noisy).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

WORDS = ("the model answers every question about data loading with care and a short example "
         "while tokens labels masks templates rows columns are checked before training starts").split()


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(int(rng.triangular(lo, hi, lo + (hi - lo) / 5))))

    rows = []
    for i in range(n):
        row = {"instruction": f"{i}. " + text(3, 60), "input": text(0, 40) if rng.random() < 0.3 else "",
               "output": text(5, 400)}
        if rng.random() < 0.1:
            row["system"] = text(5, 30)
        rows.append(row)
    return rows


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def parallel_speedup(n: int = 5_000_000) -> float:
    """What two processes buy on this machine: serial time of two CPU-bound jobs over their
    time in two processes (2.0 on two free cores)."""
    import multiprocessing

    t0 = time.perf_counter()
    _burn(n), _burn(n)
    serial = time.perf_counter() - t0
    with multiprocessing.get_context("fork").Pool(2) as pool:
        t0 = time.perf_counter()
        pool.map(_burn, [n, n])
        parallel = time.perf_counter() - t0
    return serial / parallel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--cutoff-len", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3, help="runs per worker count; the median is reported")
    ap.add_argument("--reference", action="store_true",
                    help="also time the plain way: apply_chat_template(tokenize=True) row by row (ids only, no labels)")
    args = ap.parse_args()

    from tunesmith.data import DatasetConfig, load_conversations, render_many
    from tunesmith.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model("smollm2-135m-instruct"))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows(args.rows)))
        t0 = time.perf_counter()
        convs, problems = load_conversations(DatasetConfig(path=str(path)))
        load_s = time.perf_counter() - t0
    assert not problems and len(convs) == args.rows
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"(two-process speedup on a CPU-bound job: {parallel_speedup():.2f}x); rows: {args.rows}; "
          f"batch size {args.batch_size}; cutoff_len {args.cutoff_len}")
    print(f"load + check: {load_s:.1f} s ({args.rows / load_s:,.0f} rows/s)")
    for workers in args.workers:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            rows, errors = render_many(convs, tok, args.cutoff_len, num_workers=workers, batch_size=args.batch_size)
            times.append(time.perf_counter() - t0)
        secs = statistics.median(times)
        kept = [r for r in rows if r is not None]
        tokens = sum(len(r["input_ids"]) for r in kept)
        runs = ", ".join(f"{t:.1f}" for t in times)
        print(f"render num_workers={workers}: median {secs:.1f} s of {args.repeat} ({runs}), "
              f"{args.rows / secs:,.0f} rows/s, {tokens / secs:,.0f} tokens/s "
              f"({tokens / len(kept):.0f} tokens/row, {len(errors)} errors)")
    if args.reference:
        from tunesmith.data import template_messages

        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for c in convs:
                msgs, kwargs = template_messages(c, tok)
                tok.apply_chat_template(msgs, tokenize=True, **kwargs)
            times.append(time.perf_counter() - t0)
        secs = statistics.median(times)
        print(f"reference, row-by-row apply_chat_template(tokenize=True), no labels: median {secs:.1f} s "
              f"({', '.join(f'{t:.1f}' for t in times)}), {args.rows / secs:,.0f} rows/s")


if __name__ == "__main__":
    main()
