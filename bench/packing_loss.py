"""Loss curves of packed vs padded training on the same rows (issue 18): the figure in docs.

    python bench/packing_loss.py [--steps 40] [--out docs/packing_loss.png]

Trains a small random-weight Llama (the embedded model's tokenizer, 4 layers, width 128) twice
with `tunesmith train`'s own loop on the same 320 rows of alpaca-like lengths (the generator of
bench/train_throughput.py), once with packing and once with padded rows — LoRA dropout 0 so
the two runs draw no different random numbers — and plots both curves with their largest
difference. CPU, fp32: a couple of minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import tokenizer_dir, write_alpaca_like  # noqa: E402


def build(root: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir(None))
    cfg = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root / "model"


def train(model: Path, data: Path, out: Path, packing: bool, steps: int) -> list[float]:
    from tunesmith.data.config import DataConfig, DatasetConfig
    from tunesmith.train.config import LoopSettings, LoraSettings, TrainConfig
    from tunesmith.train.loop import finish, fit, setup

    cfg = TrainConfig(model=str(model), output_dir=str(out), progress=False, dtype="fp32", device="cpu",
                      lora=LoraSettings(r=16, alpha=32, dropout=0.0),
                      data=DataConfig(datasets=[DatasetConfig(path=str(data))], cutoff_len=512, val_size=0),
                      train=LoopSettings(max_steps=steps, batch_size=8, lr=2e-3, warmup=0, packing=packing,
                                         group_by_length=False))  # mixed lengths in a batch: packing has work
    run = setup(cfg)
    parts = [p for s in range(steps) for p in run.plan.step(s)[1]]
    batches = [run.objective.collate([run.train_rows[i] for i in p], 0) for p in parts]
    shape = sum(b["input_ids"].numel() for b in batches)
    print(json.dumps({"packing": packing, "packed_micro_batches": sum("segments" in b for b in batches),
                      "micro_batches": len(batches), "tensor_tokens": shape}))
    fit(run)
    finish(run)
    return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default="docs/packing_loss.png")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build(root)
        data = write_alpaca_like(root / "rows.jsonl", 320)
        packed = train(model, data, root / "packed", True, args.steps)
        padded = train(model, data, root / "padded", False, args.steps)
    diff = max(abs(a - b) for a, b in zip(packed, padded))
    print(json.dumps({"steps": len(packed), "first": [packed[0], padded[0]], "last": [packed[-1], padded[-1]],
                      "max_abs_diff": diff}))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(padded) + 1), padded, label="padded rows", linewidth=3, alpha=0.5)
    ax.plot(range(1, len(packed) + 1), packed, label="packed rows", linestyle="--")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"packed vs padded, same rows (max |Δ| = {diff:.1e})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)


if __name__ == "__main__":
    main()
