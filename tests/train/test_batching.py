"""Data order by rows or by a token budget: every row once per epoch, budgets kept, the same
steps for any split of world × accum, and step ↔ epoch accounting that resume relies on."""
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesmith.train.batching import DataPlan, micro_batches, plan_epoch, token_cost

lengths_st = st.lists(st.integers(1, 300), min_size=1, max_size=120)


def plan(lengths, **over):
    kw = dict(seed=3, group_by_length=True, world=2, accum=2, batch_size=3, batch_tokens=None, packed=True)
    return DataPlan(lengths, **{**kw, **over})


@settings(max_examples=60, deadline=None)
@given(lengths_st, st.integers(50, 700), st.booleans(), st.booleans(), st.integers(0, 3))
def test_token_budget_steps(lengths, budget, packed, group, epoch):
    p = plan(lengths, batch_tokens=budget, packed=packed, group_by_length=group)
    steps = p.epoch(epoch)
    assert all(len(s) == 4 for s in steps)  # world × accum micro-batches; a short last step is padded with []
    seen = [i for s in steps for m in s for i in m]
    assert sorted(seen) == list(range(len(lengths)))  # every row exactly once
    for s in steps:
        for m in s:
            # within budget, or a single row that alone exceeds it
            assert token_cost([lengths[i] for i in m], packed) <= budget or len(m) == 1
    assert all(any(s) for s in steps)  # no empty step
    assert DataPlan(lengths, seed=3, group_by_length=group, world=1, accum=4, batch_size=3, batch_tokens=budget,
                    packed=packed).epoch(epoch) == steps  # same steps for any split of world × accum


def test_a_larger_budget_makes_fewer_steps_and_padded_cost_counts_the_longest():
    lengths = [10, 200, 30, 40, 50, 60, 70, 80] * 10
    assert len(plan(lengths, batch_tokens=2000).epoch(0)) < len(plan(lengths, batch_tokens=400).epoch(0))
    assert token_cost([10, 200], packed=True) == 210 and token_cost([10, 200], packed=False) == 400


@settings(max_examples=30, deadline=None)
@given(lengths_st, st.integers(1, 5), st.integers(1, 3), st.integers(1, 3))
def test_by_rows_is_the_old_order(lengths, batch_size, world, accum):
    """Row batching is unchanged: runs started before token budgets resume on the same rows."""
    p = plan(lengths, batch_size=batch_size, world=world, accum=accum)
    for e in range(2):
        old = plan_epoch(lengths, batch_size * world * accum, 3, e, True)
        assert len(p.epoch(e)) == len(old)
        for step, batch in zip(p.epoch(e), old):
            for rank in range(world):
                assert step[rank::world] == micro_batches(batch, lengths, world, rank, accum)


@settings(max_examples=40, deadline=None)
@given(lengths_st, st.integers(30, 400), st.floats(0.3, 3.0))
def test_locate_and_total_follow_per_epoch_counts(lengths, budget, epochs):
    p = plan(lengths, batch_tokens=budget)
    counts = [len(plan(lengths, batch_tokens=budget).epoch(e)) for e in range(4)]
    total = p.total(epochs)
    whole = int(epochs)
    assert total == max(1, sum(counts[:whole]) + (-(-((epochs - whole) * counts[whole]) // 1) if epochs > whole else 0))
    step = 0
    for e in range(3):
        for idx in range(counts[e]):
            assert p.locate(step) == (e, idx)
            frac, micro = p.step(step)
            assert micro == p.epoch(e)[idx] and abs(frac - (e + (idx + 1) / counts[e])) < 1e-12
            step += 1


def test_rows_total_is_ceil_of_epochs_times_steps():
    p = plan([5] * 10, batch_size=1, world=1, accum=3)  # 4 steps per epoch
    assert p.steps_in(0) == p.steps_in(5) == 4 and p.total(2.5) == 10 and p.total(0.1) == 1
