"""``kernels.recompute_mlp_product`` (issue 24, memory): each MLP's ``act(gate) * up`` — the down
projection's input, the widest activation of a layer — is recomputed in the backward instead of kept.
The numbers stay the same (loss and LoRA gradients bit-identical), the step keeps fewer bytes, and an
MLP too narrow to gain is left alone. (tests/gpu/test_memory.py measures CUDA memory, Liger's SwiGLU too.)"""
import torch

from tunesmith.train.kernels import recompute_mlp_product, share_lora_inputs
from tunesmith.train.objectives.sft import SFT

from tests.train.test_lora_inputs import _step
from tests.train.test_packing import rows

HIDDEN, INTER = 16, 96


def _model(vocab: int, inter: int = INTER):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(hidden_size=HIDDEN, intermediate_size=inter, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=vocab, max_position_embeddings=512)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    torch.manual_seed(1)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                           init_lora_weights=False))


def _alive_after_forward(model, data, pad_id) -> int:
    """Bytes the forward leaves allocated (what the backward will read), from torch.profiler's
    allocation records: the CPU has no ``memory_allocated``, and a saved-tensor hook cannot see inside
    a checkpoint."""
    from torch.profiler import ProfilerActivity, profile

    obj = SFT()
    batch = obj.collate(data, pad_id)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = obj.loss(model, batch, obj.count(data))  # held: what it keeps stays allocated
    kept = sum(e.self_cpu_memory_usage for e in prof.events())
    del loss
    return kept


def test_recomputed_mlp_product_keeps_the_numbers_and_fewer_bytes(tokenizer):
    data, vocab, pad = rows(len(tokenizer)), len(tokenizer), tokenizer.pad_token_id
    plain, lean = _model(vocab), _model(vocab)
    for m in (plain, lean):
        share_lora_inputs(m)
    assert recompute_mlp_product(lean) == 2
    loss_a, grads_a, _ = _step(plain, data, pad)
    loss_b, grads_b, _ = _step(lean, data, pad)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)
    # Gone per token and layer: silu(gate) and the product (2 × intermediate, bf16); kept instead: the
    # down projection's matmul outputs (2 × hidden + r). Measured here: 150 of the 156 values expected.
    kept_a, kept_b = _alive_after_forward(plain, data, pad), _alive_after_forward(lean, data, pad)
    tokens = SFT().collate(data, pad)["input_ids"].numel()
    assert kept_a - kept_b >= 0.9 * tokens * 2 * (2 * INTER - 2 * HIDDEN - 4) * 2, (kept_a, kept_b)


def test_a_narrow_mlp_is_left_alone_and_without_grad_nothing_changes(tokenizer):
    narrow = _model(len(tokenizer), inter=2 * HIDDEN)
    assert recompute_mlp_product(narrow) == 0
    model = _model(len(tokenizer))
    x = torch.randint(0, len(tokenizer), (2, 9))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(input_ids=x).logits
        assert recompute_mlp_product(model) == 2
        after = model(input_ids=x).logits
    assert torch.equal(before, after)
