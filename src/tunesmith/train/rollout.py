"""GRPO's batch, built inside the step: prompts in, G completions per prompt sampled from the
current weights through the one generation engine (the adapter live, no copy of the model),
rewards from the task home (tasks/rewards.py), then group-normalised advantages — the numbers
TRL's GRPOTrainer computes (``_generate_and_score_completions``).

Sampling is a function of (seed, step, prompt): the G rows of prompt k in step s draw with the
engine seeds ``prompt_seed(seed, s, k) + i``, so a resumed run — the same weights, restored from
the checkpoint — draws the same completions, and the run stays bit-identical.
"""
from __future__ import annotations

import hashlib
import math
import queue
from collections.abc import Callable


def prompt_seed(seed: int, step: int, k: int, draw: int = 0) -> int:
    """The engine seed of prompt ``k`` of ``step`` (row i of its group uses this + i); ``draw`` > 0:
    the prompts dynamic sampling adds in its round ``draw``."""
    tail = f":{draw}" if draw else ""
    return int(hashlib.sha256(f"grpo:{seed}:{step}:{k}{tail}".encode()).hexdigest()[:12], 16)


def sample(engine, rows: list[dict], settings, seed: int, step: int, draw: int = 0) -> list[list[dict]]:
    """For each row, ``num_generations`` completions, decoded together by the engine:
    ``{"ids", "text", "truncated"}``. ``ids`` end with the end-of-turn token when the row stopped
    (the engine leaves it out of its events; the template's first end-of-turn token is the one put
    back), and a row cut at ``max_completion_length`` is ``truncated``."""
    from ..infer import GenParams, Job

    p, g = settings, settings.num_generations
    params = GenParams(max_new_tokens=p.max_completion_length, temperature=p.temperature, top_p=p.top_p,
                       top_k=p.top_k)
    events: queue.Queue = queue.Queue()
    jobs = [Job(r["prompt_ids"], params.model_copy(update={"seed": prompt_seed(seed, step, k, draw)}), n=g, events=events,
                stream=False) for k, r in enumerate(rows)]
    where = {id(j): k for k, j in enumerate(jobs)}
    out: list[list[dict | None]] = [[None] * g for _ in rows]
    engine.submit(*jobs, bounded=False)
    try:
        for _ in range(len(jobs) * g):  # a row that is not streamed sends one event, when it ends
            ev = events.get()
            if ev.finish == "error":
                raise RuntimeError(f"grpo: generation failed: {ev.text}")
            stopped = ev.finish == "stop"
            out[where[id(ev.job)]][ev.index] = {"ids": list(ev.ids) + ([engine.stop_ids[0]] if stopped else []),
                                                "text": ev.text.strip(), "truncated": not stopped}
    finally:
        for j in jobs:
            j.cancel()
    return out  # type: ignore[return-value]


def nanstd(x, dim=None):
    """Standard deviation ignoring NaNs, with Bessel's correction (NaN below two values), as TRL's."""
    import torch

    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(x), dim=dim, keepdim=True)
    var = var * torch.where(count > 1, count / (count - 1), torch.full_like(var, float("nan")))
    std = torch.sqrt(var)
    return std.squeeze(dim) if dim is not None else std.reshape(())


