"""How packed rows attend only to themselves: ``train.attention: auto | sdpa | flex | varlen``.

A packed bin holds several rows; each token may attend only to earlier tokens of its own row.

- ``sdpa``: a 4-D additive block-diagonal mask (``batching.block_causal_mask``) handed to
  transformers' sdpa/eager attention. Exact everywhere (the CPU path), but a user mask keeps
  ``scaled_dot_product_attention`` off its flash kernel: every bin computes the full T².
- ``flex``: torch's ``flex_attention`` with a document-causal ``BlockMask`` built from the
  bin's segment ids, through transformers' own ``attn_implementation="flex_attention"`` (it
  takes a BlockMask as the attention mask). Blocks where no row meets another are skipped.
- ``varlen``: torch's ``torch.nn.attention.varlen.varlen_attn`` (flash attention over
  variable-length sequences), registered with transformers' ``AttentionInterface``. The bins
  are flattened and every row (and the padding after them) is one sequence, so attention does
  only the work of the rows.

Padded (unpacked) batches take the same routes: their rows are segment 0, their padding
segment 1. Both kernels need CUDA and bf16 activations (flex failed to compile in fp32 on the
GPU machine); ``auto`` picks ``varlen`` (measured fastest, ``AUTO_CUDA``) on CUDA with bf16 when
rows are packed and attention heads are 16 to 256 wide, else sdpa.
"""
from __future__ import annotations

import inspect

from ..errors import UserError

VARLEN = "tunesmith_varlen"  # the name registered with transformers' AttentionInterface
# What auto picks on CUDA in bf16. Measured on one H100 (docs/benchmarks.md, issue 24; Qwen2.5-0.5B
# config, alpaca rows, 32k-token packed micro-batches), two calls: varlen 72.6k / 75.6k real tok/s, the
# 4-D mask 49.0k / 63.6k, flex 11.6k (transformers compiles flex for fixed shapes: new bin counts and
# widths recompiled).
AUTO_CUDA = "varlen"


def resolve_attention(setting: str, device: str, bf16: bool, packed: bool, head_dim: int = 64) -> str:
    """``sdpa``, ``flex`` or ``varlen`` for this run. ``auto`` takes the fast path where it is
    exact and runs; asking for a kernel where it cannot run is one line."""
    cuda = device.startswith("cuda")
    if setting == "auto":
        fast = cuda and bf16 and packed and 16 <= head_dim <= 256 and has_kernel(AUTO_CUDA)
        return AUTO_CUDA if fast else "sdpa"
    if setting == "sdpa":
        return "sdpa"
    if not cuda:
        raise UserError(f"train.attention: {setting} needs a CUDA GPU; use attention: auto or sdpa")
    if not bf16:
        raise UserError(f"train.attention: {setting} runs in bf16 (dtype: bf16); use attention: auto or sdpa")
    if not has_kernel(setting):
        raise UserError(f"train.attention: this torch has no {setting} attention; use attention: auto or sdpa")
    return setting


def head_width(config) -> int:
    """Width of one attention head of a transformers config (0 when it does not say)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads, hidden = getattr(text, "num_attention_heads", 0), getattr(text, "hidden_size", 0)
    return getattr(text, "head_dim", None) or (hidden // heads if heads else 0)


def has_kernel(name: str) -> bool:
    try:
        if name == "flex":
            from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401
        else:
            from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def implementation(attention: str) -> str | None:
    """The ``attn_implementation`` to set on the model (None: leave transformers' default)."""
    if attention == "flex":
        return "flex_attention"
    if attention == "varlen":
        register_varlen()
        return VARLEN
    return None


def model_inputs(batch: dict, attention: str, dtype) -> dict:
    """The model's keyword inputs for a batch of ``collate`` or ``pack_collate`` (on the device):
    input_ids, position_ids and the attention mask (or the varlen sequence boundaries)."""
    from .batching import block_causal_mask

    packed = "segments" in batch
    if attention == "sdpa":
        if not packed:
            return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"],
                "attention_mask": block_causal_mask(batch["segments"], dtype)}
    import torch

    ids = batch["input_ids"]
    if packed:
        segments, positions = batch["segments"], batch["position_ids"]
    else:  # right-padded rows: the row is segment 0, its padding segment 1
        segments = (batch["attention_mask"] == 0).long()
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    if attention == "flex":
        return {"input_ids": ids, "position_ids": positions, "attention_mask": document_block_mask(segments)}
    starts, longest = sequence_starts(segments)
    return {"input_ids": ids, "position_ids": positions, "attention_mask": None, "cu_seq_lens_q": starts,
            "cu_seq_lens_k": starts, "max_length_q": longest, "max_length_k": longest}


