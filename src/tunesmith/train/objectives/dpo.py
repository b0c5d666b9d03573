"""Preference objectives: DPO (``sigmoid``), IPO and SimPO on (prompt, chosen, rejected) pairs.

A row is one pair: prompt + chosen and prompt + rejected, each rendered by the chat template
with labels on the last (response) turn only. Both halves of a pair go into the same
micro-batch ([chosen…, rejected…] in one forward pass). A response's score is the sum of the
log-probabilities of its label tokens (SimPO and IPO divide by the token count, as their
papers and TRL do). The reference model is the policy with its LoRA adapter switched off
(``disable_adapter``), or for ``method: full`` a frozen copy made once in ``attach`` (it costs
a second set of weights in memory). SimPO has no reference.

The loss of a global batch is the sum over its pairs / the number of pairs in it (``count``),
so accumulation and several processes give the loss one process would; the reward metrics
follow the same rule and the loop logs them. The formulas and metric names follow TRL's
DPOTrainer (sigmoid, ipo) and CPOTrainer (simpo); tests/train/test_dpo.py checks the numbers.
"""
from __future__ import annotations

import copy

from ...data.render import IGNORE
from ..batching import collate
from .base import Objective

METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")


class DPO(Objective):
    name = "dpo"

    def __init__(self):
        self.ref = None  # frozen copy for method: full; None means "disable the adapter"
        self.pref = None

    # ----------------------------------------------------------------------------------- rows
    def prepare(self, cfg, tokenizer):
        self.pref = cfg.pref
        return build_pref_data(cfg.data, tokenizer)

    def lengths(self, rows):
        return [len(r["chosen"]["input_ids"]) + len(r["rejected"]["input_ids"]) for r in rows]

    def count(self, rows):
        return max(1, len(rows))  # pairs: every pair weighs the same whatever its length

    def collate(self, rows, pad_id):
        import torch

        if not rows:  # a dummy pair with no label token and weight 0: this process still runs a pass
            batch = collate([], pad_id)
            batch = {k: torch.cat([v, v]) for k, v in batch.items()}
            batch["pair_weight"] = torch.zeros(1)
            return batch
        batch = collate([r["chosen"] for r in rows] + [r["rejected"] for r in rows], pad_id)
        batch["pair_weight"] = torch.ones(len(rows))
        return batch

    # ----------------------------------------------------------------------------- reference
    def attach(self, model, cfg):
        """method: full → keep a frozen copy of the starting weights as the reference. LoRA and
        QLoRA need nothing: the reference is the same model with the adapter disabled."""
        self.pref = cfg.pref
        if cfg.method == "full" and self.name != "simpo":
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)

    def _reference(self, model, batch):
        import torch
        from accelerate.utils import extract_model_from_parallel

        with torch.no_grad():
            if self.ref is not None:
                device = batch["input_ids"].device
                if next(self.ref.parameters()).device != device:
                    self.ref.to(device)
                return _logps(self.ref, batch)
            inner = extract_model_from_parallel(model)
            with inner.disable_adapter():
                return _logps(model, batch)

    # ----------------------------------------------------------------------------------- loss
    def _pairs(self, model, batch):
        """Per pair: (loss, chosen reward, rejected reward)."""
        import torch.nn.functional as F

        p = self.pref
        logps, n = _logps(model, batch)
        pc, pr = logps.chunk(2)
        nc, nr = n.chunk(2)
        if self.name == "simpo":  # reference-free, length-normalised, target margin gamma (TRL's CPO simpo)
            rc, rr = p.beta * pc / nc, p.beta * pr / nr
            z = rc - rr - p.gamma
            losses = -F.logsigmoid(z) * (1 - p.label_smoothing) - F.logsigmoid(-z) * p.label_smoothing
        else:
            ref, _ = self._reference(model, batch)
            refc, refr = ref.chunk(2)
            lc, lr = pc - refc, pr - refr
            rc, rr = p.beta * lc, p.beta * lr
            if self.name == "ipo":
                # TRL divides IPO's log-ratios by the response length (the IPO authors' form); so do we.
                losses = (lc / nc - lr / nr - 1 / (2 * p.beta)) ** 2
            else:  # label smoothing = conservative DPO (cDPO), as LLaMA-Factory and TRL's CPO write it
                z = p.beta * (lc - lr)
                losses = -F.logsigmoid(z) * (1 - p.label_smoothing) - F.logsigmoid(-z) * p.label_smoothing
        if p.sft_weight:  # LLaMA-Factory's pref_ftx: per-token NLL of the chosen answer
            losses = losses - p.sft_weight * pc / nc
        return losses, rc.detach(), rr.detach()

    def loss(self, model, batch, normaliser):
        losses, rc, rr = self._pairs(model, batch)
        w = batch["pair_weight"].to(losses.dtype)
        metrics = {"rewards/chosen": (rc * w).sum(), "rewards/rejected": (rr * w).sum(),
                   "rewards/accuracies": ((rc > rr).to(w.dtype) * w).sum(), "rewards/margins": ((rc - rr) * w).sum()}
        return (losses * w).sum() / normaliser, {k: v / normaliser for k, v in metrics.items()}

    def eval_sums(self, model, batch):
        losses, rc, rr = self._pairs(model, batch)
        w = batch["pair_weight"].to(losses.dtype)
        return {"loss": (losses * w).sum(), "pairs": w.sum(), "rewards/chosen": (rc * w).sum(),
                "rewards/rejected": (rr * w).sum(), "rewards/accuracies": ((rc > rr).to(w.dtype) * w).sum(),
                "rewards/margins": ((rc - rr) * w).sum()}

    def eval_metrics(self, sums):
        n = max(sums["pairs"], 1.0)
        return {"eval_loss": round(sums["loss"] / n, 6), **{f"eval_{k}": round(sums[k] / n, 6) for k in METRICS}}


