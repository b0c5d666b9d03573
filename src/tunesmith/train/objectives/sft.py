"""Supervised fine-tuning: next-token cross-entropy on the answer tokens (labels ≠ IGNORE).

The loss of a global batch is the sum over its target tokens divided by their count, so it
does not depend on how the batch is cut into micro-batches or processes — nor on whether
rows are packed (``train.packing``, on by default): packed rows keep their own positions,
attend only within themselves and never predict across a boundary, so a packed step has the
same loss and gradients as the padded one (tests/train/test_packing.py)."""
from __future__ import annotations

import inspect

from ...data.render import IGNORE
from ..attention import model_inputs
from ..batching import collate, pack_collate
from .base import Objective


class SFT(Objective):
    name = "sft"
    pack_len: int | None = None  # bin width when packing; None: padded rows
    attention: str = "sdpa"  # how rows are kept apart (train/attention.py); the loop sets the run's choice

    def prepare(self, cfg, tokenizer):
        from ...data import build_sft_data

        if cfg.train.packing is not False:
            self.pack_len = cfg.train.pack_len or cfg.data.cutoff_len
        data = build_sft_data(cfg.data, tokenizer)  # checks the chat template itself (not for plain text)
        return data.train, data.val, data.report

    def lengths(self, rows):
        return [len(r["input_ids"]) for r in rows]

    def count(self, rows):
        # Labels are shifted by one inside the model: the first label never counts.
        return max(1, sum(sum(1 for t in r["labels"][1:] if t != IGNORE) for r in rows))

    def collate(self, rows, pad_id):
        if not self.pack_len:
            return collate(rows, pad_id)
        # The 4-D mask makes packing pay only where it removes much padding; flex and varlen skip
        # the work between rows, so there any bin that saves tokens is worth it.
        return pack_collate(rows, pad_id, self.pack_len, **({} if self.attention == "sdpa" else {"min_gain": 1.0}))

    def loss(self, model, batch, normaliser):
        if batch["labels"].device.type == "cpu" and _keeps_logits_by_mask(model):
            return _answer_logits_loss(model, batch, normaliser, self.attention), {}
        out = model(**_model_inputs(model, batch, self.attention), labels=batch["labels"],
                    num_items_in_batch=normaliser)  # loss = sum over tokens / normaliser
        return out.loss, {}

    def eval_sums(self, model, batch):
        import torch.nn.functional as F

        logits = model(**_model_inputs(model, batch, self.attention)).logits
        logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
        keep = labels != IGNORE
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE,
                               reduction="sum")
        return {"loss": loss, "tokens": keep.sum(), "correct": ((logits.argmax(-1) == labels) & keep).sum()}

    def eval_metrics(self, sums):
        n = max(sums["tokens"], 1.0)
        return {"eval_loss": round(sums["loss"] / n, 6), "eval_acc": round(sums["correct"] / n, 6)}


def _keeps_logits_by_mask(model) -> bool:
    """Whether the causal LM under the wrappers (DDP, peft) takes a boolean ``logits_to_keep``
    mask (transformers' ``slice_logits_to_keep``: only the kept positions reach the output layer)."""
    inner = getattr(model, "module", model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    forward = getattr(inspect.unwrap(type(inner).forward), "__code__", None)  # under transformers' decorators
    return forward is not None and "slice_logits_to_keep" in forward.co_names


def _answer_logits_loss(model, batch, normaliser, attention: str):
    """The same loss as the model's own (sum of the cross-entropy over the target tokens /
    ``normaliser``, in fp32), with the output layer and the cross-entropy run only at the
    positions whose next token is a target: on the CPU the vocabulary-wide logits of the prompt
    tokens were a tenth of a step (issue 24)."""
    import torch
    import torch.nn.functional as F

    targets = batch["labels"][:, 1:]
    keep = torch.zeros_like(batch["labels"], dtype=torch.bool)
    keep[:, :-1] = targets != IGNORE  # position t predicts token t + 1
    logits = model(**_model_inputs(model, batch, attention), logits_to_keep=keep).logits  # [kept, vocab]
    return F.cross_entropy(logits.float(), targets[keep[:, :-1]], reduction="sum") / normaliser


def _model_inputs(model, batch, attention: str) -> dict:
    """input_ids + what keeps rows apart (train/attention.py: the padding mask, or when packed
    position ids + the block-diagonal 4-D mask, a flex BlockMask or varlen boundaries, built
    here on the batch's device, in the model's dtype)."""
    inner = getattr(model, "module", model)  # DDP / FSDP1 wrap the model
    return model_inputs(batch, attention, inner.get_input_embeddings().weight.dtype)
