"""Mixing sources: per-source sample counts, a validation split, a seeded shuffle.

Pure functions over row indices, so the rendered rows are never copied to decide a mix.
Validation rows are drawn first, from the distinct rows of all sources, so no row (or a
copy of it) lands in both splits; ``samples``/``ratio`` then apply to each source's rest.
"""
from __future__ import annotations

import random

from ..errors import UserError


def sample_indices(n: int, samples: int, rng: random.Random) -> list[int]:
    """``samples`` indices of ``n`` rows: whole repetitions, then a seeded random set of
    distinct rows for the remainder (108 rows, 500 samples → 4 copies + 68 rows)."""
    if n == 0 or samples <= 0:
        return []
    full, rest = divmod(samples, n)
    return list(range(n)) * full + sorted(rng.sample(range(n), rest))


def target_count(n: int, samples: int | None, ratio: float | None) -> int:
    if samples is not None:
        return samples
    if ratio is not None:
        return round(ratio * n)
    return n


def val_count(total: int, val_size: float) -> int:
    """``val_size`` below 1 is a fraction of ``total``, from 1 a row count. Raises UserError."""
    n = round(val_size * total) if val_size < 1 else int(val_size)
    if val_size > 0 and n >= total:
        raise UserError(f"data.val_size {val_size:g} takes {n} of the {total} rows: nothing is left to train on")
    return n


def mix(sizes: list[int], samples: list[int | None], ratios: list[float | None], val_size: float,
        seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Train and validation rows as (source, row) pairs, each list shuffled with ``seed``."""
    rng = random.Random(seed)
    pool = [(s, i) for s, n in enumerate(sizes) for i in range(n)]
    n_val = val_count(len(pool), val_size)
    val = rng.sample(pool, n_val)
    taken = set(val)
    train: list[tuple[int, int]] = []
    for s, n in enumerate(sizes):
        rest = [i for i in range(n) if (s, i) not in taken]
        want = target_count(len(rest), samples[s], ratios[s])
        src_rng = random.Random(f"{seed}/{s}")
        train += [(s, rest[k]) for k in sample_indices(len(rest), want, src_rng)]
    rng.shuffle(train)
    return train, val
