"""The engine's draws (infer/sampling.py): each row turns one uniform number from its own generator into
a token through the inverse of its distribution. Rows drawn together give what each gives alone, follow
the distribution, never take a token of zero probability, and rows of different settings in one batch
keep their own warpers."""
import torch

from tunesmith.infer.sampling import GenParams, RowSampler, draw_batch

LOGITS = torch.tensor([0.0, 1.0, 2.0, 0.5, float("-inf")])


def samplers(n, **kw):
    return [RowSampler(GenParams(seed=11, **kw), i, "cpu") for i in range(n)]


def test_batched_draws_equal_lone_draws_and_follow_the_distribution():
    n = 6000
    rows = samplers(n, temperature=1.0)
    assert all(s.batchable for s in rows)
    drawn = draw_batch(rows, LOGITS.expand(n, -1).clone())
    lone = [RowSampler(GenParams(seed=11, temperature=1.0), i, "cpu").pick(LOGITS.clone(), []) for i in range(50)]
    assert drawn[:50].tolist() == lone
    freq = torch.bincount(drawn, minlength=5).double() / n
    want = LOGITS.double().softmax(-1)
    assert freq[4] == 0  # -inf: never
    assert (freq - want).abs().max() < 0.03, (freq, want)  # 6000 draws: a few standard errors


def test_rows_of_different_settings_keep_their_own_warpers():
    hot, cold, top2 = samplers(300, temperature=1.0), samplers(300, temperature=0.05), samplers(300, temperature=1.0,
                                                                                                top_k=2)
    mixed = [s for trio in zip(hot, cold, top2) for s in trio]
    drawn = draw_batch(mixed, LOGITS.expand(len(mixed), -1).clone())
    hot_t, cold_t, top2_t = drawn[0::3], drawn[1::3], drawn[2::3]
    assert set(top2_t.tolist()) <= {1, 2} and len(set(top2_t.tolist())) == 2  # top-k 2: tokens 2 and 1 only
    assert (cold_t == 2).float().mean() > 0.99  # temperature 0.05: nearly always the argmax
    assert len(set(hot_t.tolist())) == 4  # temperature 1: all four finite tokens
    # the same rows drawn without the others: the same tokens
    assert hot_t.tolist() == draw_batch(samplers(300, temperature=1.0), LOGITS.expand(300, -1).clone()).tolist()
