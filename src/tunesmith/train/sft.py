"""Supervised fine-tuning, LoRA or full: one recipe, read top to bottom.

    train(cfg) → setup(cfg) → fit(run) → finish(run)

The same code runs in one process or many (``--nproc N`` / ``accelerate launch``): data
order is a pure function of (seed, epoch, step), each process takes its slice of every
global batch, and the loss is normalised by the global batch's target-token count, so the
loss curve does not depend on how the batch is split.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import save_config
from ..errors import UserError
from ..fsutil import fix_modes, save_into
from ..manifest import env_info, model_hash, now, read_manifest, write_manifest
from . import batching, checkpoint, sharded
from .config import TrainConfig
from .logs import RunLog


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
    steps_per_epoch: int
    total_steps: int
    manifest: dict
    start_step: int = 0
    log: RunLog | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def train(cfg: TrainConfig) -> int:
    """Run the recipe. Raises UserError for bad data, config or model (nothing half-written)."""
    from ..fsutil import check_writable_dir

    if cfg.output_dir:  # an unwritable run folder is found before any data or model loads
        check_writable_dir(cfg.output_dir, "output_dir")
    else:
        check_writable_dir("runs", "output_dir (default runs/)")
    if cfg.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from .launch import launch

        return launch(cfg)
    run = setup(cfg)
    return fit(run)


# ---------------------------------------------------------------------------------------- setup
def default_run_dir(name: str = "sft") -> str:
    return f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_dir(run_dir: Path, resume: bool | str) -> Path | None:
    """The checkpoint to resume from, if any; refuse to overwrite a finished or started run."""
    last = checkpoint.latest(run_dir)
    if resume is True and last is None:
        raise UserError(f"resume: no checkpoint in {run_dir}/checkpoints to continue from")
    if resume:
        return last
    done = (read_manifest(run_dir) or {}).get("status") == "done"
    if done or last is not None:
        what = "a finished run" if done else "checkpoints"
        raise UserError(f"{run_dir} already holds {what}: pass --resume to continue it, or choose another output_dir")
    return None


def prepare_data(cfg: TrainConfig):
    """Resolve the model, load the tokenizer and build (check + render) the data.
    Everything a user can get wrong fails here, before any folder is made."""
    from ..data import build_sft_data
    from ..models import load_tokenizer, resolve_model
    from ..models.load import is_adapter_dir
    from ..models.template import ensure_chat_template

    model_dir = resolve_model(cfg.model)
    if cfg.adapter and not is_adapter_dir(cfg.adapter):
        raise UserError(f"adapter {cfg.adapter} not found: expected a folder with adapter_config.json")
    tok = load_tokenizer(model_dir, cfg.adapter, cfg.trust_remote_code)
    ensure_chat_template(tok, cfg.data.template, where=str(cfg.model))
    if not cfg.data.datasets:
        raise UserError("data.datasets is empty: name at least one dataset to train on")
    data = build_sft_data(cfg.data, tok)
    return model_dir, tok, data


def setup(cfg: TrainConfig) -> Run:
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, get_scheduler

    from ..models import pick_device, pick_dtype

    device = pick_device(cfg.device)
    accelerator = Accelerator(cpu=device == "cpu")
    model_dir, tok, data = prepare_data(cfg)
    run_dir = Path(cfg.output_dir or default_run_dir())
    resume_from = check_run_dir(run_dir, cfg.resume)
    loop = cfg.train
    world = accelerator.num_processes
    global_batch = loop.batch_size * loop.grad_accum * world
    steps_per_epoch = math.ceil(len(data.train) / global_batch)
    total = loop.max_steps or max(1, math.ceil(loop.epochs * steps_per_epoch))

    parent = cfg.adapter or (str(model_dir) if read_manifest(model_dir) else None)
    manifest = {
        "kind": "sft", "status": "running", "method": cfg.method, "started": now(),
        "base_model": {"spec": cfg.model, "path": str(Path(model_dir).resolve()), "hash": model_hash(model_dir)},
        "adapter_init": cfg.adapter, "parent": parent, "datasets": data.report,
        "rows": {"train": len(data.train), "val": len(data.val)},
        "schedule": {"world_size": world, "distributed": accelerator.distributed_type.value,
                     "global_batch": global_batch, "steps": total,
                     "steps_per_epoch": steps_per_epoch},
        "env": env_info(),
    }
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        save_into(run_dir, tok.save_pretrained)  # the training template travels with the weights
        if not resume_from:
            write_manifest(run_dir, manifest)
    accelerator.wait_for_everyone()

    dtype = pick_dtype(loop.dtype, device)
    torch.manual_seed(loop.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, trust_remote_code=cfg.trust_remote_code,
                                                 use_safetensors=True)
    if loop.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    if cfg.method == "lora":
        model = _apply_lora(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=loop.lr, betas=loop.betas, weight_decay=loop.weight_decay,
                                  fused=device.startswith("cuda"))
    warmup = int(loop.warmup * total) if loop.warmup < 1 else int(loop.warmup)
    kind = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[loop.scheduler]
    scheduler = get_scheduler(kind, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    model, optimizer = accelerator.prepare(model, optimizer)

    run = Run(cfg, run_dir, accelerator, model, tok, optimizer, scheduler, data.train, data.val,
              [len(r["input_ids"]) for r in data.train], steps_per_epoch, total, manifest)
    if resume_from is not None:
        _restore(run, resume_from)
    run.log = RunLog(run_dir, run.start_step, enabled=run.main)
    return run


def _apply_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, PeftModel, get_peft_model

    if cfg.adapter:
        return PeftModel.from_pretrained(model, cfg.adapter, is_trainable=True)
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
    tensors, optim, rng, state = checkpoint.load(path, run.accelerator.process_index)
    import torch

    params = trainable_tensors(run)
    missing = set(params) - set(tensors)
    if missing:
        raise UserError(f"checkpoint {path} does not match this recipe (missing {sorted(missing)[0]}); "
                        "resume with the config the run started with")
    if sharded.is_sharded(run.accelerator):
        sharded.scatter(run.model, run.optimizer, tensors, optim["optimizer"])
    else:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(tensors[n])
        run.optimizer.load_state_dict(optim["optimizer"])
    run.scheduler.load_state_dict(optim["scheduler"])
    if rng is not None:
        checkpoint.set_rng_state(rng)
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
    plans: dict[int, list[list[int]]] = {}
    step, t_last, tokens_since = run.start_step, time.time(), 0
    run.model.train()
    with stop:
        while step < run.total_steps:
            epoch, idx = divmod(step, run.steps_per_epoch)
            if epoch not in plans:
                plans = {epoch: batching.plan_epoch(run.lengths, loop.batch_size * loop.grad_accum * acc.num_processes,
                                                    loop.seed, epoch, loop.group_by_length)}
            batch = plans[epoch][idx]
            loss, grad_norm = _step_or_explain(run, batch, step)
            step += 1
            tokens_since += sum(run.lengths[i] for i in batch)
            if step % loop.log_every == 0 or step == run.total_steps:
                dt = time.time() - t_last
                row = {"step": step, "epoch": round(step / run.steps_per_epoch, 4), "loss": loss,
                       "lr": run.scheduler.get_last_lr()[0], "grad_norm": grad_norm, "tok_s": round(tokens_since / dt, 1)}
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


def _step_or_explain(run: Run, batch: list[int], step: int) -> tuple[float, float]:
    """``train_step``, with running out of GPU memory turned into one line that names the batch
    that did not fit and the three settings that shrink it."""
    import torch

    try:
        return train_step(run, batch)
    except torch.OutOfMemoryError:
        loop, data = run.cfg.train, run.cfg.data
        rows = max(1, len(batch) // (loop.grad_accum * run.accelerator.num_processes))
        tokens = max(run.lengths[i] for i in batch)
        run.optimizer.zero_grad(set_to_none=True)
        if run.log is not None:
            run.log.close()
        raise UserError(f"out of memory at step {step + 1} on a micro-batch of {rows} rows × {tokens} tokens: "
                        f"lower train.batch_size (now {loop.batch_size}; raise train.grad_accum to keep the "
                        f"global batch), lower data.cutoff_len (now {data.cutoff_len}), or set "
                        f"train.gradient_checkpointing=true") from None


def train_step(run: Run, batch: list[int]) -> tuple[float, float]:
    """One optimizer step over one global batch; returns (global mean loss, grad norm)."""
    import torch

    acc, loop = run.accelerator, run.cfg.train
    rows = [run.train_rows[i] for i in batch]
    # Every process knows the whole global batch, so the token count needs no communication.
    n_tokens = max(1, sum(sum(1 for t in r["labels"][1:] if t != batching.IGNORE) for r in rows))
    micro = batching.micro_batches(batch, run.lengths, acc.num_processes, acc.process_index, loop.grad_accum)
    loss_sum = torch.zeros((), device=acc.device)
    for k, part in enumerate(micro):
        inputs = {k2: v.to(acc.device) for k2, v in
                  batching.collate([run.train_rows[i] for i in part], run.tokenizer.pad_token_id).items()}
        sync = k == len(micro) - 1
        with contextlib.nullcontext() if sync else acc.no_sync(run.model):
            out = run.model(**inputs, num_items_in_batch=n_tokens)  # loss = sum over tokens / n_tokens
            # DDP averages gradients over processes; scale so the sum over the global batch survives.
            acc.backward(out.loss * acc.num_processes)
        loss_sum += out.loss.detach().float()
    grad_norm = 0.0
    if loop.max_grad_norm:
        norm = acc.clip_grad_norm_(run.model.parameters(), loop.max_grad_norm)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor under FSDP
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return float(acc.reduce(loss_sum, reduction="sum")), grad_norm


def evaluate(run: Run) -> dict:
    """Loss and next-token accuracy on the val split (each process takes every N-th row)."""
    import torch
    import torch.nn.functional as F

    acc, loop = run.accelerator, run.cfg.train
    mine = run.val_rows[acc.process_index::acc.num_processes]
    totals = torch.zeros(3, dtype=torch.float64, device=acc.device)  # loss sum, tokens, correct
    run.model.eval()
    with torch.no_grad():
        for i in range(0, max(len(mine), 1), loop.batch_size):
            inputs = {k: v.to(acc.device) for k, v in
                      batching.collate(mine[i:i + loop.batch_size], run.tokenizer.pad_token_id).items()}
            logits = run.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            logits, labels = logits[:, :-1].float(), inputs["labels"][:, 1:]
            keep = labels != batching.IGNORE
            totals[0] += F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                         ignore_index=batching.IGNORE, reduction="sum")
            totals[1] += keep.sum()
            totals[2] += ((logits.argmax(-1) == labels) & keep).sum()
    run.model.train()
    totals = acc.reduce(totals, reduction="sum")
    n = max(float(totals[1]), 1.0)
    result = {"eval_loss": round(float(totals[0]) / n, 6), "eval_acc": round(float(totals[2]) / n, 6)}
    run.metrics.update(result)
    return result


def save_checkpoint(run: Run, step: int) -> None:
    acc = run.accelerator
    tmp = run.run_dir / "checkpoints" / f".tmp-{checkpoint.PREFIX}{step:08d}"
    if sharded.is_sharded(acc):  # every process takes part in gathering the shards
        tensors, optim_state = sharded.gather(run.model, run.optimizer)
    else:
        tensors, optim_state = (trainable_tensors(run), run.optimizer.state_dict()) if run.main else ({}, {})
    if run.main:
        checkpoint.begin(run.run_dir, step)
        checkpoint.write_tensors(tmp, tensors, optim_state, run.scheduler)
    acc.wait_for_everyone()
    checkpoint.write_rng(tmp, acc.process_index)
    acc.wait_for_everyone()
    _fault("checkpoint", step)
    if run.main:
        checkpoint.commit(tmp, step, {"metrics": run.metrics}, run.cfg.train.keep_last)
    acc.wait_for_everyone()


# --------------------------------------------------------------------------------------- finish
def finish(run: Run) -> None:
    """Final weights (plain peft adapter or full safetensors), loss plot, manifest."""
    acc = run.accelerator
    acc.wait_for_everyone()
    model = acc.unwrap_model(run.model)
    # Under FSDP the full weights are gathered by every process together; else read directly.
    state = acc.get_state_dict(run.model) if sharded.is_sharded(acc) else None
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
