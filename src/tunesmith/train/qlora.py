"""QLoRA's model setup (``method: qlora``): a 4-bit NF4 base through transformers'
BitsAndBytesConfig; the loop puts LoRA on top as for ``method: lora``. bitsandbytes is optional and imported only here, when
a recipe asks for it. The adapter merges onto the original bf16 base (export/merge.py
refuses the 4-bit one)."""
from __future__ import annotations

from ..errors import UserError
from .config import TrainConfig


def bnb():
    try:
        import bitsandbytes
    except ImportError:
        raise UserError("qlora and train.optim: paged_adamw_8bit need bitsandbytes: pip install bitsandbytes") from None
    return bitsandbytes


def load_4bit(model_dir, cfg: TrainConfig, local_rank: int):
    """QLoRA's base: NF4 weights with double quantization, bf16 compute, one copy per GPU.

    Not peft's ``prepare_model_for_kbit_training``: it casts every non-4-bit weight to fp32 —
    on a Qwen2.5-7B config that is the two 545M-parameter embedding matrices, +4.4 GB, which
    kept QLoRA's peak at 64% of bf16 LoRA's (measured, docs/benchmarks.md). In bf16 compute the
    frozen norms and embeddings need no fp32 copy; the loop enables gradient checkpointing and
    input gradients as it does for LoRA."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    bnb()
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                               bnb_4bit_use_double_quant=True)
    return AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, dtype=torch.bfloat16,
                                                device_map={"": local_rank}, use_safetensors=True,
                                                trust_remote_code=cfg.trust_remote_code)


def host_embeddings(model) -> bool:
    """Keep a frozen, untied input embedding in CPU memory: each forward looks its tokens up on the
    CPU and sends only those rows to the GPU (a 2048-token row of Qwen2.5-7B: 15 MB instead of a
    1.1 GB matrix held on the GPU). Exact (a lookup moves no numbers). Called after LoRA wraps the
    model: not when the matrix trains (``lora.modules_to_save``) or is tied to the output head (the
    head needs it on the GPU). Returns whether it moved."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    weight = getattr(emb, "weight", None)
    if weight is None or weight.requires_grad or (head is not None and head.weight is weight):
        return False
    device = weight.device
    if device.type != "cuda":
        return False
    emb.to("cpu")

    def ids_to_host(module, args):
        return (args[0].to("cpu"),) + tuple(args[1:])

    def rows_to_device(module, args, out):
        return out.to(device, non_blocking=True)

    emb.register_forward_pre_hook(ids_to_host, prepend=True)
    emb.register_forward_hook(rows_to_device, prepend=True)  # before the input-gradient hook of checkpointing
    return True