class IPO(DPO):
    name = "ipo"


class SimPO(DPO):
    name = "simpo"


def _logps(model, batch):
    """Summed log-probability of the label tokens of each row, and their count (≥ 1)."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE
    picked = torch.gather(logits, 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    per_token = (picked - torch.logsumexp(logits, dim=-1)) * mask
    return per_token.sum(-1), mask.sum(-1).clamp(min=1)


# ------------------------------------------------------------------------------------- data
def build_pref_data(cfg, tokenizer):
    """``(train, val, report)``: preference pairs loaded, checked, rendered and mixed like SFT
    data; each row is ``{"chosen": {input_ids, labels}, "rejected": {…}}``."""
    from collections import Counter

    from ...data.build import dataset_report, load_checked, say_warnings
    from ...data.mix import mix
    from ...data.render import render_many
    from ...data.types import Conversation, PreferencePair
    from ...errors import UserError
    from ...models.template import ensure_chat_template

    loaded = load_checked(cfg, "dataset of preference pairs")
    for d in loaded:
        if d.rows and not isinstance(d.rows[0], PreferencePair):
            raise UserError(f"dataset '{d.name}' has no chosen/rejected answers: preference objectives (dpo, ipo, "
                            "simpo) train on pairs; use objective: sft for it, or make pairs with "
                            "`tunesmith synth preference`")
        say_warnings(d)
    ensure_chat_template(tokenizer, cfg.template, "the model's tokenizer")

    rendered, dropped, template_bad = [], [], []
    for d in loaded:
        convs = [Conversation(p.prompt.turns + [answer], p.prompt.system, p.prompt.tools, p.source or p.prompt.source)
                 for p in d.rows for answer in (p.chosen, p.rejected)]
        # mask_history: only the answer being compared is scored, never an earlier turn of the prompt.
        rows, errors = render_many(convs, tokenizer, cfg.cutoff_len, True, cfg.num_workers)
        if errors and not cfg.drop_bad_rows:
            i, msg = min(errors.items())
            raise UserError(f"{convs[i].source}: template: {msg} (the chat template refuses {len(errors)} "
                            "answers; set data.drop_bad_rows: true to skip their pairs)")
        pairs = [{"chosen": rows[k], "rejected": rows[k + 1]} for k in range(0, len(rows), 2)
                 if rows[k] is not None and rows[k + 1] is not None]
        bad = len({k // 2 for k in errors})
        rendered.append(pairs)
        template_bad.append(bad)
        dropped.append(len(d.rows) - len(pairs) - bad)
    if not any(rendered):
        raise UserError(f"no pair has answer tokens within data.cutoff_len={cfg.cutoff_len} "
                        f"({sum(dropped)} pairs dropped); raise cutoff_len or check the answers")
    train_idx, val_idx = mix([len(r) for r in rendered], [d.config.samples for d in loaded],
                             [d.config.ratio for d in loaded], cfg.val_size, cfg.seed)
    used = Counter(s for s, _ in train_idx + val_idx)
    report = [dataset_report(d, used[k], template_bad[k]) | {"dropped_too_long": dropped[k]} for k, d in enumerate(loaded)]
    return [rendered[s][i] for s, i in train_idx], [rendered[s][i] for s, i in val_idx], report

