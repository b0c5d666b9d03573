"""GRPO: reinforcement learning with verifiable rewards, online, in the one loop.

A row is a prompt (the dataset's conversation up to its last answer, rendered with the chat
template) and what the rewards need (``prompt``, ``system``, ``expect``: the dataset's answer,
``think``). Each step, ``rollout`` samples G completions per prompt from the current weights
through the one generation engine (rollout.py), rewards them with the task home's rewards and
turns the rewards into group-normalised advantages. The loss of a completion token t is

    −min(r_t · A, clip(r_t, 1 − ε, 1 + ε_high) · A) + β · r_t · (exp(ref_t − logp_t) − (ref_t − logp_t) − 1)

with r_t = exp(logp_t − old_t) the probability ratio to the policy that sampled the batch (one
update per batch: old = logp detached, so r_t is 1 in value and its gradient is the policy
gradient, as TRL computes it; the r_t on the KL term is TRL's bias correction, on by default),
log-probabilities taken at the sampling temperature, and the reference the policy with its
adapter switched off (``disable_adapter``; see ``attach`` for when a frozen copy is kept). The
sum over the global batch is divided by the objective's count, so the loss does not depend on
how the batch is cut into micro-batches: ``grpo`` — each completion's mean over its tokens,
divided by the completions; ``dr_grpo`` — completions × max_completion_length;
``dapo`` (and ``bnpo``) — the completion tokens of the global batch. tests/train/test_grpo.py
checks the loss and its gradient against TRL's GRPOTrainer.
"""
from __future__ import annotations

import copy

from ...tasks.rewards import build as build_reward
from ..rollout import resample, sample, score
from .base import Objective


