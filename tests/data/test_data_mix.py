"""Mixing: exact upsampling counts, ratio, validation split by count and fraction, seeds."""
from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesmith.data.mix import mix, sample_indices, val_count
from tunesmith.errors import UserError


def test_108_rows_500_samples_is_4_copies_plus_68_distinct():
    idx = sample_indices(108, 500, random.Random(0))
    counts = Counter(idx)
    assert len(idx) == 500 and set(counts) == set(range(108))
    assert sorted(Counter(counts.values()).items()) == [(4, 40), (5, 68)]


def test_fewer_samples_than_rows_are_distinct():
    idx = sample_indices(100, 30, random.Random(1))
    assert len(idx) == 30 == len(set(idx))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 300), samples=st.integers(1, 2000), seed=st.integers(0, 2**32))
def test_sample_counts_exact(n, samples, seed):
    counts = Counter(sample_indices(n, samples, random.Random(seed)))
    assert sum(counts.values()) == samples
    full = samples // n
    assert all(c in (full, full + 1) for c in counts.values())
    assert sum(c == full + 1 for c in counts.values()) == samples % n


def test_ratio_and_samples_per_source():
    train, val = mix([10, 40], [25, None], [None, 0.5], val_size=0, seed=3)
    per = Counter(s for s, _ in train)
    assert per == {0: 25, 1: 20} and val == []
    assert len({i for s, i in train if s == 1}) == 20  # a random half, no repeats


def test_val_size_count_and_fraction_without_leaks():
    for val_size, n_val in ((7, 7), (0.25, 15)):
        train, val = mix([20, 40], [None, None], [None, None], val_size=val_size, seed=0)
        assert len(val) == n_val and len(train) == 60 - n_val
        assert not set(train) & set(val)
    train, val = mix([10], [30], [None], val_size=2, seed=0)
    assert len(val) == 2 and len(train) == 30 and not set(train) & set(val)


def test_seeded_and_shuffled():
    a = mix([50, 50], [None, 80], [None, None], 0.1, seed=7)
    assert a == mix([50, 50], [None, 80], [None, None], 0.1, seed=7)
    assert a != mix([50, 50], [None, 80], [None, None], 0.1, seed=8)
    sources = [s for s, _ in a[0]]
    assert sources != sorted(sources)  # the sources are interleaved, not concatenated


def test_val_size_taking_everything_is_an_error():
    assert val_count(10, 0.5) == 5
    with pytest.raises(UserError, match="nothing is left to train on"):
        val_count(10, 10)
