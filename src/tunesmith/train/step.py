"""One optimizer step and one evaluation pass of the training loop (train/loop.py), over a ``Run``.

A step takes one global batch (``world × accum`` micro-batches, micro-batch m on rank
m % world), normalises the loss by the objective's count over the whole batch — so the curve
does not depend on how the batch is split — accumulates, clips and steps; running out of GPU
memory becomes one line naming the batch that did not fit. Evaluation gives each process every
N-th validation row and sums the objective's metrics over all processes.
"""
from __future__ import annotations

import contextlib

from ..errors import UserError
from .batching import oom_message


def step_or_explain(run, step_micro: list[list[int]], step: int) -> tuple[float, float, dict]:
    """``train_step``, with running out of GPU memory turned into one line that names the batch
    that did not fit and the settings that shrink it."""
    import torch

    try:
        return train_step(run, step_micro, step)
    except torch.OutOfMemoryError:
        biggest = max(step_micro, key=lambda part: sum(run.lengths[i] for i in part))
        tokens = max((run.lengths[i] for i in biggest), default=0)
        run.optimizer.zero_grad(set_to_none=True)
        if run.log is not None:
            run.log.close()
        raise UserError(oom_message(step, len(biggest), tokens, run.cfg.train, run.cfg.data.cutoff_len)) from None


def train_step(run, step_micro: list[list[int]], step: int = 0) -> tuple[float, float, dict]:
    """One optimizer step over one global batch (``world × accum`` micro-batches, micro-batch m
    on rank m % world); returns (global mean loss, grad norm, the objective's metrics as
    global means). An online objective first builds the batch from the live model (``rollout``)."""
    import torch

    acc, loop, obj = run.accelerator, run.cfg.train, run.objective
    parts, batch_metrics = obj.rollout(run.model, run.tokenizer, [[run.train_rows[i] for i in part]
                                                                  for part in step_micro], step, loop.seed)
    # Every process knows the whole global batch, so the normaliser needs no communication.
    normaliser = obj.count([row for part in parts for row in part])
    micro = parts[acc.process_index::acc.num_processes]
    loss_sum = torch.zeros((), device=acc.device)
    metric_sums: dict = {}
    for k, part in enumerate(micro):
        inputs = {k2: v.to(acc.device) for k2, v in obj.collate(part, run.tokenizer.pad_token_id).items()}
        sync = k == len(micro) - 1
        cast = torch.autocast(acc.device.type, dtype=torch.bfloat16) if run.autocast else contextlib.nullcontext()
        with contextlib.nullcontext() if sync else acc.no_sync(run.model), cast:
            with offload(run):
                loss, metrics = obj.loss(run.model, inputs, normaliser)  # this micro-batch's share of the mean
            # DDP averages gradients over processes; scale so the sum over the global batch survives.
            acc.backward(loss * acc.num_processes)
        loss_sum += loss.detach().float()
        for name, v in metrics.items():
            metric_sums[name] = metric_sums.get(name, 0) + v.detach().double()
    grad_norm = 0.0
    if loop.max_grad_norm:
        norm = acc.clip_grad_norm_(run.model.parameters(), loop.max_grad_norm)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor under FSDP
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return float(acc.reduce(loss_sum, reduction="sum")), grad_norm, {**reduce_sums(acc, metric_sums), **batch_metrics}


def offload(run):
    """``gradient_checkpointing: offload``: what the forward keeps for the backward goes to pinned CPU
    memory (torch's ``save_on_cpu``) and comes back when the backward needs it. Under non-reentrant
    checkpointing that is each layer's input (the recomputation inside the backward keeps its own on
    the GPU), plus what the loss head keeps: the memory that grows with layers x tokens."""
    import torch

    if run.cfg.train.gradient_checkpointing == "offload" and run.accelerator.device.type == "cuda":
        return torch.autograd.graph.save_on_cpu(pin_memory=True)  # on a CPU run there is nowhere to offload to
    return contextlib.nullcontext()


def reduce_sums(acc, sums: dict) -> dict[str, float]:
    """Per-process sums of scalar tensors → totals over every process (one collective call;
    every process holds the same keys because every process runs the same objective)."""
    import torch

    if not sums:
        return {}
    names = sorted(sums)
    totals = acc.reduce(torch.stack([torch.as_tensor(sums[n], dtype=torch.float64, device=acc.device)
                                     for n in names]), reduction="sum")
    return {n: float(t) for n, t in zip(names, totals)}


def evaluate(run) -> dict:
    """The objective's eval metrics on the val split (each process takes every N-th row)."""
    import torch

    acc, loop, obj = run.accelerator, run.cfg.train, run.objective
    mine = run.val_rows[acc.process_index::acc.num_processes]
    sums: dict = {}
    run.model.eval()
    cast = torch.autocast(acc.device.type, dtype=torch.bfloat16) if run.autocast else contextlib.nullcontext()
    with torch.no_grad(), cast:  # as in training (on a CPU the frozen weights may be bf16: train/cpu.py)
        # An empty share still runs one (dummy) batch, so every process joins the same collectives.
        for i in range(0, max(len(mine), 1), loop.batch_size):
            inputs = {k: v.to(acc.device) for k, v in
                      obj.collate(mine[i:i + loop.batch_size], run.tokenizer.pad_token_id).items()}
            for name, v in obj.eval_sums(run.model, inputs).items():
                sums[name] = sums.get(name, 0) + v.double()
    run.model.train()
    result = obj.eval_metrics(reduce_sums(acc, sums))
    run.metrics.update(result)
    return result
