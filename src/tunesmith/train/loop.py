"""The one training loop, LoRA or full, for every objective: read top to bottom.

    setup(cfg) → fit(run) → finish(run)         (entry point: ``train`` in train/__init__.py)
                   └ step.py: one optimizer step, the eval pass

The loop owns setup, data order, accumulation, clipping, schedule, checkpoint/resume, logs
and plots, the eval hook and distribution; the objective (objectives/) owns how rows become
batches and how a batch becomes a loss. The same code runs in one process or many
(``--nproc N`` / ``accelerate launch``): data order is a pure function of (seed, epoch,
step), each process takes its micro-batches of every step (by rows, or by a token budget),
and the loss is normalised by the objective's count over the whole global batch, so the loss
curve does not depend on how the batch is split — nor on packing (objectives/sft.py).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fsutil import fix_modes, save_config, save_into
from ..manifest import env_info, model_hash, now, read_manifest, write_manifest
# Named imports, not ``from . import x``: this module must not depend on the package
# (train/__init__.py imports it to run a recipe).
from .attention import head_width, implementation, resolve_attention
from .batching import DataPlan
from .checkpoint import PREFIX, begin, commit, set_rng_state, write_rng, write_tensors
from .checkpoint import load as load_checkpoint
from .config import TrainConfig
from .cpu import fast_lora_dropout, has_amx, precast_frozen, use_fp32_attention
from .kernels import compile_layers, patch_model, recompute_mlp_product, resolve_kernels, share_lora_inputs
from .logs import RunLog
from .objectives import Objective
from .prepare import check_run_dir, prepare_data
from .qlora import bnb, host_embeddings, load_4bit
from .sharded import gather, is_sharded, scatter
from .step import evaluate, step_or_explain


@dataclass
class Run:
    cfg: TrainConfig
    run_dir: Path
    accelerator: Any
    model: Any
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    train_rows: list[dict]
    val_rows: list[dict]
    lengths: list[int]
    plan: DataPlan
    steps_per_epoch: int
    total_steps: int
    manifest: dict
    objective: Objective
    start_step: int = 0
    autocast: bool = False  # bf16 autocast around the loss: fp32 LoRA weights, bf16 matmuls
    log: RunLog | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


# ---------------------------------------------------------------------------------------- setup
def setup(cfg: TrainConfig) -> Run:
    import torch
    from accelerate import Accelerator
    from transformers import AutoConfig, AutoModelForCausalLM, get_scheduler

    from ..models import pick_device, pick_dtype

    device = pick_device(cfg.device)
    if cfg.method == "qlora" and not device.startswith("cuda"):  # before any data or model work
        raise UserError("qlora needs a CUDA GPU with bitsandbytes; use method: lora on CPU")
    accelerator = Accelerator(cpu=device == "cpu")
    model_dir, tok, objective, (train_rows, val_rows, report) = prepare_data(cfg)
    from ..registry import run_folder

    run_dir = Path(cfg.output_dir or run_folder("train", cfg))
    resume_from = check_run_dir(run_dir, cfg.resume)
    loop = cfg.train
    world = accelerator.num_processes
    global_batch = None if loop.batch_tokens else loop.batch_size * loop.grad_accum * world
    lengths = objective.lengths(train_rows)
    packed = bool(getattr(objective, "pack_len", None))
    plan = DataPlan(lengths, seed=loop.seed, group_by_length=loop.group_by_length, world=world,
                    accum=loop.grad_accum, batch_size=loop.batch_size, batch_tokens=loop.batch_tokens, packed=packed)
    steps_per_epoch, total = plan.steps_in(0), loop.max_steps or plan.total(loop.epochs)
    model_cfg = AutoConfig.from_pretrained(model_dir, trust_remote_code=cfg.trust_remote_code)
    kernels = resolve_kernels(loop.kernels, device, model_cfg.model_type)
    dtype = pick_dtype(cfg.dtype, device)
    attention = resolve_attention(loop.attention, device, dtype == torch.bfloat16, packed, head_width(model_cfg))
    if hasattr(objective, "attention"):
        objective.attention = attention
    # bf16 autocast on a CPU with AMX (train/cpu.py): by default for a LoRA over an fp32 model, as on CUDA —
    # fp32 weights that train, matmuls in bf16 (1.75x a plain HF+PEFT loop where fp32 is 1.08x; the identity
    # demo's figures unchanged: docs/benchmarks.md, issue 24). A CPU without AMX stays fp32 (no bf16 matrix units).
    # An online objective (GRPO) samples under the same autocast (its engine is told, below).
    cpu_bf16 = device == "cpu" and (loop.autocast == "bf16" or (
        loop.autocast == "auto" and cfg.method == "lora" and dtype == torch.float32 and has_amx()))

    parent = cfg.adapter or (str(model_dir) if read_manifest(model_dir) else None)
    manifest = {
        "kind": objective.name, "status": "running", "method": cfg.method, "started": now(),
        "base_model": {"spec": cfg.model, "path": str(Path(model_dir).resolve()), "hash": model_hash(model_dir)},
        "adapter_init": cfg.adapter, "parent": parent, "datasets": report,
        "rows": {"train": len(train_rows), "val": len(val_rows)},
        "schedule": {"world_size": world, "distributed": accelerator.distributed_type.value,
                     "global_batch": global_batch, "batch_tokens": loop.batch_tokens, "steps": total,
                     "steps_per_epoch": steps_per_epoch, "packing": packed, "kernels": kernels,
                     "attention": attention, "compile": loop.compile,
                     "gradient_checkpointing": loop.gradient_checkpointing},
        "env": env_info(),
    }
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        save_into(run_dir, tok.save_pretrained)  # the training template travels with the weights
        if not resume_from:
            write_manifest(run_dir, manifest)
    accelerator.wait_for_everyone()

    torch.manual_seed(loop.seed)
    if cfg.method == "qlora":
        model = load_4bit(model_dir, cfg, accelerator.local_process_index)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, trust_remote_code=cfg.trust_remote_code,
                                                     use_safetensors=True)
    if implementation(attention):  # transformers' public switch (flex_attention, or our registered varlen)
        model.set_attn_implementation(implementation(attention))
    elif cpu_bf16:  # torch's bf16 flash attention for CPU is slow in backward: attention in fp32
        use_fp32_attention(model)
    if loop.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    patch_model(model, kernels, loop.compile)  # on the plain transformers model, before LoRA wraps it
    if cfg.method in ("lora", "qlora"):
        model = _apply_lora(model, cfg)
    objective.attach(model, cfg)  # e.g. DPO's frozen reference for method: full
    if cpu_bf16:  # the bf16 path only (a CPU without AMX keeps torch's dropout and fp32 weights): frozen
        fast_lora_dropout(model)  # weights held in bf16, so the model runs only under autocast (step, evaluate, rollouts)
        precast_frozen(model, torch.bfloat16)
    if loop.compile:
        compile_layers(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if loop.optim == "paged_adamw_8bit":  # bitsandbytes is optional: imported only when asked for
        optimizer = bnb().optim.PagedAdamW8bit(params, lr=loop.lr, betas=loop.betas, weight_decay=loop.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=loop.lr, betas=loop.betas, weight_decay=loop.weight_decay,
                                      fused=device.startswith("cuda"))
    warmup = int(loop.warmup * total) if loop.warmup < 1 else int(loop.warmup)
    kind = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[loop.scheduler]
    scheduler = get_scheduler(kind, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    model, optimizer = accelerator.prepare(model, optimizer)
    # QLoRA is the memory method: its frozen, untied input embedding waits in CPU memory (qlora.py);
    # after prepare, which would move it back to the GPU. One process only (DDP holds its parameters' devices).
    embeddings_on_cpu = cfg.method == "qlora" and world == 1 and host_embeddings(model)

    run = Run(cfg, run_dir, accelerator, model, tok, optimizer, scheduler, train_rows, val_rows,
              lengths, plan, steps_per_epoch, total, manifest, objective)
    # peft keeps adapters in fp32, so without autocast each LoRA matmul runs in fp32 (H100
    # profile: ~29% of a step in fp32 GEMMs); autocast runs them in bf16 with fp32 weights.
    run.autocast = loop.autocast == "bf16" or cpu_bf16 or (
        loop.autocast == "auto" and device.startswith("cuda") and dtype == torch.bfloat16
        and not is_sharded(accelerator) and any(p.dtype == torch.float32 for p in params))
    manifest["schedule"]["autocast"] = "bf16" if run.autocast else "off"
    manifest["schedule"]["embeddings"] = "cpu" if embeddings_on_cpu else "device"
    if hasattr(objective, "autocast"):  # an online objective's rollouts run the model too
        objective.autocast = torch.bfloat16 if run.autocast else None
    if run.autocast and cfg.method == "lora":  # the step, evaluation and rollouts run under autocast
        share_lora_inputs(model)  # no second bf16 copy of each adapted projection's input (kernels.py)
    recompute = loop.mlp_recompute and not is_sharded(accelerator)  # the config refuses the other combinations
    manifest["schedule"]["mlp_recompute"] = bool(recompute and recompute_mlp_product(model))
    if run.main:
        print(settings_line(cfg, device, dtype, manifest["schedule"]), flush=True)
        if not resume_from:
            write_manifest(run_dir, manifest)
    if resume_from is not None:
        _restore(run, resume_from)
    run.log = RunLog(run_dir, run.start_step, enabled=run.main)
    return run


def settings_line(cfg: TrainConfig, device: str, dtype, schedule: dict) -> str:
    """The run's first line: what runs and which speed settings are on (also in the manifest)."""
    on = {True: "on", False: "off"}
    packing = f"on ({cfg.train.pack_len or cfg.data.cutoff_len}-token bins)" if schedule["packing"] else "off"
    return (f"train: {cfg.objective} {cfg.method} on {device} {str(dtype).removeprefix('torch.')} | kernels "
            f"{schedule['kernels']} | attention {schedule['attention']} | compile {on[schedule['compile']]} | "
            f"packing {packing} | checkpointing {on.get(schedule['gradient_checkpointing'], 'offload')} | "
            f"autocast {schedule['autocast']} | mlp recompute {on[schedule['mlp_recompute']]}"
            + (" | input embeddings in CPU memory" if schedule.get("embeddings") == "cpu" else ""))


