"""``kernels.share_lora_inputs`` (issue 24, memory): under bf16 autocast with fp32 adapters over a
bf16 model — how a LoRA trains on CUDA — peft's cast of each adapted projection's input to fp32 made
autocast keep a second bf16 copy of it for the backward. Without that cast the very same numbers flow
(loss and gradients bit-identical) and the step keeps fewer bytes for its backward."""
import torch

from tunesmith.train.kernels import share_lora_inputs
from tunesmith.train.objectives.sft import SFT

from tests.train.test_packing import rows


def _model(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16, attn_implementation="sdpa")
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                           init_lora_weights=False))


def _step(model, data, pad_id):
    """Loss, LoRA gradients and the bytes autograd kept for the backward (distinct storages)."""
    obj, kept = SFT(), {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = obj.loss(model, obj.collate(data, pad_id), obj.count(data))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, sum(kept.values())


def test_shared_lora_inputs_keep_the_numbers_and_fewer_bytes(tiny_model, tokenizer):
    data = rows(len(tokenizer))
    plain, shared = _model(tiny_model), _model(tiny_model)
    assert all(p.dtype == torch.float32 for p in shared.parameters() if p.requires_grad)  # peft's fp32 adapters
    assert share_lora_inputs(shared) == 2 * 7  # 2 layers x q, k, v, o, gate, up, down
    loss_a, grads_a, bytes_a = _step(plain, data, tokenizer.pad_token_id)
    loss_b, grads_b, bytes_b = _step(shared, data, tokenizer.pad_token_id)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)
    # What no longer is kept: the bf16 copy of an adapted projection's input where another projection
    # already keeps that input — k and v beside q, up beside gate, the frozen o beside its adapter: at
    # least four hidden-wide copies per token per layer (measured here on the CPU: exactly four; the
    # first adapter of a group still keeps a copy of its own in torch's CPU linear).
    cfg, batch = shared.config, SFT().collate(data, tokenizer.pad_token_id)["input_ids"]
    assert bytes_a - bytes_b >= batch.numel() * cfg.num_hidden_layers * 4 * cfg.hidden_size * 2, (bytes_a, bytes_b)