class GRPO(Objective):
    name = "grpo"

    def __init__(self):
        self.settings = None
        self.method = "lora"
        self.ref = None      # frozen copy of the starting weights (see attach); None: disable the adapter
        self.engine = None   # made on the first rollout, over the model as it sits on its device
        self.autocast = None  # set by the loop: the dtype the step runs under (the engine samples under it too)
        self.rewards: list = []
        self.decode_rows = 1
        self._takes_keep: bool | None = None  # whether the model's forward takes logits_to_keep
        self.pool: list[dict] = []  # the training prompts, where dynamic sampling draws more

    # ----------------------------------------------------------------------------------- rows
    def prepare(self, cfg, tokenizer):
        self._configure(cfg)
        data = build_prompt_data(cfg, tokenizer)
        self.pool = data[0]
        return data

    def _configure(self, cfg):
        self.settings, self.method = cfg.grpo, cfg.method
        # Rows decoded together: a whole step's completions (capped), fixed by the recipe so a resumed
        # run batches — and so rounds — exactly as the straight run did.
        step_rows = cfg.train.batch_size * cfg.train.grad_accum * cfg.nproc * cfg.grpo.num_generations
        self.decode_rows = max(cfg.grpo.num_generations, min(step_rows, 256))
        self.rewards = [(r.name, r.weight, build_reward(r.name, r.options)) for r in cfg.grpo.rewards]

    def attach(self, model, cfg):
        """With a KL term the reference is the starting policy: the adapter switched off, or — for
        ``method: full`` or an adapter trained further (``adapter:``), where switching it off would
        give the base — a frozen copy of the starting weights (a merge stage before avoids it)."""
        self._configure(cfg)
        if cfg.grpo.beta and (cfg.method == "full" or cfg.adapter):
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)

    def lengths(self, rows):
        return [len(r["prompt_ids"]) for r in rows]

    # -------------------------------------------------------------------------------- rollout
    def rollout(self, model, tokenizer, parts, step, seed):
        from accelerate.utils import extract_model_from_parallel

        from ...infer import Engine

        p = self.settings
        rows = [r for part in parts for r in part]
        inner = extract_model_from_parallel(model)
        if self.engine is None:
            self.engine = Engine(inner, tokenizer, max_batch=self.decode_rows, autocast=self.autocast)
        was_training = inner.training
        inner.eval()  # no dropout while sampling: the policy that is sampled is the one scored
        try:
            completions = sample(self.engine, rows, p, seed, step)
            extra = {}
            if p.dynamic_sample:
                rows, completions, extra = resample(self.engine, rows, completions, self.pool, self.rewards, p,
                                                    seed, step)
        finally:
            inner.train(was_training)
        adv, metrics = score(rows, completions, self.rewards, p.scale_rewards)
        metrics.update(extra)
        items, k = [], 0
        for row, group in zip(rows, completions):
            for c in group:
                items.append({"prompt_ids": row["prompt_ids"], "completion_ids": c["ids"], "advantage": adv[k],
                              "masked": p.mask_truncated_completions and c["truncated"]})
                k += 1
        tokens = max(1, sum(len(i["completion_ids"]) for i in items if not i["masked"]))
        for i in items:
            i["batch_tokens"] = tokens
        out, at = [], 0
        for part in parts:  # each micro-batch keeps its prompts' whole groups
            n = len(part) * p.num_generations
            out.append(items[at:at + n])
            at += n
        return out, metrics

    def count(self, items):
        p = self.settings
        if p.loss_type == "grpo":
            return max(1, len(items))
        if p.loss_type == "dr_grpo":
            return max(1, len(items) * p.max_completion_length)
        return max(1, sum(len(i["completion_ids"]) for i in items if not i["masked"]))

    def collate(self, items, pad_id):
        """Prompts left-padded, completions right-padded (TRL's layout); ``completion_mask`` is 0 on
        padding and on a masked (truncated) completion. An empty list gives one dummy row that
        contributes nothing."""
        import torch

        if not items:
            items = [{"prompt_ids": [pad_id], "completion_ids": [pad_id], "advantage": 0.0, "masked": True,
                      "batch_tokens": 1}]
        pw = max(len(i["prompt_ids"]) for i in items)
        cw = max(len(i["completion_ids"]) for i in items)
        n = len(items)
        batch = {"prompt_ids": torch.full((n, pw), pad_id, dtype=torch.long),
                 "prompt_mask": torch.zeros((n, pw), dtype=torch.long),
                 "completion_ids": torch.full((n, cw), pad_id, dtype=torch.long),
                 "completion_mask": torch.zeros((n, cw), dtype=torch.long),
                 "advantages": torch.tensor([float(i["advantage"]) for i in items]),
                 "batch_tokens": torch.tensor(float(items[0]["batch_tokens"]))}
        for j, i in enumerate(items):
            p, c = i["prompt_ids"], i["completion_ids"]
            batch["prompt_ids"][j, pw - len(p):] = torch.tensor(p)
            batch["prompt_mask"][j, pw - len(p):] = 1
            batch["completion_ids"][j, :len(c)] = torch.tensor(c)
            batch["completion_mask"][j, :len(c)] = 0 if i["masked"] else 1
        return batch

    # ----------------------------------------------------------------------------------- loss
    def logps(self, model, batch):
        """Log-probability of each completion token at the sampling temperature [B, C] (0 on padding)."""
        import torch

        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        width = batch["completion_ids"].shape[1]
        # Positions count real tokens only (as the engine's prefill does), so left padding moves no row.
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, **self._keep(model, width + 1)).logits
        logits = logits[:, -width - 1:-1].float() / self.settings.temperature
        picked = torch.gather(logits, 2, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)
        out = picked - torch.logsumexp(logits, dim=-1)
        return torch.where(batch["completion_mask"].bool(), out, torch.zeros_like(out))

    def _keep(self, model, n: int) -> dict:
        """``logits_to_keep`` where the model's forward takes it: only the completion's logits are made."""
        if self._takes_keep is None:
            import inspect

            from accelerate.utils import extract_model_from_parallel

            inner = extract_model_from_parallel(model)
            base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
            self._takes_keep = "logits_to_keep" in inspect.signature(type(base).forward).parameters
        return {"logits_to_keep": n} if self._takes_keep else {}

    def _reference(self, model, batch):
        import torch
        from accelerate.utils import extract_model_from_parallel

        with torch.no_grad():
            if self.ref is not None:
                if next(self.ref.parameters()).device != batch["prompt_ids"].device:
                    self.ref.to(batch["prompt_ids"].device)
                return self.logps(self.ref, batch)
            with extract_model_from_parallel(model).disable_adapter():
                return self.logps(model, batch)

    def loss(self, model, batch, normaliser):
        import torch

        p = self.settings
        logps = self.logps(model, batch)
        mask = batch["completion_mask"].to(logps.dtype)
        old = batch.get("old_logps")
        old = logps.detach() if old is None else old
        ratio = torch.exp(logps - old)
        clipped = torch.clamp(ratio, 1 - p.epsilon, 1 + (p.epsilon_high or p.epsilon))
        adv = batch["advantages"].to(logps.dtype).unsqueeze(1)
        per_token = -torch.min(ratio * adv, clipped * adv)
        metrics = {}
        if p.beta:
            d = self._reference(model, batch) - logps
            kl = torch.exp(d) - d - 1
            if p.kl_bias_correction:  # the ratio is 1 in value but carries a gradient (TRL's default)
                kl = kl * ratio
            per_token = per_token + p.beta * kl
            metrics["kl"] = (kl * mask).sum().detach() / batch["batch_tokens"]
        if p.loss_type == "grpo":
            total = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum()
        else:
            total = (per_token * mask).sum()
        return total / normaliser, metrics

    def eval_sums(self, model, batch):  # the config refuses val_size for grpo: eval_tasks measures it
        raise NotImplementedError

    def eval_metrics(self, sums):
        raise NotImplementedError


