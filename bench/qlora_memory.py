"""QLoRA vs bf16 LoRA on a random-weight Qwen2.5-7B config (CUDA only; a bench, not a test).

    python bench/qlora_memory.py --out $OUT/qlora.json            # memory + tokens/s, both methods
    python bench/qlora_memory.py --merge-check --out $OUT/merge.json

Default mode: the bf16 random model (hidden 3584, 28 layers, intermediate 18944, 28 heads,
4 kv heads, vocab 152064; ~15 GB) is written once with safetensors, then each method trains
N steps at seq 2048, batch 1 through `tunesmith train` (the real loop) in its own subprocess,
so each peak (torch.cuda.max_memory_allocated) is that method's alone. qlora quantizes the
bf16 weights to NF4 at load. One JSON line per method, then the ratio.

--merge-check: a tiny Qwen2 model (bf16, random) trains a few qlora steps; tunesmith's merge
puts the adapter onto the bf16 base; then max |Δlogit| of
  merged vs adapter on the bf16 base      (the merge itself; should be bf16 rounding),
  merged vs adapter on the 4-bit base     (what training saw; includes NF4's error on the base),
  adapter on the dequantized base vs adapter on the 4-bit base (4-bit matmul = dequantize + matmul).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import build_model, write_data  # noqa: E402


def _tokenizer_dir() -> str:
    """The embedded model's tokenizer (no download; its ids fit any larger vocab). On a machine
    without the embedded package, TUNESMITH_BENCH_TOKENIZER names a folder holding its files."""
    if os.environ.get("TUNESMITH_BENCH_TOKENIZER"):
        return os.environ["TUNESMITH_BENCH_TOKENIZER"]
    from tunesmith.models import resolve_model

    return str(resolve_model("smollm2-135m-instruct"))


def one(method: str, root: Path, steps: int, optim: str, gc: bool) -> dict:
    """One method in this process: N steps of tunesmith's loop, then its numbers."""
    import torch

    from tunesmith.data.config import DataConfig, DatasetConfig
    from tunesmith.train.config import LoopSettings, LoraSettings, TrainConfig
    from tunesmith.train.loop import fit, setup

    model_dir = build_model("qwen2.5-7b", _tokenizer_dir(), root)
    data = write_data(root / "data-2048.jsonl", rows=steps + 2, words=2048)  # every row > 2048 tokens
    out = root / f"run-{method}-{os.getpid()}"
    cfg = TrainConfig(model=str(model_dir), method=method, output_dir=str(out), progress=False, dtype="bf16",
                      lora=LoraSettings(r=16, alpha=32, dropout=0.0),
                      data=DataConfig(datasets=[DatasetConfig(path=str(data))], cutoff_len=2048, num_workers=8),
                      train=LoopSettings(max_steps=steps + 2, batch_size=1, gradient_checkpointing=gc, warmup=0,
                                         lr=1e-4, group_by_length=False, optim=optim if method == "qlora" else "adamw"))
    torch.cuda.reset_peak_memory_stats()
    run = setup(cfg)
    static = torch.cuda.memory_allocated()  # weights, adapters: before the first step
    fit(run)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    timed = rows[2:] or rows
    return dict(method=method, seq=2048, batch=1, gradient_checkpointing=gc, optim=cfg.train.optim,
                steps=len(timed), tok_s=round(sum(r["tok_s"] for r in timed) / len(timed), 1),
                peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2), static_gib=round(static / 2**30, 2),
                embeddings=run.manifest["schedule"].get("embeddings"), kernels=run.manifest["schedule"]["kernels"],
                final_loss=round(rows[-1]["loss"], 4),
                device=torch.cuda.get_device_name())


def compare(args) -> list[dict]:
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    build_model("qwen2.5-7b", _tokenizer_dir(), root)  # once, before the timed subprocesses
    results = []
    for method in ("lora", "qlora"):
        cmd = [sys.executable, __file__, "--one", method, "--root", str(root), "--steps", str(args.steps),
               "--optim", args.optim] + ([] if args.gc else ["--no-gc"])
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in reversed(p.stdout.splitlines()) if x.startswith("{")), None)
        res = json.loads(line) if p.returncode == 0 and line else {"method": method, "error": p.stderr[-1500:]}
        print(json.dumps(res), flush=True)
        results.append(res)
    if all("peak_gib" in r for r in results):
        ratio = {"qlora_over_lora_memory": round(results[1]["peak_gib"] / results[0]["peak_gib"], 3),
                 "qlora_over_lora_tok_s": round(results[1]["tok_s"] / results[0]["tok_s"], 3)}
        print(json.dumps(ratio), flush=True)
        results.append(ratio)
    return results


