"""Fused kernels behind one switch: ``train.kernels: auto | liger | none``.

Liger (liger-kernel, through its public ``liger_kernel.transformers`` API) replaces the
model's RMSNorm, RoPE and SwiGLU with Triton kernels and its causal-LM forward with a fused
linear + cross-entropy that never materialises the full fp32 logits (13.5 GiB for one padded
batch of 32 × 2048 on Qwen2.5's 152k vocabulary). It is applied to the plain transformers
model, before LoRA wraps it. Its loss honours ``num_items_in_batch`` (sum / count), the
loop's normaliser, and shifts labels exactly as transformers does, so packing and the loss
arithmetic are unchanged; in eval mode it returns logits as usual. Triton needs CUDA: on
CPU the plain path runs.
"""
from __future__ import annotations

from ..errors import UserError

FLAGS = dict(rope=True, rms_norm=True, swiglu=True, fused_linear_cross_entropy=True, cross_entropy=False)


def liger_families() -> set[str] | None:
    """Model types Liger can patch, or None when liger-kernel does not import (not installed,
    no Triton, no GPU build)."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception:  # ImportError, or Triton failing to initialise without a GPU
        return None
    return set(MODEL_TYPE_TO_APPLY_LIGER_FN)


def resolve_kernels(setting: str, device: str, model_type: str | None) -> str:
    """``liger`` or ``none`` for this run. ``auto`` picks liger when it can run; ``liger``
    asked for where it cannot is the user's mistake, said in one line."""
    if setting == "none":
        return "none"
    cuda = device.startswith("cuda")
    families = liger_families() if cuda else None
    if cuda and families is not None and model_type in families:
        return "liger"
    if setting == "auto":
        return "none"
    if not cuda:
        raise UserError("train.kernels: liger needs a CUDA GPU; use kernels: auto or none")
    if families is None:
        raise UserError("train.kernels: liger-kernel is not installed (pip install liger-kernel); "
                        "use kernels: auto or none")
    raise UserError(f"train.kernels: Liger has no kernels for model type '{model_type}'; use kernels: auto or none")


def patch_model(model, choice: str, compiled: bool = False):
    """Patch ``model`` in place (the transformers model, before LoRA) and return it. Under
    ``train.compile`` only the fused linear + cross-entropy is applied (it sits outside the
    decoder layers): inductor fuses norms, RoPE and SwiGLU itself, and Liger's Triton kernels
    inside a compiled layer failed to compile there (H100, torch 2.11)."""
    if choice == "liger":
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        flags = {**FLAGS, "rope": False, "rms_norm": False, "swiglu": False} if compiled else FLAGS
        _apply_liger_kernel_to_instance(model=model, **flags)
    return model


def compile_layers(model) -> int:
    """``train.compile``: torch.compile each decoder layer in place (regional compilation: one
    graph, reused by every layer, so it compiles in seconds rather than minutes; parameter
    names and checkpoints are unchanged). Called after LoRA, so the adapters are compiled in."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(inner, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise UserError(f"train.compile: no decoder layers found in {type(inner).__name__}; set compile: false")
    watch_recompiles()
    for layer in layers:
        layer.compile(dynamic=True)  # packed widths and bin counts vary every step: one graph for all
    return len(layers)


RECOMPILE_LIMIT = 4  # graphs per compiled layer before it runs eagerly (torch's own default: 8)
FALLBACK = (f"train.compile: the decoder layers recompiled {RECOMPILE_LIMIT} times as batch shapes changed; they run "
            "without compile from here (set train.compile: false to skip compiling)")


def watch_recompiles() -> None:
    """A compiled layer whose inputs keep changing shape would recompile again and again, and the
    run would be slower with compile than without. torch stops at ``recompile_limit`` and runs that
    code eagerly from then on; this sets the limit and turns torch's multi-line warning into one
    line, said once."""
    import logging

    import torch

    torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
    log = logging.getLogger("torch._dynamo.convert_frame")
    if not any(isinstance(f, _FallbackNote) for f in log.filters):
        log.addFilter(_FallbackNote())


class _FallbackNote:
    said = False

    def filter(self, record) -> bool:
        if "recompile_limit" not in record.getMessage():
            return True
        if not _FallbackNote.said:
            _FallbackNote.said = True
            print(FALLBACK, flush=True)
        return False


def share_lora_inputs(model) -> int:
    """Under bf16 autocast with fp32 adapters: let peft's LoRA layers take their input as it comes.
    peft casts a layer's input to the adapter's dtype (fp32) before ``lora_A``, and autocast then
    casts it back to bf16 for the matmul — a new bf16 copy of the input that autograd keeps for
    the backward, once per adapted projection (seven a decoder layer), beside the very same values
    the frozen projection already keeps. Without peft's cast ``lora_A`` gets the bf16 input itself
    (autocast casts only its weight), so the same numbers flow and projections that share an input
    share what they keep (measured on the CPU: four hidden-wide copies fewer a layer; the first
    adapter of a group may still keep its own, tests/train/test_lora_inputs.py).
    The model must then run only under autocast (the loop's step and evaluation do). Returns how
    many layers were switched."""
    n = 0
    for module in model.modules():
        if hasattr(module, "lora_A") and hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False
            n += 1
    return n


def recompute_mlp_product(model) -> int:
    """Keep the gated MLP's ``act(gate) * up`` out of the backward's memory: it is the down
    projection's input, the widest activation of a decoder layer (intermediate_size per token, beside
    gate's and up's outputs, which its backward needs anyway). Each MLP runs its product and down
    projection under torch's selective checkpointing: matmul results are kept as usual, the
    element-wise product is recomputed in the backward (one fused multiply, no second matmul), so
    the numbers are the same. Per token and layer a step keeps intermediate − 2 × hidden − r values
    fewer behind Liger's SwiGLU (which keeps gate and up only; the down projection's matmul outputs
    are kept so the recompute runs no matmul), 2 × intermediate − 2 × hidden − r fewer behind torch's
    (which also keeps silu(gate)) — what Unsloth's fused LoRA MLP saves, without writing LoRA's
    gradients by hand. For MLPs ``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` (Llama, Qwen2/3,
    Mistral, Gemma, SmolLM2) at least twice as wide as the model; others are left as they are.
    Returns how many MLPs were switched."""
    import functools

    import torch
    from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

    keep = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}

    def policy(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in keep else CheckpointPolicy.PREFER_RECOMPUTE

    def context():
        return create_selective_checkpoint_contexts(policy)

    def product_down(mlp, product, gate, up):
        return mlp.down_proj(product(gate, up))

    def forward(mlp, product, x):
        gate, up = mlp.gate_proj(x), mlp.up_proj(x)
        if not torch.is_grad_enabled():
            return product_down(mlp, product, gate, up)
        return checkpoint(product_down, mlp, product, gate, up, use_reentrant=False, context_fn=context)

    def product_of(mlp):
        if mlp._get_name() == "LigerSwiGLUMLP":  # Liger patched this MLP: keep its fused kernel
            from liger_kernel.transformers.functional import liger_swiglu

            return liger_swiglu
        return lambda gate, up: mlp.act_fn(gate) * up

    def worth(down) -> bool:  # what is kept instead: the down projection's matmul outputs (2 × hidden + r)
        return getattr(down, "in_features", 0) > 2 * getattr(down, "out_features", 0)

    n = 0
    for module in model.modules():
        if all(hasattr(module, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")) and \
                not hasattr(module, "gate_up_proj") and worth(module.down_proj):
            module.forward = functools.partial(forward, module, product_of(module))
            n += 1
    return n
