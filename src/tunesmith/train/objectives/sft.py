"""Supervised fine-tuning: next-token cross-entropy on the answer tokens (labels ≠ IGNORE).

The loss of a global batch is the sum over its target tokens divided by their count, so it
does not depend on how the batch is cut into micro-batches or processes."""
from __future__ import annotations

from ...data.render import IGNORE
from ..batching import collate
from .base import Objective


class SFT(Objective):
    name = "sft"

    def prepare(self, cfg, tokenizer):
        from ...data import build_sft_data

        data = build_sft_data(cfg.data, tokenizer)  # checks the chat template itself (not for plain text)
        return data.train, data.val, data.report

    def lengths(self, rows):
        return [len(r["input_ids"]) for r in rows]

    def count(self, rows):
        # Labels are shifted by one inside the model: the first label never counts.
        return max(1, sum(sum(1 for t in r["labels"][1:] if t != IGNORE) for r in rows))

    def collate(self, rows, pad_id):
        return collate(rows, pad_id)

    def loss(self, model, batch, normaliser):
        out = model(**batch, num_items_in_batch=normaliser)  # loss = sum over tokens / normaliser
        return out.loss, {}

    def eval_sums(self, model, batch):
        import torch.nn.functional as F

        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
        keep = labels != IGNORE
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE,
                               reduction="sum")
        return {"loss": loss, "tokens": keep.sum(), "correct": ((logits.argmax(-1) == labels) & keep).sum()}

    def eval_metrics(self, sums):
        n = max(sums["tokens"], 1.0)
        return {"eval_loss": round(sums["loss"] / n, 6), "eval_acc": round(sums["correct"] / n, 6)}