def document_block_mask(segments):
    """flex_attention's BlockMask for bins of rows: query q sees key k of the same bin when both
    belong to the same segment and k ≤ q. The padding after the rows is a segment of its own,
    so no query row is fully masked."""
    from torch.nn.attention.flex_attention import create_block_mask

    bins, width = segments.shape

    def same_row_causal(b, h, q, k):
        return (k <= q) & (segments[b, q] == segments[b, k])

    return create_block_mask(same_row_causal, B=bins, H=None, Q_LEN=width, KV_LEN=width, device=segments.device)


def sequence_starts(segments):
    """(int32 offsets of every sequence in the flattened bins, plus the total; the longest
    sequence's length). A sequence is a run of equal segment ids within one bin."""
    import torch

    bins, width = segments.shape
    new = torch.ones_like(segments, dtype=torch.bool)
    new[:, 1:] = segments[:, 1:] != segments[:, :-1]
    starts = new.reshape(-1).nonzero().squeeze(1)
    starts = torch.cat([starts, starts.new_tensor([bins * width])]).to(torch.int32)
    return starts, int(starts.diff().max())


def varlen_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, sliding_window=None,
                   **kwargs):
    """transformers' attention-function signature over ``varlen_attn``: query [b, hq, t, d],
    key/value [b, hkv, t, d] → ([b, t, hq, d], None). Causal within each sequence of
    ``cu_seq_lens_q``; GQA heads are shared (repeated where this torch has no enable_gqa)."""
    from torch.nn.attention.varlen import varlen_attn

    if dropout:
        raise UserError("train.attention: varlen has no attention dropout; use attention: sdpa")
    if sliding_window:
        raise UserError("train.attention: varlen has no sliding-window attention; use attention: sdpa")
    if "cu_seq_lens_q" not in kwargs:
        raise UserError("train.attention: varlen needs the batch's sequence boundaries (cu_seq_lens_q); "
                        "use attention: sdpa for this model")
    b, hq, t, d = query.shape
    hkv = key.shape[1]
    q = query.transpose(1, 2).reshape(b * t, hq, d)
    k = key.transpose(1, 2).reshape(b * t, hkv, d)
    v = value.transpose(1, 2).reshape(b * t, hkv, d)
    params = _varlen_params()
    extra = {"scale": scaling} if "scale" in params else {}
    if hq != hkv:
        if "enable_gqa" in params:
            extra["enable_gqa"] = True
        else:
            k, v = k.repeat_interleave(hq // hkv, dim=1), v.repeat_interleave(hq // hkv, dim=1)
    if "window_size" in params:
        extra["window_size"] = (-1, 0)  # causal
    else:
        extra["is_causal"] = True
    cu, longest = kwargs["cu_seq_lens_q"], kwargs["max_length_q"]
    out = varlen_attn(q, k, v, cu, cu, longest, longest, **extra)
    return out.view(b, t, hq, d), None


def _varlen_params() -> set[str]:
    from torch.nn.attention.varlen import varlen_attn

    return set(inspect.signature(varlen_attn).parameters)


def _no_mask(*args, **kwargs):
    return None  # varlen needs no mask: the sequence boundaries travel as cu_seq_lens_q/k


def register_varlen() -> None:
    """Register ``varlen_forward`` (and its mask function: none) with transformers' public
    AttentionInterface / AttentionMaskInterface under ``tunesmith_varlen``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(VARLEN, varlen_forward)
    AttentionMaskInterface.register(VARLEN, _no_mask)
