"""FSDP smoke run on the GPUs at hand: full fine-tuning through `accelerate launch` with the
shipped configs/accelerate/fsdp.yaml, killed mid-run (SIGKILL), resumed, then the saved
weights loaded on one device with plain transformers and compared with an uninterrupted run.

Usage (CUDA): python bench/fsdp_smoke.py --tokenizer DIR [--model qwen2.5-0.5b] [--nproc N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import build_model, write_data  # noqa: E402

SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def launch(recipe: Path, nproc: int, *extra: str, fault: str | None = None) -> tuple[int, float, str]:
    env = {**os.environ, **SAFE_ENV}
    env.pop("TUNESMITH_FAULT", None)
    if fault:
        env["TUNESMITH_FAULT"] = fault
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/fsdp.yaml",
           "--num_processes", str(nproc), "-m", "tunesmith.cli", "train", str(recipe), *extra]
    t = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return r.returncode, time.time() - t, (r.stdout + r.stderr)[-1500:]


def main() -> None:
    import torch
    import yaml
    from safetensors.torch import load_file

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--nproc", type=int, default=torch.cuda.device_count())
    ap.add_argument("--root", default="/tmp/tunesmith-fsdp")
    args = ap.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    model = build_model(args.model, args.tokenizer, root)
    data = write_data(root / "data.jsonl", rows=64, words=300)
    results = {"model": args.model, "nproc": args.nproc, "device": torch.cuda.get_device_name()}
    for method in ("full", "lora"):
        recipes = {}
        for name in ("straight", "broken"):
            cfg = {"model": str(model), "method": method, "output_dir": str(root / f"{method}-{name}"),
                   "progress": False, "data": {"datasets": [{"path": str(data)}], "cutoff_len": 256},
                   "lora": {"dropout": 0.0},
                   "train": {"max_steps": 8, "batch_size": 4, "save_every": 2, "lr": 1e-5, "warmup": 0}}
            recipes[name] = root / f"{method}-{name}.yaml"
            recipes[name].write_text(yaml.safe_dump(cfg))
        code, secs, log = launch(recipes["straight"], args.nproc)
        res = {"straight_rc": code, "straight_s": round(secs, 1)}
        if code != 0:
            res["log"] = log
            results[method] = res
            continue
        code, _, _ = launch(recipes["broken"], args.nproc, fault="step:5")
        res["killed_rc"] = code
        code, _, log = launch(recipes["broken"], args.nproc, "--resume")
        res["resumed_rc"] = code
        if code != 0:
            res["log"] = log
            results[method] = res
            continue
        fname = "model.safetensors" if method == "full" else "adapter_model.safetensors"
        a_dir, b_dir = root / f"{method}-straight", root / f"{method}-broken"
        if method == "full" and not (a_dir / fname).is_file():
            fname = "model-00001-of-00002.safetensors"
        a, b = load_file(a_dir / fname), load_file(b_dir / fname)
        res["tensors"] = len(a)
        res["max_abs_diff_vs_uninterrupted"] = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        losses = lambda d: [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
        res["loss_a"], res["loss_b"] = losses(a_dir), losses(b_dir)
        res["schedule"] = json.loads((b_dir / "manifest.json").read_text())["schedule"]
        res["peak_gib"] = max(json.loads(x).get("peak_gib", 0) for x in (b_dir / "metrics.jsonl").read_text().splitlines())
        # the saved weights load on one device with plain transformers / peft
        from transformers import AutoModelForCausalLM

        if method == "full":
            m = AutoModelForCausalLM.from_pretrained(b_dir, dtype=torch.bfloat16).to("cuda:0")
        else:
            from peft import PeftModel

            m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16), b_dir)
            m.to("cuda:0")
        with torch.no_grad():
            out = m(input_ids=torch.tensor([[1, 2, 3]], device="cuda:0")).logits
        res["loads_on_one_device"] = bool(torch.isfinite(out).all())
        del m
        torch.cuda.empty_cache()
        results[method] = res
        print(json.dumps({method: res}), flush=True)
    print(json.dumps(results), flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "fsdp_smoke.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
