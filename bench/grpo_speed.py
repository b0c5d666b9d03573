"""tunesmith's GRPO step against TRL's GRPOTrainer: same model, prompts, reward and settings, one process.

Usage:
  python bench/grpo_speed.py                          # SmolLM2-135M-Instruct on CPU, 4 prompts x 8, 128 tokens, 1+3 steps
  python bench/grpo_speed.py --prompts-per-step 2     # what fits a shared 24 GB CPU machine (docs/benchmarks.md)
  python bench/grpo_speed.py --trl-first              # TRL takes each step first (the first step of a process is slow)
  python bench/grpo_speed.py --steps 5 --warmup 1 --prompts-per-step 4 --num-generations 8 --max-completion-length 256
  python bench/grpo_speed.py --device cuda --steps 10   # bf16 on one GPU
  python bench/grpo_speed.py --bf16                   # CPU, both in bf16 mixed precision (TRL's default bf16=True)
  python bench/grpo_speed.py --model PATH             # another model (a folder, or a name tunesmith resolves)
  python bench/grpo_speed.py --smoke                  # < 60 s on the CPU: 2 prompts x 2, 16 tokens, one step each (mechanics only)
  python bench/grpo_speed.py --profile                # + where our step's time goes (torch.profiler, one step)

Both sides do the same work each step:

  - the same model (``--model``, default the embedded ``smollm2-135m-instruct``, resolved as tunesmith
    resolves it), fp32 on CPU, bf16 weights with bf16 autocast on CUDA (TRL's ``bf16=True``);
  - the same LoRA (r, alpha, dropout, ``all-linear`` targets) on it;
  - the same prompts in the same steps: training-split questions of the multiply task (the task home,
    ``tasks.arith.make_rows``, as recipes/multiply-grpo.yaml's rl-prompts stage writes them), in the
    order tunesmith's data plan takes them; TRL gets them in that order with ``shuffle_dataset=False``,
    so step s of both samples answers to the same ``--prompts-per-step`` questions (token ids checked equal);
  - G = ``--num-generations`` samples per prompt, ``--max-completion-length`` tokens at most, temperature
    1, top-p 1, top-k off; TRL generates through its default path (transformers ``generate``, no vLLM);
  - the same reward: the task home's ``multiply`` reward — the very function object tunesmith's objective
    calls (asserted), wrapped in TRL's reward-function signature and handed tunesmith's own prompt row;
  - the same loss (dapo, beta 0.02 — the KL term's reference pass with the adapter off on both — epsilon
    0.2, the KL bias correction on, group-scaled advantages), one optimizer step per generation batch
    (one micro-batch of prompts x G completions), AdamW at the same lr, constant schedule, clipping at 1.0,
    no gradient checkpointing on either (TRL's GRPOConfig turns it on by default; off here, as ours runs).

  (a) tunesmith: ``loop.setup(cfg)`` then ``loop.fit(run)`` itself (what ``tunesmith train`` runs with
      ``objective: grpo``), one step per call; the end-of-run checkpoint and adapter save are skipped.
  (b) TRL: ``GRPOTrainer.train()`` in a second thread, held at each ``on_step_begin`` by a callback until
      the main thread lets it take one step (the main thread waits meanwhile): A B A B …, so machine noise
      falls on both and never on both at once.

Step time: ours, the ``fit`` call (rollout, rewards, reference pass, loss, backward, optimizer, logging);
TRL, ``on_step_begin`` → ``on_step_end`` (generation, rewards, reference pass, loss, backward, optimizer).
Generated tokens: completion tokens actually sampled, the end-of-turn token included (both count it); a
row that stops early stops counting — tokens/s is the fair figure when the two sides' lengths differ.
``gen_s``: the part of the step spent sampling (ours: ``rollout.sample``; TRL: ``_generate_single_turn``).

The first step in the process is slow for whichever side takes it (the machine faulting in fresh memory:
measured 5-7x on the CPU dev machine, for ours when ours goes first and for TRL with ``--trl-first``):
``--warmup`` steps are left out of the summary.

Output: JSON lines — setup, one per step per loop, then the summary (median step time, generated
tokens/s over the timed steps, the ratio TRL time / ours, mean completion length each, versions).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from cpu_loop import cpu_name  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
GOAL = 2.0


def settings(args) -> dict:
    """The recipe both sides run (recipes/multiply-grpo.yaml's GRPO stage, sized by the flags)."""
    return {"lr": 2e-5, "beta": 0.02, "loss_type": "dapo", "epsilon": 0.2, "temperature": 1.0, "scale": "group",
            "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "seed": 0, "max_grad_norm": 1.0,
            "prompts": args.prompts_per_step, "G": args.num_generations, "L": args.max_completion_length}


# ------------------------------------------------------------------------------------- tunesmith
class Ours:
    """tunesmith's loop, ``objective: grpo``: setup() once, then fit() one step at a time."""

    def __init__(self, model: str, prompts: Path, out: Path, s: dict, steps: int, device: str, bf16: bool = False):
        from tunesmith.train import loop
        from tunesmith.train.config import TrainConfig
        from tunesmith.train.objectives import grpo as grpo_mod

        cfg = TrainConfig(
            model=model, device=device, output_dir=str(out), progress=False, objective="grpo",
            grpo={"num_generations": s["G"], "max_completion_length": s["L"], "temperature": s["temperature"],
                  "beta": s["beta"], "loss_type": s["loss_type"], "epsilon": s["epsilon"], "scale_rewards": s["scale"],
                  "rewards": [{"name": "multiply"}]},
            data={"datasets": [{"path": str(prompts)}], "cutoff_len": 64},
            lora={"r": s["lora_r"], "alpha": s["lora_alpha"], "dropout": s["lora_dropout"]},
            train={"lr": s["lr"], "max_steps": steps, "batch_size": s["prompts"], "grad_accum": 1, "warmup": 0,
                   "scheduler": "constant", "save_every": 10**6, "seed": s["seed"], "max_grad_norm": s["max_grad_norm"],
                   **({"autocast": "bf16"} if bf16 else {})})
        self.loop, self.cfg = loop, cfg
        self.run = loop.setup(cfg)
        self.step = 0
        self.gen: list[tuple[float, int, list[int]]] = []  # per rollout: seconds, tokens, lengths
        real = grpo_mod.sample

        def timed_sample(*a, **k):  # what the objective's rollout calls: the engine's sampling only
            t = time.perf_counter()
            out = real(*a, **k)
            lens = [len(c["ids"]) for group in out for c in group]
            self.gen.append((time.perf_counter() - t, sum(lens), lens))
            return out

        grpo_mod.sample = timed_sample

    @property
    def reward_fn(self):
        return self.run.objective.rewards[0][2]

    def step_rows(self, s: int) -> list[dict]:
        return [self.run.train_rows[i] for part in self.run.plan.step(s)[1] for i in part]

    def one_step(self) -> dict:
        loop, run = self.loop, self.run
        saved = loop.save_checkpoint, loop.finish
        loop.save_checkpoint = loop.finish = lambda *a, **k: None  # one step is not the end of the run
        end, run.start_step = run.total_steps, self.step
        run.total_steps = self.step + 1
        try:
            t = time.perf_counter()
            code = loop.fit(run)
            dt = time.perf_counter() - t
        finally:
            loop.save_checkpoint, loop.finish = saved
            run.total_steps = end
        if code:
            raise SystemExit(f"tunesmith's fit() returned {code}")
        self.step += 1
        gen_s, tokens, lens = self.gen[-1]
        row = json.loads((run.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        return {"step_s": dt, "gen_s": gen_s, "tokens": tokens, "lengths": lens, "reward": row.get("reward"),
                "loss": row.get("loss")}


# ------------------------------------------------------------------------------------------- TRL
class Theirs:
    """TRL's GRPOTrainer.train() in a thread, one step at a time on the main thread's word."""

    def __init__(self, model_dir: Path, rows: list[dict], reward_fn, out: Path, s: dict, steps: int, device: str,
                 threads: int, bf16: bool = False):
        import torch
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        cuda = device.startswith("cuda")
        if cuda or bf16:  # TRL trains with bf16=True (its default); ours' Accelerator was made with mixed precision off
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state()
        tok = AutoTokenizer.from_pretrained(model_dir)
        by_question = {r["prompt"]: r for r in rows}  # tunesmith's own prompt rows, handed to the reward

        def multiply(prompts, completions, question, **kw):  # TRL's signature around the task home's reward
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return [reward_fn(t, by_question[q]) for t, q in zip(texts, question)]

        for r in rows:  # TRL renders the same prompt ids as tunesmith
            ids = tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], add_generation_prompt=True,
                                          tokenize=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            if ids != r["prompt_ids"]:
                raise SystemExit(f"prompt tokens differ between tunesmith and TRL for {r['prompt']!r}")
        data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "question": r["prompt"]}
                                  for r in rows])
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32)
        args = GRPOConfig(
            output_dir=str(out), per_device_train_batch_size=s["prompts"] * s["G"], gradient_accumulation_steps=1,
            num_generations=s["G"], max_completion_length=s["L"], temperature=s["temperature"], top_p=1.0, top_k=0,
            beta=s["beta"], loss_type=s["loss_type"], epsilon=s["epsilon"], scale_rewards=s["scale"],
            use_bias_correction_kl=True, num_iterations=1, learning_rate=s["lr"], lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.0, max_grad_norm=s["max_grad_norm"], max_steps=steps, seed=s["seed"],
            shuffle_dataset=False, gradient_checkpointing=False, logging_steps=1, save_strategy="no",
            report_to="none", use_cpu=not cuda, bf16=cuda or bf16, dataloader_num_workers=0, disable_tqdm=True)
        lora = LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
                          target_modules="all-linear", task_type="CAUSAL_LM")
        self.go, self.ready, self.done = threading.Semaphore(0), threading.Semaphore(0), threading.Semaphore(0)
        self.records: list[dict] = []
        self.gen: list[tuple[float, int, list[int]]] = []
        self.error: str | None = None
        self.threads = threads
        bench = self

        class Turns(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                bench.ready.release()   # idle: the main thread may run ours now
                bench.go.acquire()      # … and lets this step go when ours is done
                bench.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                bench.records.append({"step_s": time.perf_counter() - bench.t0})
                bench.done.release()

        self.trainer = GRPOTrainer(model=model, reward_funcs=[multiply], args=args, train_dataset=data,
                                   processing_class=tok, peft_config=lora, callbacks=[Turns()])
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        for cb in (PrinterCallback, ProgressCallback):  # its log dicts are not this script's JSON lines
            self.trainer.remove_callback(cb)
        real = self.trainer._generate_single_turn

        def timed_generate(*a, **k):
            t = time.perf_counter()
            out = real(*a, **k)
            lens = [len(c) for c in out[0]]
            self.gen.append((time.perf_counter() - t, sum(lens), lens))
            return out

        self.trainer._generate_single_turn = timed_generate
        self.thread = threading.Thread(target=self._train, name="trl-grpo")

    def _train(self):
        import torch

        torch.set_num_threads(self.threads)  # as the main thread runs
        try:
            self.trainer.train()
        except BaseException:  # noqa: BLE001 — reported by the main thread
            self.error = traceback.format_exc()
        finally:
            self.ready.release()
            self.done.release()

    def _wait(self, sem: threading.Semaphore):
        while not sem.acquire(timeout=1.0):
            if not self.thread.is_alive() and self.error is None:
                break
        if self.error:
            raise SystemExit(f"TRL's trainer failed:\n{self.error}")

    def start(self):
        self.thread.start()
        self._wait(self.ready)  # set up, held before its first step

    def one_step(self, last: bool) -> dict:
        self.go.release()
        self._wait(self.done)
        if not last:
            self._wait(self.ready)  # logging done, held before the next step
        else:
            self.thread.join()      # the last step's log written, train() returned
        rec = self.records[-1]
        gen_s, tokens, lens = self.gen[-1]
        hist = [h for h in self.trainer.state.log_history if "reward" in h]
        return {"step_s": rec["step_s"], "gen_s": gen_s, "tokens": tokens, "lengths": lens,
                "reward": hist[-1]["reward"] if hist else None, "loss": hist[-1].get("loss") if hist else None}

    def finish(self):
        self.thread.join()
        if self.error:
            raise SystemExit(f"TRL's trainer failed:\n{self.error}")


# ----------------------------------------------------------------------------------------- main
def write_prompts(path: Path, n: int) -> Path:
    """Training-split multiply questions (2 x 2 digits, English), as recipes/multiply-grpo.yaml's rl-prompts."""
    from tunesmith.tasks.arith import make_rows

    rows = make_rows("multiply", [2, 2], n, split="train", seed=2, lang="en")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def summary(name: str, recs: list[dict]) -> dict:
    step = [r["step_s"] for r in recs]
    tokens = sum(r["tokens"] for r in recs)
    lens = [n for r in recs for n in r["lengths"]]
    gen = sum(r["gen_s"] for r in recs)
    return {f"{name}_median_step_s": round(statistics.median(step), 3),
            f"{name}_tok_s": round(tokens / sum(step), 2),
            f"{name}_gen_tok_s": round(tokens / gen, 2),
            f"{name}_gen_share": round(gen / sum(step), 3),
            f"{name}_mean_completion_len": round(statistics.fmean(lens), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="a model folder or a name tunesmith resolves")
    ap.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (bf16)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per loop")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per loop first")
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--max-completion-length", type=int, default=128)
    ap.add_argument("--smoke", action="store_true", help="< 60 s on the CPU: 2 prompts x 2, 16 tokens, one step each, no warm-up (mechanics only)")
    ap.add_argument("--bf16", action="store_true", help="on the CPU, both in bf16 mixed precision: TRL's default "
                    "bf16=True, ours train.autocast: bf16 (default here: both fp32)")
    ap.add_argument("--trl-first", action="store_true", help="TRL takes each step first (default: ours first)")
    ap.add_argument("--profile", action="store_true", help="after the steps, profile one more step of ours")
    ap.add_argument("--root", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.warmup, args.prompts_per_step, args.num_generations, args.max_completion_length = 1, 0, 2, 2, 16
    s = settings(args)
    total = args.warmup + args.steps + (1 if args.profile else 0)

    import torch
    import transformers
    import peft
    import trl

    from tunesmith.models import resolve_model
    from tunesmith.tasks import multiply as multiply_task

    tmp = tempfile.TemporaryDirectory(prefix="grpo-speed-") if args.root is None else None
    root = Path(args.root or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model_dir = resolve_model(args.model)
    prompts = write_prompts(root / "prompts.jsonl", max(64, total * args.prompts_per_step))
    ours = Ours(str(model_dir), prompts, root / f"ours-{time.time_ns()}", s, total, args.device, args.bf16)
    assert ours.reward_fn is multiply_task.reward  # the task home's function, no copy
    rows = [r for st in range(total) for r in ours.step_rows(st)]
    theirs = Theirs(model_dir, rows, ours.reward_fn, root / f"trl-{time.time_ns()}", s, total, args.device,
                    torch.get_num_threads(), args.bf16)
    theirs.start()
    run = ours.run
    info = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "trl": trl.__version__, "device": args.device, "cpu": cpu_name(), "nproc": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
            "model": str(model_dir), "ours_dtype": str(next(run.model.parameters()).dtype).replace("torch.", ""),
            "ours_autocast": run.autocast,
            "trl_dtype": str(next(theirs.trainer.model.parameters()).dtype).replace("torch.", ""),
            "trl_bf16": theirs.trainer.args.bf16, **s, "warmup": args.warmup, "steps": args.steps,
            "setup_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(info), flush=True)

    recs: dict[str, list[dict]] = {"ours": [], "trl": []}
    n = args.warmup + args.steps
    for st in range(n):
        for name in ("trl", "ours") if args.trl_first else ("ours", "trl"):
            r = ours.one_step() if name == "ours" else theirs.one_step(last=st == total - 1)
            r["warmup"] = st < args.warmup
            recs[name].append(r)
            print(json.dumps({"loop": name, "step": st + 1, "warmup": r["warmup"], "step_s": round(r["step_s"], 3),
                              "gen_s": round(r["gen_s"], 3), "tokens": r["tokens"],
                              "tok_s": round(r["tokens"] / r["step_s"], 2),
                              "mean_len": round(r["tokens"] / len(r["lengths"]), 2),
                              "clipped": round(sum(x >= args.max_completion_length for x in r["lengths"])
                                               / len(r["lengths"]), 3),
                              "reward": r["reward"], "loss": r["loss"]}), flush=True)
    if args.profile:
        print(profile_ours(ours), flush=True)
        theirs.one_step(last=True)
    theirs.finish()

    timed = {k: [r for r in v if not r["warmup"]] for k, v in recs.items()}
    out = {}
    for name, v in timed.items():
        out.update(summary(name, v))
        lens = [n for r in v for n in r["lengths"]]
        out[f"{name}_clipped_share"] = round(sum(x >= args.max_completion_length for x in lens) / len(lens), 3)
    out["ratio_step_time"] = round(out["trl_median_step_s"] / out["ours_median_step_s"], 3)
    out["ratio_tok_s"] = round(out["ours_tok_s"] / out["trl_tok_s"], 3)
    out["goal"] = GOAL
    out["goal_met"] = out["ratio_tok_s"] >= GOAL
    out["timed_steps_each"] = args.steps
    out.update({k: info[k] for k in ("torch", "transformers", "peft", "trl", "device")})
    print(json.dumps(out), flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "grpo_speed.json").write_text(json.dumps({**info, **out, "records": recs}, indent=1))
    return 0


def profile_ours(ours: Ours) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ours.one_step()
    return prof.key_averages().table(sort_by="cpu_time_total", row_limit=30, max_name_column_width=60)


if __name__ == "__main__":
    sys.exit(main())
