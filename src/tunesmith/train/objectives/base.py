"""What an objective supplies to the one training loop (train/loop.py).

The loop owns everything that does not depend on what is learned: setup, data order,
micro-batches, gradient accumulation, clipping, schedule, checkpoints, logs, the eval hook
and distribution. An objective owns the rows: how they are built, how long each is (for
batching), how a global batch is normalised, how rows become tensors, and how tensors
become a loss. SFT is the first; DPO (pairs of chosen/rejected in one row, a reference
model = the adapter disabled, reward metrics) fits the same five methods.

An online objective (GRPO) builds its batch inside the step, from the live model: ``rollout``
turns the step's rows (prompts) into the items that ``count``, ``collate`` and ``loss`` then see
(completions sampled from the current weights, rewarded, with their advantages). Offline
objectives keep the default, which hands the rows on unchanged.
"""
from __future__ import annotations

from typing import Any


class Objective:
    """One training objective. Methods take plain rows (dicts) and torch tensors; none of them
    knows about processes, accumulation or the optimizer."""

    name: str = ""  # the recipe's ``objective`` value, the manifest's ``kind`` and the default run-folder prefix

    def prepare(self, cfg, tokenizer) -> tuple[list[dict], list[dict], list[dict]]:
        """``(train_rows, val_rows, report)`` from the recipe's data section. Everything a user can get
        wrong in the data fails here (UserError), before a folder is made or a model loads."""
        raise NotImplementedError

    def attach(self, model, cfg) -> None:
        """Called once by the loop after the model is built (LoRA applied), before it is
        distributed: an objective that needs more than the model (DPO's frozen reference for
        method: full) keeps it here. Most need nothing."""

    def rollout(self, model, tokenizer, parts: list[list[dict]], step: int, seed: int
                ) -> tuple[list[list[dict]], dict[str, float]]:
        """Called by the loop at the start of every optimizer step with the step's micro-batches of
        rows (every process gets the whole global batch); returns the micro-batches of items that
        ``count``, ``collate`` and ``loss`` see, and metrics of the whole batch for the step's log
        line. Anything random must be a function of (``seed``, ``step``), so a resumed run builds the
        same batch. Offline objectives: the rows as they are, no metrics."""
        return parts, {}

    def lengths(self, rows: list[dict]) -> list[int]:
        """Tokens each row costs: the loop batches similar lengths together and reports tokens/s."""
        raise NotImplementedError

    def count(self, rows: list[dict]) -> float:
        """The normaliser of one global batch (every process sees the whole batch, so no
        communication is needed): the loss of the batch is sum over items / count."""
        raise NotImplementedError

    def collate(self, rows: list[dict], pad_id: int) -> dict[str, Any]:
        """Tensors of one micro-batch (on CPU). An empty row list must still give a batch that
        contributes nothing, so every process runs the same number of passes."""
        raise NotImplementedError

    def loss(self, model, batch: dict[str, Any], normaliser: float) -> tuple[Any, dict[str, Any]]:
        """``(loss, metrics)`` of one micro-batch as its share of the global batch: sum over its
        items / ``normaliser``. Metrics (scalar tensors) follow the same rule, so the loop adds
        micro-batches and processes up to the global mean."""
        raise NotImplementedError

    def eval_sums(self, model, batch: dict[str, Any]) -> dict[str, Any]:
        """Scalar tensors to be summed over every val batch of every process (the loop runs the
        model in eval mode under no_grad and does the summing)."""
        raise NotImplementedError

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """The eval metrics (``eval_…``) from the summed ``eval_sums``."""
        raise NotImplementedError
