"""Training throughput of `tunesmith train` (the real recipe: data rendering, batching,
loss, optimizer, logging) on random-weight models built from real Qwen2.5 configs.

Usage (CUDA): python bench/train_throughput.py --tokenizer DIR MODEL:SEQ:BSZ:GC[:lora|full] ...
  e.g. qwen2.5-0.5b:2048:8:0 qwen2.5-7b:2048:4:1   (GC=1: gradient checkpointing)
Prints one JSON line per run: tokens/s (steps after the first two), peak GPU memory.
Throughput does not depend on weight values, so random weights measure the real cost.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

# Public Qwen2.5 architecture facts (config.json of each model).
CONFIGS = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False),
}
WORDS = ("model data train answer token layer value system window memory kernel shape batch river stone cloud "
         "garden signal vector matrix planet market bridge engine letter number theory").split()


def build_model(name: str, tokenizer_dir: str, root: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    out = root / name
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    cfg = Qwen2Config(**CONFIGS[name], max_position_embeddings=32768)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def write_data(path: Path, rows: int, words: int) -> Path:
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(rows):
            answer = " ".join(rng.choice(WORDS) for _ in range(words))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"Write text {i}."},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    return path


def run(name: str, seq: int, bsz: int, gc: bool, method: str, tokenizer_dir: str, root: Path, steps: int) -> dict:
    import torch

    from tunesmith.data.config import DataConfig, DatasetConfig
    from tunesmith.train.config import LoopSettings, LoraSettings, TrainConfig
    from tunesmith.train.loop import fit, setup

    model_dir = build_model(name, tokenizer_dir, root)
    data = write_data(root / f"data-{seq}.jsonl", rows=bsz * (steps + 2), words=seq)  # every row > seq tokens
    out = root / f"run-{name}-{seq}-{bsz}-{int(gc)}-{method}-{time.time_ns()}"
    cfg = TrainConfig(model=str(model_dir), method=method, output_dir=str(out), progress=False,
                      lora=LoraSettings(r=16, alpha=32, dropout=0.0),
                      data=DataConfig(datasets=[DatasetConfig(path=str(data))], cutoff_len=seq, num_workers=8),
                      train=LoopSettings(max_steps=steps + 2, batch_size=bsz, gradient_checkpointing=gc, warmup=0,
                                         lr=1e-4, group_by_length=False))
    torch.cuda.reset_peak_memory_stats()
    fit(setup(cfg))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    tok_s = sum(r["tok_s"] for r in rows[2:]) / max(len(rows[2:]), 1)
    res = dict(model=name, seq=seq, bsz=bsz, gc=gc, method=method, tok_s=round(tok_s),
               peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1), final_loss=round(rows[-1]["loss"], 3))
    print(json.dumps(res), flush=True)
    torch.cuda.empty_cache()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan", nargs="+", help="MODEL:SEQ:BSZ:GC[:lora|full]")
    ap.add_argument("--tokenizer", required=True, help="folder with a tokenizer that has a chat template")
    ap.add_argument("--root", default="/tmp/tunesmith-bench")
    ap.add_argument("--steps", type=int, default=8, help="measured steps (after 2 warm-up steps)")
    args = ap.parse_args()
    import torch
    import transformers

    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                      "device": torch.cuda.get_device_name()}), flush=True)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for item in args.plan:
        parts = item.split(":")
        name, seq, bsz, gc = parts[0], int(parts[1]), int(parts[2]), parts[3] == "1"
        method = parts[4] if len(parts) > 4 else "lora"
        try:
            results.append(run(name, seq, bsz, gc, method, args.tokenizer, root, args.steps))
        except Exception as e:  # one failed size (e.g. out of memory) should not hide the others
            print(json.dumps(dict(model=name, seq=seq, bsz=bsz, gc=gc, error=str(e)[:300])), flush=True)
            torch.cuda.empty_cache()
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "train_throughput.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