# ------------------------------------------------------------------------------------- data
def build_prompt_data(cfg, tokenizer):
    """``(train, [], report)``: the prompts of the recipe's datasets (chat rows; a row's last answer,
    if any, becomes its ``expect``), rendered with the chat template, mixed like SFT data."""
    from collections import Counter

    from ...data.build import dataset_report, load_checked, say_warnings
    from ...data.mix import mix
    from ...data.types import Conversation, PreferencePair, TextDoc
    from ...errors import UserError
    from ...models.template import ensure_chat_template, template_kwargs

    data = cfg.data
    loaded = load_checked(data, "dataset of prompts")
    for d in loaded:
        if d.rows and isinstance(d.rows[0], (PreferencePair, TextDoc)):
            kind = "preference pairs" if isinstance(d.rows[0], PreferencePair) else "plain text"
            raise UserError(f"dataset '{d.name}' is {kind}: grpo samples answers to prompts (chat or alpaca rows)")
        say_warnings(d)
    ensure_chat_template(tokenizer, data.template, "the model's tokenizer")
    kwargs = template_kwargs(tokenizer, cfg.grpo.enable_thinking)
    rendered, too_long = [], []
    for d in loaded:
        rows, long = [], 0
        for conv in d.rows:
            turns = conv.turns[:-1] if conv.turns and conv.turns[-1].role == "assistant" else conv.turns
            expect = conv.turns[-1].content if len(turns) < len(conv.turns) else None
            users = [t.content for t in turns if t.role == "user"]
            if not users:
                continue
            msgs = Conversation(turns, conv.system, conv.tools).to_messages()
            out = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, **kwargs)
            ids = list(out["input_ids"] if hasattr(out, "keys") else out)
            if len(ids) > data.cutoff_len:
                long += 1
                continue
            rows.append({"prompt_ids": ids, "prompt": users[-1], "system": conv.system, "expect": expect,
                         "think": bool(cfg.grpo.enable_thinking)})
        rendered.append(rows)
        too_long.append(long)
    if not any(rendered):
        raise UserError(f"no prompt fits data.cutoff_len={data.cutoff_len} ({sum(too_long)} too long); raise "
                        "cutoff_len or check the datasets")
    train_idx, _ = mix([len(r) for r in rendered], [d.config.samples for d in loaded],
                       [d.config.ratio for d in loaded], 0.0, data.seed)
    used = Counter(s for s, _ in train_idx)
    report = [dataset_report(d, used[k]) | {"dropped_too_long": too_long[k]} for k, d in enumerate(loaded)]
    return [rendered[s][i] for s, i in train_idx], [], report
