"""On CUDA, the two memory settings of issue 24 keep the numbers and keep less for the backward:
``share_lora_inputs`` (no second bf16 copy of an adapted projection's input under autocast) and
``gradient_checkpointing: offload`` (each checkpointed layer's input waits in pinned CPU memory).
Memory is read right after the forward: what the step keeps for its backward."""
from types import SimpleNamespace

import torch

from tunesmith.train.kernels import share_lora_inputs
from tunesmith.train.step import offload

from tests.gpu.test_kernels import rows

LAYERS, HIDDEN = 6, 256


def model(gc: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(hidden_size=HIDDEN, intermediate_size=512, num_hidden_layers=LAYERS, num_attention_heads=4,
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

    on = SimpleNamespace(cfg=SimpleNamespace(train=SimpleNamespace(gradient_checkpointing="offload")))
    a = step(model(True), contextlib.nullcontext())
    b = step(model(True), offload(on))
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][n], b[1][n]) for n in a[1])
    assert a[2] - b[2] >= LAYERS * a[3] * HIDDEN * 2, (a[2], b[2])  # every layer's input left the GPU
