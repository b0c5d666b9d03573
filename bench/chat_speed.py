"""Chat speed on this machine: single-stream streamed generation through the one engine
(what `tunesmith chat` does), tokens/s and time to first token, plus batched throughput
(what `predict`, replay and eval do).

Usage: python bench/chat_speed.py [--model smollm2-135m-instruct] [--tokens 128]
"""
from __future__ import annotations

import argparse
import json
import time

PROMPTS = ["Explain why the sky is blue.", "Write a short story about a lighthouse keeper.",
           "Give three tips for learning a new language."]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--dtype", default=None)
    args = ap.parse_args()
    import torch

    from tunesmith.infer import Engine, GenParams

    t0 = time.time()
    engine = Engine.load(args.model, dtype=args.dtype)
    load_s = time.time() - t0
    params = GenParams(max_new_tokens=args.tokens)
    rates, firsts = [], []
    for p in PROMPTS:
        msgs = [{"role": "user", "content": p}]
        t = time.time()
        first, text = None, ""
        for piece in engine.stream(msgs, params):
            if first is None:
                first = time.time() - t
            text += piece
        n = len(engine.tok(text, add_special_tokens=False)["input_ids"])
        rates.append(n / (time.time() - t))
        firsts.append(first or 0.0)
    batch = [[{"role": "user", "content": f"{p} (variant {i})"}] for i in range(11) for p in PROMPTS][:32]
    t = time.time()
    outs = engine.generate(batch, GenParams(max_new_tokens=64))
    batch_rate = sum(len(engine.tok(o, add_special_tokens=False)["input_ids"]) for o in outs) / (time.time() - t)
    print(json.dumps({"model": args.model, "threads": torch.get_num_threads(), "load_s": round(load_s, 1),
                      "chat_tok_s": round(sum(rates) / len(rates), 1),
                      "first_token_s": round(sum(firsts) / len(firsts), 2),
                      "batch32_tok_s": round(batch_rate, 1)}))


if __name__ == "__main__":
    main()
