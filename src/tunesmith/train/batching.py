"""Data order, batches and packing: pure functions of (seed, epoch, lengths), so a resumed
run — or one split over several processes — sees exactly the same rows at each step.

A step is a list of ``world * accum`` micro-batches (row indices); micro-batch m goes to
rank ``m % world``. Steps are formed either by rows (``batch_size`` rows per micro-batch) or,
with ``batch_tokens``, by a token budget per micro-batch. Either way the same step gives the
same micro-batches for any (world, accum) with equal product, which is what makes 1-process
and N-process loss curves equal.
"""
from __future__ import annotations

import math
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


def split_rows(batch: list[int], lengths: list[int], n: int) -> list[list[int]]:
    """One global batch by rows → ``n`` micro-batches: rows sorted by length, cut into ``n``
    equal slices (a slice may be empty when the batch is short)."""
    rows = sorted(batch, key=lambda i: -lengths[i])
    size = -(-len(rows) // n)
    return [rows[m * size:(m + 1) * size] for m in range(n)]


def micro_batches(batch: list[int], lengths: list[int], world: int, rank: int, accum: int) -> list[list[int]]:
    """This rank's ``accum`` micro-batches of one global batch by rows."""
    return split_rows(batch, lengths, world * accum)[rank::world]


def token_cost(lens: list[int], packed: bool) -> int:
    """Tokens a micro-batch costs: packed rows cost their sum; padded rows cost rows × longest."""
    return sum(lens) if packed else len(lens) * max(lens, default=0)


def plan_epoch_tokens(lengths: list[int], budget: int, n: int, seed: int, epoch: int, group_by_length: bool,
                      packed: bool) -> list[list[list[int]]]:
    """The epoch's steps by a token budget: each micro-batch costs at most ``budget`` tokens
    (a row longer than the budget gets a micro-batch of its own), ``n`` micro-batches make a
    step (the last step may hold fewer: the rest are empty). The order is the seeded shuffle of
    ``plan_epoch``; with grouping, rows are sorted by length within windows of about 32 steps
    and the steps are shuffled."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length and order:
        mean = max(1, sum(lengths) // len(lengths))
        window = max(1, 32 * n * budget // mean)
        order = [i for w in range(0, len(order), window)
                 for i in sorted(order[w:w + window], key=lambda i: -lengths[i])]
    micro: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and token_cost([lengths[j] for j in cur] + [lengths[i]], packed) > budget:
            micro.append(cur)
            cur = []
        cur.append(i)
    if cur:
        micro.append(cur)
    steps = [micro[s:s + n] for s in range(0, len(micro), n)]
    steps = [s + [[] for _ in range(n - len(s))] for s in steps]
    if group_by_length:
        rng.shuffle(steps)
    return steps


class DataPlan:
    """Every optimizer step of every epoch, computed on demand (one epoch kept at a time).
    By rows each epoch has the same number of steps; by tokens the count may differ per epoch,
    so ``locate`` walks the per-epoch counts (cheap: a shuffle and a pass over lengths)."""

    def __init__(self, lengths: list[int], *, seed: int, group_by_length: bool, world: int, accum: int,
                 batch_size: int, batch_tokens: int | None, packed: bool):
        self.lengths, self.seed, self.group = lengths, seed, group_by_length
        self.n, self.batch_size, self.batch_tokens, self.packed = world * accum, batch_size, batch_tokens, packed
        self._counts: list[int] = []
        self._cache: tuple[int, list] | None = None

    def epoch(self, e: int) -> list[list[list[int]]]:
        if self._cache is None or self._cache[0] != e:
            if self.batch_tokens:
                steps = plan_epoch_tokens(self.lengths, self.batch_tokens, self.n, self.seed, e, self.group,
                                          self.packed)
            else:
                steps = [split_rows(b, self.lengths, self.n)
                         for b in plan_epoch(self.lengths, self.batch_size * self.n, self.seed, e, self.group)]
            self._cache = (e, steps)
        return self._cache[1]

    def steps_in(self, e: int) -> int:
        while len(self._counts) <= e:
            k = len(self._counts)
            self._counts.append(len(self.epoch(k)) if self.batch_tokens or k == 0 else self._counts[0])
        return self._counts[e]

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, index within the epoch) of a global step number."""
        e = 0
        while step >= self.steps_in(e):
            step -= self.steps_in(e)
            e += 1
        return e, step

    def total(self, epochs: float) -> int:
        """Steps in ``epochs`` passes (a fractional last pass is rounded up)."""
        if not self.batch_tokens:  # every epoch has the same count
            return max(1, math.ceil(epochs * self.steps_in(0)))
        whole = int(epochs)
        steps = sum(self.steps_in(e) for e in range(whole))
        if epochs > whole:
            steps += math.ceil((epochs - whole) * self.steps_in(whole))
        return max(1, steps)

    def step(self, step: int) -> tuple[float, list[list[int]]]:
        """(fractional epoch reached after this step, the step's micro-batches)."""
        e, idx = self.locate(step)
        return e + (idx + 1) / self.steps_in(e), self.epoch(e)[idx]


def oom_message(step: int, rows: int, tokens: int, loop, cutoff_len: int) -> str:
    """The one line for running out of GPU memory: the micro-batch that did not fit and the
    settings that shrink it."""
    if loop.batch_tokens:
        first = f"lower train.batch_tokens (now {loop.batch_tokens}; raise train.grad_accum to keep the global batch)"
    else:
        first = (f"set train.batch_tokens (e.g. 8192) or lower train.batch_size (now {loop.batch_size}; raise "
                 "train.grad_accum to keep the global batch)")
    return (f"out of memory at step {step + 1} on a micro-batch of {rows} rows × {tokens} tokens: {first}, "
            f"lower data.cutoff_len (now {cutoff_len}), or set train.gradient_checkpointing=true")


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


PACK_MIN_GAIN = 0.75  # pack only if the packed tensor is at most this share of the padded one


def pack_bins(lengths: list[int], width: int) -> list[list[int]]:
    """First-fit decreasing: positions into ``lengths`` grouped into bins of at most ``width``
    tokens (a longer row gets a bin of its own). Deterministic: ties keep their order."""
    bins: list[list[int]] = []
    room: list[int] = []
    for j in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for b, free in enumerate(room):
            if lengths[j] <= free:
                bins[b].append(j)
                room[b] -= lengths[j]
                break
        else:
            bins.append([j])
            room.append(width - lengths[j])
    return bins


def pack_collate(rows: list[dict], pad_id: int, width: int, min_gain: float = PACK_MIN_GAIN):
    """Rows packed into bins: input_ids, labels, position_ids and ``segments`` of shape
    [bins, longest bin]. Positions restart at 0 for each row; ``segments`` numbers the rows
    of a bin (the padding after them is one more segment), for ``block_causal_mask``. The
    first label of every row is ignored: the model shifts labels by one, so without this the
    last token of a row would be trained to predict the first token of the next one — and
    unpacked, a row's first label never counts either."""
    import torch

    if not rows:
        rows = [{"input_ids": [pad_id], "labels": [IGNORE]}]
    lengths = [len(r["input_ids"]) for r in rows]
    bins = pack_bins(lengths, width)
    fill = [sum(lengths[j] for j in b) for b in bins]
    w = max(fill)
    # Packing pays for its 4-D mask (no causal fast path) only when it removes much padding:
    # where it would save under a quarter of the padded tensor, plain rows are as exact and
    # faster (measured on the CPU with short, even identity rows).
    if all(len(b) == 1 for b in bins) or len(bins) * w > min_gain * len(rows) * max(lengths):
        return collate(rows, pad_id)
    ids = torch.full((len(bins), w), pad_id, dtype=torch.long)
    labels = torch.full((len(bins), w), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(bins), w), dtype=torch.long)
    seg = torch.full((len(bins), w), -1, dtype=torch.long)
    for b, members in enumerate(bins):
        at = 0
        for s, j in enumerate(members):
            n = len(rows[j]["input_ids"])
            ids[b, at:at + n] = torch.tensor(rows[j]["input_ids"])
            labels[b, at + 1:at + n] = torch.tensor(rows[j]["labels"][1:])
            pos[b, at:at + n] = torch.arange(n)
            seg[b, at:at + n] = s
            at += n
        pos[b, at:] = torch.arange(w - at)
        seg[b, at:] = len(members)
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "segments": seg}


def block_causal_mask(segments, dtype):
    """The 4-D additive mask [bins, 1, T, T] that lets a token attend only to earlier tokens of
    its own row: 0 where allowed, the dtype's minimum elsewhere. Additive float is what both
    the eager attention (adds the mask to the scores) and sdpa (passes it to
    ``scaled_dot_product_attention``) accept for a user-supplied 4-D mask; transformers
    passes a 4-D mask through untouched. Measured: restarting position ids alone does not
    confine attention."""
    import torch

    t = segments.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()
    allowed = (segments[:, :, None] == segments[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
