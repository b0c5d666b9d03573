"""On CUDA, the memory settings of issue 24 keep the numbers and keep less for the backward:
``share_lora_inputs`` (no second bf16 copy of an adapted projection's input under autocast),
``recompute_mlp_product`` (act(gate)*up recomputed in the backward, with and without Liger's SwiGLU) and
``gradient_checkpointing: offload`` (each checkpointed layer's input waits in pinned CPU memory).
Memory is read right after the forward: what the step keeps for its backward."""
from types import SimpleNamespace

import torch

from tunesmith.train.kernels import recompute_mlp_product, share_lora_inputs
from tunesmith.train.step import offload

from tests.gpu.test_kernels import rows

LAYERS, HIDDEN, INTER = 6, 256, 512


def model(gc: bool, inter: int = INTER):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(hidden_size=HIDDEN, intermediate_size=inter, num_hidden_layers=LAYERS, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=32000, max_position_embeddings=1024, tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).cuda()
    if gc:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m.enable_input_require_grads()
    torch.manual_seed(1)
    return get_peft_model(m, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                        init_lora_weights=False)).train()


def step(m, ctx):
    from tunesmith.train.objectives.sft import SFT

    obj, data = SFT(), rows()
    batch = {k: v.cuda() for k, v in obj.collate(data, 0).items()}
    m.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with ctx:
            loss, _ = obj.loss(m, batch, obj.count(data))
        kept = torch.cuda.memory_allocated() - before
        loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}
    return loss.detach(), grads, kept, batch["input_ids"].numel()


def test_shared_lora_inputs_same_numbers_less_kept():
    import contextlib

    a = step(model(False), contextlib.nullcontext())
    shared = model(False)
    assert share_lora_inputs(shared) == 7 * LAYERS
    b = step(shared, contextlib.nullcontext())
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][n], b[1][n]) for n in a[1])
    assert a[2] - b[2] >= 4 * LAYERS * a[3] * HIDDEN * 2, (a[2], b[2])  # at least four hidden-wide copies a layer


def test_offloaded_checkpointing_same_numbers_less_kept():
    import contextlib

    on = SimpleNamespace(cfg=SimpleNamespace(train=SimpleNamespace(gradient_checkpointing="offload")),
                         accelerator=SimpleNamespace(device=torch.device("cuda")))
    a = step(model(True), contextlib.nullcontext())
    b = step(model(True), offload(on))
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][n], b[1][n]) for n in a[1])
    assert a[2] - b[2] >= LAYERS * a[3] * HIDDEN * 2, (a[2], b[2])  # every layer's input left the GPU


def test_recomputed_mlp_product_same_numbers_less_kept():
    import contextlib

    wide = 4 * HIDDEN  # recompute_mlp_product takes only MLPs wider than twice the hidden size
    plain, lean = model(False, wide), model(False, wide)
    for m in (plain, lean):
        share_lora_inputs(m)
    assert recompute_mlp_product(lean) == LAYERS
    a = step(plain, contextlib.nullcontext())
    b = step(lean, contextlib.nullcontext())
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][n], b[1][n]) for n in a[1])
    # silu(gate) and the product are no longer kept; the down projection's matmul outputs (2 hidden + r) are
    assert a[2] - b[2] >= LAYERS * a[3] * (wide - HIDDEN) * 2, (a[2], b[2])


def test_recomputed_mlp_product_keeps_ligers_swiglu_and_its_numbers():
    import contextlib

    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    wide = 6 * HIDDEN  # Qwen2.5's ratio of intermediate to hidden (4864 / 896 = 5.4)
    plain, lean = model(False, wide), model(False, wide)
    for m in (plain, lean):
        _apply_liger_kernel_to_instance(model=m.get_base_model(), rope=False, rms_norm=False, swiglu=True,
                                        cross_entropy=False, fused_linear_cross_entropy=False)
        share_lora_inputs(m)
    assert recompute_mlp_product(lean) == LAYERS
    a = step(plain, contextlib.nullcontext())
    b = step(lean, contextlib.nullcontext())
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][n], b[1][n]) for n in a[1])
    # Liger's product (its kernel keeps gate and up only) is recomputed: an intermediate-wide tensor less,
    # the down projection's matmul outputs (2 hidden + r) more
    assert a[2] - b[2] >= LAYERS * a[3] * (wide - 2 * HIDDEN - 8) * 2, (a[2], b[2])