def _apply_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    if cfg.adapter:  # an adapter of another base is one line (the shape check chat and predict make)
        from ..models.load import apply_adapter

        return apply_adapter(model, Path(cfg.adapter), Path(cfg.model), is_trainable=True)
    lc = cfg.lora
    targets = "all-linear" if lc.target_modules == ["all-linear"] else lc.target_modules
    config = LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=targets,
                        use_dora=lc.use_dora, use_rslora=lc.use_rslora, modules_to_save=lc.modules_to_save or None,
                        task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as e:  # e.g. target modules that the model does not have
        raise UserError(f"lora: {str(e).splitlines()[0]}") from None


def trainable_tensors(run: Run) -> dict:
    model = run.accelerator.unwrap_model(run.model)
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _restore(run: Run, path: Path) -> None:
    tensors, optim, rng, state = load_checkpoint(path, run.accelerator.process_index)
    import torch

    params = trainable_tensors(run)
    missing = set(params) - set(tensors)
    if missing:
        raise UserError(f"checkpoint {path} does not match this recipe (missing {sorted(missing)[0]}); "
                        "resume with the config the run started with")
    if is_sharded(run.accelerator):
        scatter(run.model, run.optimizer, tensors, optim["optimizer"])
    else:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(tensors[n])
        run.optimizer.load_state_dict(optim["optimizer"])
    run.scheduler.load_state_dict(optim["scheduler"])
    if rng is not None:
        set_rng_state(rng)
    run.start_step = state["step"]
    run.metrics = state.get("metrics", {})
    if run.main:
        print(f"resuming {run.run_dir} from step {run.start_step}")