def merge_check(args) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, Qwen2Config

    from tunesmith.config import build_config
    from tunesmith.export.merge import MergeConfig, merge
    from tunesmith.train import train
    from tunesmith.train.config import TrainConfig

    root = Path(tempfile.mkdtemp(prefix="qlora-merge-"))
    tok = AutoTokenizer.from_pretrained(_tokenizer_dir())
    cfg = Qwen2Config(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(tok), tie_word_embeddings=False)
    torch.manual_seed(0)
    base_dir = root / "base"
    AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(base_dir, safe_serialization=True)
    tok.save_pretrained(base_dir)
    data = write_data(root / "toy.jsonl", rows=16, words=40)
    run = root / "run"
    train(build_config(TrainConfig, values={
        "model": str(base_dir), "method": "qlora", "output_dir": str(run), "progress": False, "dtype": "bf16",
        "data": {"datasets": [{"path": str(data)}], "cutoff_len": 128},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"lr": 5e-3, "max_steps": args.steps, "batch_size": 4, "warmup": 0}}))
    merged = root / "merged"
    merge(MergeConfig(model=str(base_dir), adapter=[str(run)], out=str(merged), dtype="bf16", device="cuda"))

    ids = torch.tensor([tok(open(data).readline()[:400])["input_ids"][:96]], device="cuda")

    def logits(model):
        with torch.no_grad():
            return model.eval()(input_ids=ids).logits.float()

    def load(path, **kw):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map={"": 0}, **kw)

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                               bnb_4bit_use_double_quant=True)
    merged_l = logits(load(merged))
    on_bf16 = logits(PeftModel.from_pretrained(load(base_dir), run))
    on_4bit = logits(PeftModel.from_pretrained(load(base_dir, quantization_config=quant), run))
    dq_dir = root / "dequantized"
    dq = load(base_dir, quantization_config=quant).dequantize()  # the NF4 weights back in bf16
    dq.config.quantization_config = None  # a plain bf16 folder (merge would refuse a quantized one)
    dq.save_pretrained(dq_dir, safe_serialization=True)
    tok.save_pretrained(dq_dir)
    on_dq = logits(PeftModel.from_pretrained(load(dq_dir), run))
    res = {"merged_vs_adapter_on_bf16_base": float((merged_l - on_bf16).abs().max()),
           "merged_vs_adapter_on_4bit_base": float((merged_l - on_4bit).abs().max()),
           "adapter_on_dequantized_vs_on_4bit": float((on_dq - on_4bit).abs().max()),
           "logit_scale": float(on_bf16.abs().max()), "device": torch.cuda.get_device_name()}
    print(json.dumps(res), flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the results (JSON) here")
    ap.add_argument("--root", default="/tmp/tunesmith-qlora-bench", help="where the random 7B model is written")
    ap.add_argument("--steps", type=int, default=6, help="measured steps (after 2 warm-up steps)")
    ap.add_argument("--optim", default="adamw", choices=["adamw", "paged_adamw_8bit"], help="qlora's optimizer")
    ap.add_argument("--no-gc", dest="gc", action="store_false", help="no gradient checkpointing (default: on)")
    ap.add_argument("--merge-check", action="store_true", help="the tiny-model merge check instead")
    ap.add_argument("--one", choices=["lora", "qlora"], help=argparse.SUPPRESS)  # a subprocess of compare()
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("qlora_memory.py needs a CUDA GPU (bitsandbytes 4-bit)", file=sys.stderr)
        return 2
    if args.one:
        print(json.dumps(one(args.one, Path(args.root), args.steps, args.optim, args.gc)), flush=True)
        return 0
    result = merge_check(args) if args.merge_check else compare(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
