"""Training throughput of `tunesmith train` (the real recipe: data rendering, batching,
packing, loss, optimizer, logging) on random-weight models built from real Qwen2.5 configs.

Usage:
  fixed-length rows (every row cut at SEQ):
    python bench/train_throughput.py MODEL:SEQ:BSZ:GC[:lora|full] ...   e.g. qwen2.5-0.5b:2048:8:0
  real rows (any format tunesmith reads, e.g. LLaMA-Factory's alpaca_en_demo.json; SEQ = cutoff_len):
    python bench/train_throughput.py --data alpaca_en_demo.json --data alpaca_zh_demo.json qwen2.5-0.5b:2048:16:0
  generated rows with alpaca's length distribution (for a machine without the LF data):
    python bench/train_throughput.py --alpaca-like 2000 qwen2.5-0.5b:2048:16:0
  switches: --packing on|off, --batch-tokens N (token budget per micro-batch; BSZ is then unused),
            --kernels auto|liger|none, --attention auto|sdpa|flex|varlen (train.attention),
            --compile (train.compile), --mlp-recompute on|off, --steps N (measured, after 2 warm-up steps),
            --profile (a table of where the GPU time goes)
GC=1: gradient checkpointing, GC=2: checkpointing with offload (train.gradient_checkpointing: offload). The tokenizer is --tokenizer DIR, else $TUNESMITH_BENCH_TOKENIZER,
else the embedded model's (its ids fit any larger vocabulary).

Prints one JSON line per run:
  real_tok_s   non-pad tokens per second over the measured steps (Σ row lengths / Σ step times)
  pad_frac     1 − real tokens / tensor tokens (bins × width when packed, rows × longest if not)
  peak_gib     torch.cuda.max_memory_allocated
  mfu          model FLOPs per second / the GPU's peak dense bf16 FLOPs (H100/H200: 989e12;
               --peak-tflops to override). Model FLOPs of a row of n real tokens:
                   (4·N + 2·N_trainable)·n + 6·L·d·n²
               N = parameters in matmuls (non-embedding weights + the lm_head's vocab × d),
               4·N = forward (2N) + backward to activations (2N), 2·N_trainable = backward to the
               weights that train (N for full fine-tuning: the familiar 6N; a LoRA's few for LoRA),
               6·L·d·n² = causal attention scores and values, forward + backward (L layers, width
               d). Recomputation under gradient checkpointing is not counted (MFU, not HFU).
Throughput does not depend on weight values, so random weights measure the real cost.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

# Public Qwen2.5 architecture facts (config.json of each model); "tiny" is for a CPU smoke run.
CONFIGS = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=49152, tie_word_embeddings=True),
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
WORDS = ("model data train answer token layer value system window memory kernel shape batch river stone cloud "
         "garden signal vector matrix planet market bridge engine letter number theory").split()


def tokenizer_dir(arg: str | None) -> str:
    if arg or os.environ.get("TUNESMITH_BENCH_TOKENIZER"):
        return arg or os.environ["TUNESMITH_BENCH_TOKENIZER"]
    from tunesmith.models import resolve_model

    return str(resolve_model("smollm2-135m-instruct"))


def build_model(name: str, tokenizer_dir: str, root: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    out = root / name
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    cfg = Qwen2Config(**CONFIGS[name], max_position_embeddings=32768)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def write_data(path: Path, rows: int, words: int) -> Path:
    """Rows of ``words`` words each (longer than any cutoff: every row is cut to the same length)."""
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(rows):
            answer = " ".join(rng.choice(WORDS) for _ in range(words))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"Write text {i}."},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    return path


def write_alpaca_like(path: Path, rows: int) -> Path:
    """Alpaca-format rows whose rendered lengths follow LLaMA-Factory's alpaca en+zh demos: a
    log-normal with mean ~281 tokens (median ~190) and a long tail past 2048 (cut by the
    cutoff). Each word of WORDS is one token with its leading space in Qwen/SmolLM tokenizers;
    the chat template and instruction add ~30."""
    rng = random.Random(0)
    sigma = 0.9
    mu = math.log(281 - 18) - sigma ** 2 / 2  # the answer part; with the template: mean ≈ 281
    with path.open("w") as f:
        for i in range(rows):
            n = max(1, int(rng.lognormvariate(mu, sigma)))
            k = min(n // 4, 40)  # some of the length sits in the instruction, as in alpaca
            f.write(json.dumps({"instruction": f"Task {i}: " + " ".join(rng.choice(WORDS) for _ in range(k)),
                                "input": "", "output": " ".join(rng.choice(WORDS) for _ in range(n - k))}) + "\n")
    return path


def model_flops(model, lengths: list[int]) -> float:
    """The docstring's formula over the rows of the measured steps."""
    cfg = model.config
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    emb = base.get_input_embeddings().weight
    n_all = sum(p.numel() for p in model.parameters())
    n_mm = n_all - emb.numel() + cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 0)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    d, layers = cfg.hidden_size, cfg.num_hidden_layers
    return sum((4 * n_mm + 2 * n_train) * n + 6 * layers * d * n * n for n in lengths)


def tensor_tokens(run, micro: list[list[int]]) -> int:
    """Tokens the model really computes for one step (padding included)."""
    total = 0
    for part in micro:
        batch = run.objective.collate([run.train_rows[i] for i in part], run.tokenizer.pad_token_id)
        total += batch["input_ids"].numel()
    return total