# ------------------------------------------------------------------------------------------ fit
def fit(run: Run) -> int:
    from tqdm import tqdm

    cfg, acc, loop = run.cfg, run.accelerator, run.cfg.train
    stop = _GracefulStop()
    bar = tqdm(total=run.total_steps, initial=run.start_step, disable=not (run.main and cfg.progress),
               unit="step", dynamic_ncols=True)
    step, t_last, tokens_since = run.start_step, time.time(), 0
    run.model.train()
    with stop:
        while step < run.total_steps:
            epoch, micro = run.plan.step(step)
            loss, grad_norm, extra = step_or_explain(run, micro, step)
            step += 1
            tokens_since += sum(run.lengths[i] for part in micro for i in part)
            if step % loop.log_every == 0 or step == run.total_steps:
                dt = time.time() - t_last
                row = {"step": step, "epoch": round(epoch, 4), "loss": loss,
                       "lr": run.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                       "tok_s": round(tokens_since / dt, 1), **extra}
                if acc.device.type == "cuda":
                    import torch

                    row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                run.log.log(row)
                run.metrics["train_loss"] = loss
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tok_s']:.0f}")
                t_last, tokens_since = time.time(), 0
            if run.val_rows and loop.eval_every and step % loop.eval_every == 0 and step < run.total_steps:
                run.log.log({"step": step, **evaluate(run)})
            if (loop.save_every and step % loop.save_every == 0) or stop.requested:
                save_checkpoint(run, step)
            _fault("step", step)
            bar.update(1)
            if stop.requested:
                bar.close()
                if run.main:
                    print(f"interrupted: checkpoint saved at step {step}; rerun with --resume to continue")
                run.log.close()
                return 130
    bar.close()
    if run.val_rows:
        run.log.log({"step": step, **evaluate(run)})
    save_checkpoint(run, step)
    finish(run)
    return 0


