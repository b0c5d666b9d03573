"""Data order and batches: pure functions of (seed, epoch, lengths), so a resumed run —
or one split over several processes — sees exactly the same rows at each step."""
from __future__ import annotations

import random

from ..data.render import IGNORE  # the one label-ignore value (what the model's loss skips)


def plan_epoch(lengths: list[int], global_batch: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """The epoch's optimizer-step batches (row indices). A seeded shuffle; with grouping, rows
    of similar length share a batch (sorted within windows of 32 batches), then the batches
    are shuffled so long and short steps interleave. A last partial batch is kept."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        window = global_batch * 32
        order = [i for w in range(0, len(order), window)
                 for i in sorted(order[w:w + window], key=lambda i: -lengths[i])]
    batches = [order[i:i + global_batch] for i in range(0, len(order), global_batch)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def micro_batches(batch: list[int], lengths: list[int], world: int, rank: int, accum: int) -> list[list[int]]:
    """This rank's ``accum`` micro-batches of one global batch. Rows are sorted by length and
    cut into ``world * accum`` slices; slice m goes to rank ``m % world``. The same global
    batch gives the same slices for any (world, accum) with equal product, which is what
    makes 1-process and N-process loss curves equal. A slice may be empty (short last batch)."""
    rows = sorted(batch, key=lambda i: -lengths[i])
    n = world * accum
    size = -(-len(rows) // n)
    slices = [rows[m * size:(m + 1) * size] for m in range(n)]
    return [slices[m] for m in range(rank, n, world)]


def collate(rows: list[dict], pad_id: int):
    """Right-padded tensors: input_ids, attention_mask, labels (padding labelled -100).
    An empty row list yields one dummy row with no trainable token, so every process still
    runs the same number of forward/backward passes."""
    import torch

    if not rows:
        rows = [{"input_ids": [pad_id], "labels": [IGNORE]}]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[j, :n] = torch.tensor(r["input_ids"])
        labels[j, :n] = torch.tensor(r["labels"])
        mask[j, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
