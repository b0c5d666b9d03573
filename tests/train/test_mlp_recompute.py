"""``kernels.recompute_mlp_product`` (issue 24, memory): each MLP's ``act(gate) * up`` — the down
projection's input, the widest activation of a layer — is recomputed in the backward instead of kept.
The numbers stay the same (loss and LoRA gradients bit-identical), the step keeps fewer bytes, and an
MLP too narrow to gain is left alone. (tests/gpu/test_memory.py measures CUDA memory, Liger's SwiGLU too.)"""
import pytest
import torch

from tunesmith.train.kernels import recompute_mlp_product, share_lora_inputs
from tunesmith.train.objectives.sft import SFT

from tests.conftest import build_tiny_model
from tests.train.test_lora_inputs import _step
from tests.train.test_packing import rows
from tests.train.test_train import recipe, train_cli

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


@pytest.mark.parametrize("over,message", [
    ({"method": "full"}, "train.mlp_recompute: for a LoRA"),
    ({"objective": "grpo", "grpo": {"rewards": [{"name": "label"}]}}, "train.mlp_recompute: for a LoRA"),
    ({"train": {"mlp_recompute": True, "gradient_checkpointing": "offload"}}, "already recompute the layer"),
    ({"train": {"mlp_recompute": True, "compile": True}}, "already recompute the layer")])
def test_a_combination_it_cannot_serve_is_one_line(over, message):
    from pydantic import ValidationError

    from tunesmith.train.config import TrainConfig

    body = {"model": "x", "train": {"mlp_recompute": True}, **over}
    with pytest.raises(ValidationError, match=message):
        TrainConfig(**body)


def test_the_setting_is_said_recorded_and_changes_no_number(tmp_path, embedded_dir, tiny_model):
    """``train.mlp_recompute: true`` through ``tunesmith train``: the first line and the manifest say so, the
    losses and the adapter equal the run without it; an MLP too narrow to gain is left alone and said off."""
    import json

    from safetensors.torch import load_file

    wide = build_tiny_model(tmp_path / "wide", embedded_dir, intermediate_size=INTER)
    runs = {}
    for name, on in (("off", False), ("on", True)):
        out = train_cli(recipe(tmp_path, wide, name, **{"train.mlp_recompute": on, "train.max_steps": 3}))
        first = next(x for x in out.stdout.splitlines() if x.startswith("train:"))
        assert first.endswith(f"mlp recompute {name}"), first
        run = tmp_path / name
        assert json.loads((run / "manifest.json").read_text())["schedule"]["mlp_recompute"] is on
        runs[name] = ([json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()
                       if '"loss"' in x], load_file(run / "adapter_model.safetensors"))
    assert runs["on"][0] == runs["off"][0] and len(runs["on"][0]) == 3
    assert all(torch.equal(runs["on"][1][k], runs["off"][1][k]) for k in runs["off"][1])
    narrow = train_cli(recipe(tmp_path, tiny_model, "narrow", **{"train.mlp_recompute": True, "train.max_steps": 1}))
    assert "mlp recompute off" in narrow.stdout
