"""tunesmith's training loop against a plain HF + PEFT loop on the CPU, on the rows `make demo` trains on.

Usage:
  python bench/cpu_loop.py                      # the demo recipe (recipes/identity.yaml), 4 rounds of 8 steps
  python bench/cpu_loop.py --steps 8 --rounds 6 replay.upsample=1     # recipe overrides, as on the command line
  python bench/cpu_loop.py --run RUN_DIR        # the rows of a finished `tunesmith identity`/`train` run folder
  python bench/cpu_loop.py --smoke              # < 60 s: no replay rows, 1 round of 2 steps (mechanics only)
  python bench/cpu_loop.py --profile 3          # + where our loop's time goes (torch.profiler, 3 steps, CPU ops)

The rows: the identity job's own data stage runs (its synth rows, the base model's replay answers
from ~/.cache/tunesmith, the mix and sampling) and hands over the `tunesmith train` config the job
would train with; `--run` reads that config back from a run folder instead. Both loops then take
the same rendered rows (token ids and labels from tunesmith's renderer) in the same order: step s
of both is the loop's data plan's step s (seeded shuffle, length grouping), one micro-batch of
`train.batch_size` rows.

  (a) tunesmith: `setup(cfg)` then `fit(run)` itself, at the recipe's settings and the loop's
      defaults for this device (what `tunesmith identity` runs). `fit` is called once per round
      with the round's step range; the end-of-run checkpoint and adapter save are skipped.
  (b) peer: AutoModelForCausalLM.from_pretrained + get_peft_model (same r, alpha, dropout and
      targets), torch AdamW (same lr, betas, weight decay), the same cosine schedule and warmup,
      gradient clipping at the same norm, batches right-padded to their longest row, labels -100
      on the prompt and the padding, `model(**batch, labels=labels).loss` — what a plain HF
      Trainer / LLaMA-Factory user runs. Its weights load in `--peer-dtype` (default fp32,
      LLaMA-Factory's CPU compute dtype; `auto` is transformers 5's own default, the checkpoint's
      bf16).

Both models live in the one process and take turns, A B A B … (`--rounds` rounds of `--steps`
optimizer steps each, after `--warmup` untimed steps each), so machine noise falls on both. Printed:
real tokens/s (Σ row lengths, no padding) per round and over all rounds, the ratio (peer time /
our time: over all rounds, and the median of the rounds' ratios, which a burst of load from
another process on a shared machine moves least; each round prints the 1-minute load average),
and each loop's loss over the last round's steps (same rows, same schedule: they should agree
closely).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def demo_train_config(recipe: str, overrides: dict[str, str], out: Path, smoke: bool):
    """The TrainConfig `tunesmith identity RECIPE` trains with: the job's data stage runs for real
    (rows written under ``out``); ``train(cfg)`` is swapped for a catcher, and eval is off."""
    import tunesmith.train as train_pkg
    from tunesmith.config import build_config
    from tunesmith.jobs.identity import IdentityJobConfig, identity

    caught = {}

    def catch(cfg):
        caught["cfg"] = cfg
        return 0

    extra = {"output_dir": str(out), "eval": "false"}
    if smoke:
        extra["replay.enabled"] = "false"
    job = build_config(IdentityJobConfig, [recipe], {**overrides, **extra})
    real, train_pkg.train = train_pkg.train, catch
    try:
        code = identity(job)
    finally:
        train_pkg.train = real
    if code or "cfg" not in caught:
        raise SystemExit(f"the identity job's data stage failed (exit {code})")
    return caught["cfg"]


def run_train_config(run_dir: str):
    from tunesmith.config import read_yaml
    from tunesmith.train.config import TrainConfig

    return TrainConfig.model_validate(read_yaml(Path(run_dir) / "config.yaml"))


# ------------------------------------------------------------------------------------- tunesmith
class Ours:
    """tunesmith's loop: setup() once, then fit() over each round's step range."""

    def __init__(self, cfg, out: Path):
        from tunesmith.train import loop

        self.loop = loop
        self.cfg = cfg.model_copy(update={"output_dir": str(out), "resume": False, "progress": False})
        self.run = loop.setup(self.cfg)
        self.step = 0

    def steps(self, n: int) -> float:
        loop, run = self.loop, self.run
        saved = loop.save_checkpoint, loop.finish
        loop.save_checkpoint = loop.finish = lambda *a, **k: None  # a round is not the end of the run
        end, run.start_step = run.total_steps, self.step
        run.total_steps = self.step + n
        try:
            t = time.perf_counter()
            code = loop.fit(run)
            dt = time.perf_counter() - t
        finally:
            loop.save_checkpoint, loop.finish = saved
            run.total_steps = end
        if code:
            raise SystemExit(f"tunesmith's fit() returned {code}")
        self.step += n
        return dt

    def losses(self, first: int, last: int) -> list[float]:
        """Logged train loss of steps first+1 … last (the loop logs after each step)."""
        rows = [json.loads(x) for x in (self.run.run_dir / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r and first < r["step"] <= last]


# ------------------------------------------------------------------------------------------ peer
class Peer:
    """A plain HF + PEFT loop over the same rows."""

    def __init__(self, cfg, model_dir: Path, rows: list[dict], pad_id: int, total_steps: int, dtype: str):
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, get_scheduler

        loop, lc = cfg.train, cfg.lora
        torch.manual_seed(loop.seed)
        kw = {} if dtype == "auto" else {"dtype": {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]}
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kw)
        model.config.use_cache = False  # as LLaMA-Factory sets for training
        targets = "all-linear" if lc.target_modules == ["all-linear"] else lc.target_modules
        self.model = get_peft_model(model, LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                                      target_modules=targets, task_type="CAUSAL_LM"))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=loop.lr, betas=loop.betas, weight_decay=loop.weight_decay)
        warmup = int(loop.warmup * total_steps) if loop.warmup < 1 else int(loop.warmup)
        kind = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[loop.scheduler]
        self.sched = get_scheduler(kind, self.opt, num_warmup_steps=warmup, num_training_steps=total_steps)
        self.rows, self.pad_id, self.clip = rows, pad_id, loop.max_grad_norm
        self.loss_log: dict[int, float] = {}
        self.model.train()

    def batch(self, idx: list[int]):
        import torch

        rows = [self.rows[i] for i in idx]
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[j, :n] = torch.tensor(r["input_ids"])
            labels[j, :n] = torch.tensor(r["labels"])  # -100 on the prompt already
            mask[j, :n] = 1
        return ids, mask, labels

    def train_steps(self, plan, first: int, n: int) -> float:
        import torch

        t = time.perf_counter()
        for s in range(first, first + n):
            loss = 0.0
            for idx in plan.step(s)[1]:  # one micro-batch per step at the demo's settings
                ids, mask, labels = self.batch(idx)
                out = self.model(input_ids=ids, attention_mask=mask, labels=labels)
                out.loss.backward()
                loss += out.loss.item()
            if self.clip:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            self.loss_log[s + 1] = loss
        return time.perf_counter() - t


# ----------------------------------------------------------------------------------------- main
def profile_ours(ours: Ours, steps: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ours.steps(steps)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=50)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="recipe overrides KEY=VALUE (as `tunesmith identity` takes)")
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "identity.yaml"))
    ap.add_argument("--run", help="take the rows from this finished run folder's config.yaml instead")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per round, per loop")
    ap.add_argument("--rounds", type=int, default=4, help="rounds (A then B each)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per loop before the rounds")
    ap.add_argument("--peer-dtype", choices=["fp32", "bf16", "auto"], default="fp32",
                    help="the peer's weights (auto: transformers' default, the checkpoint's dtype)")
    ap.add_argument("--smoke", action="store_true", help="< 60 s: identity rows only, 1 round of 2 steps")
    ap.add_argument("--profile", type=int, metavar="N", help="after the rounds, profile N steps of our loop")
    ap.add_argument("--root", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.rounds, args.warmup = 2, 1, 1
    overrides = dict(o.split("=", 1) for o in args.overrides)

    import torch
    import transformers
    import peft

    from tunesmith.models import resolve_model

    tmp = tempfile.TemporaryDirectory(prefix="cpu-loop-") if args.root is None else None
    root = Path(args.root or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = (run_train_config(args.run) if args.run
           else demo_train_config(args.recipe, overrides, root / f"identity-{time.time_ns()}", args.smoke))
    cfg = cfg.model_copy(update={"device": "cpu"})
    ours = Ours(cfg, root / f"ours-{time.time_ns()}")
    run = ours.run
    need = args.warmup + args.steps * args.rounds + (args.profile or 0)
    if need > run.total_steps:
        raise SystemExit(f"{need} steps asked for; the recipe's run has {run.total_steps}")
    peer = Peer(cfg, resolve_model(cfg.model), run.train_rows, run.tokenizer.pad_token_id, run.total_steps,
                args.peer_dtype)
    lengths = run.lengths

    def real_tokens(first: int, n: int) -> int:
        return sum(lengths[i] for s in range(first, first + n) for part in run.plan.step(s)[1] for i in part)

    info = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "threads": torch.get_num_threads(), "cpu": cpu_name(), "nproc": os.cpu_count(),
            "rows": len(run.train_rows), "run_steps": run.total_steps, "batch_size": cfg.train.batch_size,
            "ours": {"dtype": str(next(run.model.parameters()).dtype).replace("torch.", ""),
                     "autocast": run.autocast, "packing": run.manifest["schedule"]["packing"],
                     "kernels": run.manifest["schedule"]["kernels"]},
            "peer_dtype": str(next(peer.model.parameters()).dtype).replace("torch.", ""),
            "setup_s": round(time.perf_counter() - t0, 1), "load1": round(os.getloadavg()[0], 2)}
    print(json.dumps(info), flush=True)

    ours.steps(args.warmup)
    peer.train_steps(run.plan, 0, args.warmup)
    step, t_ours, t_peer, toks = args.warmup, [], [], []
    for r in range(args.rounds):
        a = ours.steps(args.steps)
        b = peer.train_steps(run.plan, step, args.steps)
        toks.append(real_tokens(step, args.steps))
        t_ours.append(a)
        t_peer.append(b)
        step += args.steps
        print(json.dumps({"round": r + 1, "steps": f"{step - args.steps + 1}-{step}", "real_tokens": toks[-1],
                          "ours_tok_s": round(toks[-1] / a, 1), "peer_tok_s": round(toks[-1] / b, 1),
                          "ratio": round(b / a, 3), "load1": round(os.getloadavg()[0], 2)}), flush=True)
    last = step - args.steps
    ours_loss = statistics.fmean(ours.losses(last, step))
    peer_loss = statistics.fmean(peer.loss_log[s] for s in range(last + 1, step + 1))
    result = {"ours_tok_s": round(sum(toks) / sum(t_ours), 1), "peer_tok_s": round(sum(toks) / sum(t_peer), 1),
              "ratio": round(sum(t_peer) / sum(t_ours), 3),
              "ratio_median_round": round(statistics.median(p / o for p, o in zip(t_peer, t_ours)), 3),
              "steps_each": step, "timed_steps_each": args.steps * args.rounds,
              f"ours_loss_steps_{last + 1}_{step}": round(ours_loss, 4),
              f"peer_loss_steps_{last + 1}_{step}": round(peer_loss, 4),
              "goal": 1.5, "load1_end": round(os.getloadavg()[0], 2)}
    print(json.dumps(result), flush=True)
    if args.profile:
        print(profile_ours(ours, args.profile), flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "cpu_loop.json").write_text(json.dumps({**info, **result}, indent=1))
    if math.isnan(ours_loss) or math.isnan(peer_loss):
        return 1
    return 0


def cpu_name() -> str:
    """The CPU's model name (bench/grpo_speed.py prints it too)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
