"""The packed-attention switch (train/attention.py) on the CPU: which path a run gets, and that
the flex BlockMask and the varlen boundaries describe exactly the rows of the 4-D mask (the
kernels themselves run on CUDA: tests/gpu/test_attention.py)."""
import pytest
import torch

from tunesmith.data.render import IGNORE
from tunesmith.errors import UserError
from tunesmith.train import attention
from tunesmith.train.batching import block_causal_mask, pack_collate

LENGTHS = [5, 17, 9, 30, 3, 12, 21, 150]


def packed() -> dict:
    data = [{"input_ids": list(range(1, n + 1)), "labels": [IGNORE] + list(range(2, n + 1))} for n in LENGTHS]
    return pack_collate(data, 0, width=160, min_gain=1.0)


def test_auto_picks_the_fast_path_only_where_it_runs():
    fast = attention.AUTO_CUDA
    assert attention.resolve_attention("auto", "cuda", True, True) == fast
    assert attention.resolve_attention("auto", "cpu", False, True) == "sdpa"  # the CPU keeps the 4-D mask
    assert attention.resolve_attention("auto", "cuda", False, True) == "sdpa"  # fp32: flash kernels need bf16
    assert attention.resolve_attention("auto", "cuda", True, False) == "sdpa"  # padded rows: sdpa's causal path
    assert attention.resolve_attention("auto", "cuda", True, True, head_dim=8) == "sdpa"
    assert attention.resolve_attention("auto", "cuda", True, True, head_dim=512) == "sdpa"
    assert attention.resolve_attention("sdpa", "cuda", True, True) == "sdpa"
    with pytest.raises(UserError, match="train.attention: flex needs a CUDA GPU"):
        attention.resolve_attention("flex", "cpu", False, True)
    with pytest.raises(UserError, match="train.attention: varlen runs in bf16"):
        attention.resolve_attention("varlen", "cuda", False, True)
    from tunesmith.train.config import TrainConfig

    with pytest.raises(ValueError, match="train.attention: flex needs a CUDA GPU"):
        TrainConfig(device="cpu", train={"attention": "flex"})
    with pytest.raises(ValueError, match="train.attention: varlen is for sft"):
        TrainConfig(objective="dpo", train={"attention": "varlen"})


def test_flex_block_mask_keeps_rows_apart_like_the_4d_mask():
    """Eager flex_attention (its reference implementation, on the CPU) with the document-causal
    BlockMask gives sdpa's output under the 4-D block-diagonal mask."""
    seg = packed()["segments"]
    bins, width = seg.shape
    assert bins == 2 and width == 159  # several rows per bin, a width that is not a multiple of 128
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(bins, 4, width, 16, generator=g) for _ in range(3))
    from torch.nn.attention.flex_attention import flex_attention

    with pytest.warns(UserWarning):  # torch warns that uncompiled flex is its slow reference
        out = flex_attention(q, k, v, block_mask=attention.document_block_mask(seg))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=block_causal_mask(seg, torch.float32))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_varlen_boundaries_are_the_rows():
    b = packed()
    starts, longest = attention.sequence_starts(b["segments"])
    # bin 0: the 150-row and the 9-row fill 159 tokens; bin 1 (from 159): 30, 21, 17, 12, 5, 3, then padding
    assert starts.tolist() == [0, 150, 159, 189, 210, 227, 239, 244, 247, 318]
    assert starts.dtype == torch.int32 and longest == 150
    # every sequence restarts its positions: the boundaries and position_ids agree
    flat = b["position_ids"].reshape(-1)
    assert (flat[starts[:-1].long()] == 0).all() and int((flat == 0).sum()) == len(starts) - 1


def test_model_inputs_per_path():
    b = packed()
    sdpa = attention.model_inputs(b, "sdpa", torch.float32)
    assert sdpa["attention_mask"].shape == (2, 1, 159, 159)  # the old path, unchanged
    varlen = attention.model_inputs(b, "varlen", torch.bfloat16)
    assert varlen["attention_mask"] is None and varlen["max_length_q"] == 150
    assert varlen["cu_seq_lens_q"] is varlen["cu_seq_lens_k"]
    # padded rows take the same route: a row is one sequence, its padding another
    padded = {"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 1, 1],
                                                                                              [1, 1, 0, 0]])}
    rows = attention.model_inputs(padded, "varlen", torch.bfloat16)
    assert rows["cu_seq_lens_q"].tolist() == [0, 4, 6, 8] and rows["position_ids"].tolist() == [[0, 1, 2, 3]] * 2