def run_one(spec: str, args, root: Path) -> dict:
    import torch

    from tunesmith.data.config import DataConfig, DatasetConfig
    from tunesmith.train.config import LoopSettings, LoraSettings, TrainConfig
    from tunesmith.train.loop import fit, setup

    parts = spec.split(":")
    name, seq, bsz, gc = parts[0], int(parts[1]), int(parts[2]), {"0": False, "1": True, "2": "offload"}[parts[3]]
    method = parts[4] if len(parts) > 4 else "lora"
    model_dir = build_model(name, tokenizer_dir(args.tokenizer), root)
    steps = args.steps + 2
    if args.data:
        sets = [DatasetConfig(path=str(Path(p).resolve())) for p in args.data]
    elif args.alpaca_like:
        sets = [DatasetConfig(path=str(write_alpaca_like(root / f"alpaca-like-{args.alpaca_like}.jsonl",
                                                         args.alpaca_like)))]
    else:  # fixed length: every row longer than seq
        sets = [DatasetConfig(path=str(write_data(root / f"data-{seq}-{bsz * steps}.jsonl", bsz * steps, seq)))]
    cuda = torch.cuda.is_available()
    out = root / f"run-{name}-{seq}-{bsz}-{parts[3]}-{method}-{time.time_ns()}"
    cfg = TrainConfig(model=str(model_dir), method=method, output_dir=str(out), progress=False,
                      dtype="bf16" if cuda else "fp32", device="cuda" if cuda else "cpu",
                      lora=LoraSettings(r=16, alpha=32, dropout=0.0),
                      data=DataConfig(datasets=sets, cutoff_len=seq, num_workers=8, val_size=0),
                      train=LoopSettings(max_steps=steps, batch_size=bsz, gradient_checkpointing=gc, warmup=0,
                                         lr=1e-4, group_by_length=False, batch_tokens=args.batch_tokens,
                                         packing={"on": True, "off": False}[args.packing], kernels=args.kernels,
                                         attention=args.attention, compile=args.compile,
                                         mlp_recompute=args.mlp_recompute == "on"))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run = setup(cfg)
    if args.profile and cuda:  # where the GPU time goes: CUDA kernels over the whole run, top 15
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fit(run)
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60)
        print(table, flush=True)
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], f"profile-{name}-{seq}-{bsz}.txt").write_text(table)
    else:
        fit(run)
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    measured = [run.plan.step(s)[1] for s in range(2, min(steps, len(logged)))]
    real = [sum(run.lengths[i] for p in m for i in p) for m in measured]
    seconds = sum(t / r["tok_s"] for t, r in zip(real, logged[2:]))  # the loop logs Σ row lengths / step time
    rows = [run.lengths[i] for m in measured for p in m for i in p]
    flops = model_flops(run.accelerator.unwrap_model(run.model), rows)
    device = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
        (v for k, v in PEAK_BF16.items() if k in device), None)
    res = dict(model=name, seq=seq, bsz=bsz, gc=gc, method=method, packing=run.manifest["schedule"]["packing"],
               batch_tokens=args.batch_tokens, kernels=run.manifest["schedule"]["kernels"],
               attention=run.manifest["schedule"]["attention"], compile=args.compile,
               mlp_recompute=run.manifest["schedule"]["mlp_recompute"],
               rows_per_step=round(len(rows) / max(len(measured), 1), 1),
               mean_row=round(sum(run.lengths) / len(run.lengths), 1), max_row=max(run.lengths),
               real_tok_s=round(sum(real) / seconds) if seconds else None,
               pad_frac=round(1 - sum(real) / max(sum(tensor_tokens(run, m) for m in measured), 1), 4),
               peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
               mfu=round(flops / seconds / peak, 4) if peak and seconds else None,
               final_loss=round(logged[-1]["loss"], 3))
    print(json.dumps(res), flush=True)
    if cuda:
        torch.cuda.empty_cache()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan", nargs="+", help="MODEL:SEQ:BSZ:GC[:lora|full]")
    ap.add_argument("--tokenizer", help="folder with a tokenizer that has a chat template")
    ap.add_argument("--data", action="append", help="real rows: a data file tunesmith reads (repeatable)")
    ap.add_argument("--alpaca-like", type=int, metavar="ROWS", help="generate ROWS rows with alpaca's lengths")
    ap.add_argument("--packing", choices=["on", "off"], default="on")
    ap.add_argument("--batch-tokens", type=int, help="token budget per micro-batch (instead of BSZ rows)")
    ap.add_argument("--kernels", choices=["auto", "liger", "none"], default="auto")
    ap.add_argument("--attention", choices=["auto", "sdpa", "flex", "varlen"], default="auto",
                    help="how packed rows are kept apart (train.attention; sdpa = the 4-D mask)")
    ap.add_argument("--compile", action="store_true", help="torch.compile each decoder layer")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s (default: by its name)")
    ap.add_argument("--mlp-recompute", choices=["on", "off"], default="off",
                    help="train.mlp_recompute: act(gate)*up recomputed in the backward instead of kept")
    ap.add_argument("--profile", action="store_true", help="print the CUDA kernels' time table (torch.profiler)")
    ap.add_argument("--root", default="/tmp/tunesmith-bench")
    ap.add_argument("--steps", type=int, default=8, help="measured steps (after 2 warm-up steps)")
    args = ap.parse_args()
    import torch
    import transformers

    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                      "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}), flush=True)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for spec in args.plan:
        try:
            results.append(run_one(spec, args, root))
        except Exception as e:  # one failed size (e.g. out of memory) should not hide the others
            print(json.dumps(dict(spec=spec, error=str(e)[:300])), flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "train_throughput.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
