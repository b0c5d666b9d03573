"""What makes the training loop fast on a CPU (measured on the 2-core AMX CPU: docs/benchmarks.md, issue 24).

- bf16 autocast where the CPU has AMX (bf16 matrix units; ``amx_bf16``): by default for a LoRA over an
  fp32 model (``train.autocast: auto``; ``off`` keeps fp32, ``bf16`` asks for it anywhere). The weights that
  train (LoRA), their gradients and optimizer state, and the loss stay fp32; the matmuls run in bf16.
- The frozen weights held in bf16 (``precast_frozen``), as on CUDA where the model loads in bf16:
  autocast keeps its casts only of weights that train, so every forward cast every frozen weight
  again, and an fp32 residual stream cast each layer's input once per projection.
- Attention in fp32 under autocast (``FP32_SDPA``): torch's bf16 flash attention for CPU took
  ~6× the fp32 kernel's time in backward; q, k, v are cast up and the output goes on in bf16.
- LoRA dropout masks from 16-bit slices of 64-bit random words (``fast_lora_dropout``): torch's CPU
  dropout draws one Bernoulli per element (18% of an fp32 step); this takes four draws from each
  word of numpy's PCG64DXSM, seeded from torch's generator. Same rule (drop with probability p,
  scale the rest by 1 / (1 - p) in fp32), another random stream.
"""
from __future__ import annotations

FP32_SDPA = "tunesmith_sdpa_fp32"  # the name registered with transformers' AttentionInterface


def has_amx() -> bool:
    """Whether this CPU has AMX tiles (bf16 matmuls ~10× fp32 here); False where torch cannot tell."""
    import torch

    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def precast_frozen(model, dtype) -> int:
    """Hold every frozen floating-point parameter in ``dtype`` (in place, once); the loop then lets
    peft's LoRA layers take their input as it comes (``kernels.share_lora_inputs``, as on CUDA).
    Parameters that train are untouched; buffers (e.g. RoPE frequencies) too. Returns how many
    parameters were cast. The model then runs only under autocast."""
    import torch

    cast = 0
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
            cast += 1
    return cast


_DROPOUT: list = []  # the module class, made once on first use (torch is imported lazily)


def fast_dropout(p: float):
    """Dropout for the CPU: one 64-bit random word gives four 16-bit draws. An element is dropped
    when its draw falls below round(p · 65536) of 65536 (p to within 1/131072); kept elements are
    scaled, in fp32, by the inverse of the exact keep rate, so the expectation is unchanged."""
    if not _DROPOUT:
        import numpy as np
        import torch

        class FastDropout(torch.nn.Module):
            def __init__(self, p: float):
                super().__init__()
                self.p = p
                dropped = round(p * 65536)
                self.threshold = dropped - 32768  # draws are int16: -32768 … 32767
                self.scale = 65536 / (65536 - dropped)

            def forward(self, x):
                if not self.training or self.p == 0:
                    return x
                n = x.numel()
                seed = int(torch.randint(2**62, ()))  # torch's seed (and a resumed run's state) decides the masks
                words = np.random.PCG64DXSM(seed).random_raw((n + 3) // 4)
                draws = torch.from_numpy(words.view(np.int16)[:n]).view(x.shape).to(x.device)
                noise = torch.where(draws >= self.threshold, self.scale, 0.0)  # fp32
                return x * noise  # one pass to build the mask, one to apply it (and one back)

            def extra_repr(self) -> str:
                return f"p={self.p}"

        _DROPOUT.append(FastDropout)
    return _DROPOUT[0](p)


def fast_lora_dropout(model) -> int:
    """Replace peft's ``nn.Dropout`` on each LoRA input with ``fast_dropout`` (same p); returns how
    many were replaced. Dropout holds no weights: saved adapters are unchanged."""
    import torch

    swapped = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, torch.nn.ModuleDict):
            continue
        for name, drop in list(drops.items()):
            if type(drop) is torch.nn.Dropout and drop.p > 0:
                drops[name] = fast_dropout(drop.p)
                swapped += 1
    return swapped


def fp32_sdpa_forward(module, query, key, value, attention_mask, **kwargs):
    """transformers' sdpa attention with q, k, v (and a float mask) in fp32, autocast off inside."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast(query.device.type, enabled=False):
        return sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)


def use_fp32_attention(model) -> bool:
    """Switch a transformers model from sdpa to ``fp32_sdpa_forward`` (registered, with sdpa's mask
    function, under ``FP32_SDPA``). False (nothing changed) where the model does not use sdpa or
    cannot switch its attention."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(FP32_SDPA, fp32_sdpa_forward)
    AttentionMaskInterface.register(FP32_SDPA, sdpa_mask)
    try:
        model.set_attn_implementation(FP32_SDPA)
    except (ValueError, ImportError):
        return False
    return model.config._attn_implementation == FP32_SDPA