def save_checkpoint(run: Run, step: int) -> None:
    acc = run.accelerator
    tmp = run.run_dir / "checkpoints" / f".tmp-{PREFIX}{step:08d}"
    if is_sharded(acc):  # every process takes part in gathering the shards
        tensors, optim_state = gather(run.model, run.optimizer)
    else:
        tensors, optim_state = (trainable_tensors(run), run.optimizer.state_dict()) if run.main else ({}, {})
    if run.main:
        begin(run.run_dir, step)
        write_tensors(tmp, tensors, optim_state, run.scheduler)
    acc.wait_for_everyone()
    write_rng(tmp, acc.process_index)
    acc.wait_for_everyone()
    _fault("checkpoint", step)
    if run.main:
        commit(tmp, step, {"metrics": run.metrics}, run.cfg.train.keep_last)
    acc.wait_for_everyone()


# --------------------------------------------------------------------------------------- finish
def finish(run: Run) -> None:
    """Final weights (plain peft adapter or full safetensors), loss plot, manifest."""
    acc = run.accelerator
    acc.wait_for_everyone()
    model = acc.unwrap_model(run.model)
    # Under FSDP the full weights are gathered by every process together; else read directly.
    state = acc.get_state_dict(run.model) if is_sharded(acc) else None
    if run.main:
        tmp = run.run_dir / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True, **({"state_dict": state} if state is not None else {}))
        fix_modes(tmp)  # safetensors writes 0600; the run's files follow the umask like the rest
        for f in tmp.iterdir():  # move whole files in: a reader never sees a half-written weight file
            f.replace(run.run_dir / f.name)
        tmp.rmdir()
        run.log.close()
        m = read_manifest(run.run_dir) or run.manifest
        m.update(status="done", finished=now(), steps=run.total_steps, metrics=run.metrics,
                 datasets=run.manifest["datasets"])
        write_manifest(run.run_dir, m)
        summary = ", ".join(f"{k} {v:.4f}" for k, v in run.metrics.items() if isinstance(v, float))
        print(f"done: {run.run_dir} ({summary})")
    acc.wait_for_everyone()
    acc.end_training()


def _fault(where: str, step: int) -> None:
    """Crash-test hook: ``TUNESMITH_FAULT=step:5`` SIGKILLs this process after step 5,
    ``checkpoint:5`` halfway through writing checkpoint 5 (tests prove resume survives both)."""
    if os.environ.get("TUNESMITH_FAULT") == f"{where}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


class _GracefulStop:
    """First Ctrl-C asks the loop to checkpoint and stop at the end of the step; a second one
    interrupts at once."""

    def __init__(self):
        self.requested = False
        self._old = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        with contextlib.suppress(ValueError):  # not the main thread: keep the default behaviour
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