def advantages(per_reward, weights, group: int, scale: str):
    """``(advantages, rewards, zero_std)`` of completions in groups of ``group`` consecutive rows:
    ``per_reward`` [N, R] (NaN where a reward does not apply), ``weights`` [R]. The reward is the
    weighted sum of those that apply (NaN when none does: such a completion gets advantage 0);
    advantage = reward − its group's mean, divided by the std of the group (``group``), of the whole
    batch (``batch``) or not (``none``) plus 1e-4."""
    import torch

    unscorable = torch.isnan(per_reward).all(dim=1)
    rewards = (per_reward * weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = float("nan")
    mean = torch.nanmean(rewards.view(-1, group), dim=1).repeat_interleave(group)
    if scale == "batch":
        std = nanstd(rewards).expand_as(rewards)
    else:
        std = nanstd(rewards.view(-1, group), dim=1).repeat_interleave(group)
    adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    zero = torch.isclose(std, torch.zeros_like(std))
    return torch.nan_to_num(adv, nan=0.0), rewards, zero


def score(rows: list[dict], completions: list[list[dict]], rewards: list[tuple[str, float, Callable]],
          scale: str) -> tuple[list[float], dict]:
    """Advantages of every completion (prompt by prompt, G each) and the batch's metrics: reward
    mean/std (the weighted sum, then each reward), the share of groups whose rewards are all equal
    (no learning signal), completion length mean and the share cut at the length limit."""
    import torch

    group = len(completions[0])
    flat = [(r, c) for r, cs in zip(rows, completions) for c in cs]
    per = torch.tensor([[math.nan if (v := fn(c["text"], r)) is None else float(v) for _, _, fn in rewards]
                        for r, c in flat], dtype=torch.float32)
    weights = torch.tensor([w for _, w, _ in rewards], dtype=torch.float32)
    adv, total, zero = advantages(per, weights, group, scale)

    def num(t) -> float | None:
        v = float(t)
        return None if math.isnan(v) else round(v, 6)

    metrics = {"reward": num(torch.nanmean(total)), "reward_std": num(nanstd(total))}
    names = [n for n, _, _ in rewards]
    for j, name in enumerate(names):
        key = name if names.count(name) == 1 else f"{name}{j}"
        metrics[f"rewards/{key}/mean"] = num(torch.nanmean(per[:, j]))
        metrics[f"rewards/{key}/std"] = num(nanstd(per[:, j]))
    lengths = [len(c["ids"]) for _, c in flat]
    metrics.update({"frac_reward_zero_std": num(zero.float().mean()),
                    "completions/mean_length": round(sum(lengths) / len(lengths), 4),
                    "completions/clipped_ratio": round(sum(c["truncated"] for _, c in flat) / len(flat), 4)})
    return adv.tolist(), metrics


def resample(engine, rows: list[dict], completions: list[list[dict]], pool: list[dict], rewards, settings,
             seed: int, step: int) -> tuple[list[dict], list[list[dict]], dict]:
    """DAPO's dynamic sampling: a group whose rewards are all equal teaches nothing, so up to
    ``max_resample_times`` rounds draw as many other prompts from ``pool`` (the training prompts) and
    their groups that do differ take those places, in order. The draw is a function of (seed, step,
    round, the step's first prompt), so a resumed run — and each process of a distributed one —
    draws as the straight run did."""
    import random

    def dead(rs, cs) -> list[int]:
        adv, _ = score(rs, cs, rewards, settings.scale_rewards)
        g = settings.num_generations
        return [k for k in range(len(rs)) if not any(adv[k * g:(k + 1) * g])]

    rows, completions = list(rows), list(completions)
    empty = dead(rows, completions)
    metrics = {"dynamic/frac_zero_std_sampled": round(len(empty) / len(rows), 4), "dynamic/replaced": 0,
               "dynamic/extra_prompts": 0}
    for draw in range(1, settings.max_resample_times + 1):
        if not empty or not pool:
            break
        key = hashlib.sha256(f"{seed}:{step}:{draw}:{rows[0]['prompt_ids']}".encode()).hexdigest()
        picked = random.Random(key).sample(range(len(pool)), min(len(empty), len(pool)))
        extra = [pool[i] for i in picked]
        got = sample(engine, extra, settings, seed, step, draw)
        metrics["dynamic/extra_prompts"] += len(extra)
        useless = set(dead(extra, got))
        for j in range(len(extra)):
            if j not in useless and empty:
                k = empty.pop(0)
                rows[k], completions[k] = extra[j], got[j]
                metrics["dynamic/replaced"] += 1
    return rows, completions, metrics
