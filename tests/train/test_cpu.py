"""The CPU speed-ups of the loop (train/cpu.py, issue 24) keep the arithmetic: the answer-only
output layer gives the model's own loss and gradients, the fast dropout drops with the asked
rate and keeps the expectation, and the bf16 path (frozen weights held in bf16, fp32 attention)
matches plain autocast."""
import torch

from tunesmith.train.cpu import fast_dropout, fast_lora_dropout, precast_frozen, use_fp32_attention
from tunesmith.train.objectives.sft import SFT, _keeps_logits_by_mask

from tests.train.test_packing import loss_and_grads, lora_model, rows


def test_answer_only_logits_give_the_models_own_loss_and_grads(tiny_model, tokenizer):
    model = lora_model(tiny_model, "sdpa")
    assert _keeps_logits_by_mask(model)
    data, obj = rows(len(tokenizer)), SFT()
    fast, g1 = loss_and_grads(model, obj, data, tokenizer.pad_token_id)
    model.zero_grad(set_to_none=True)
    batch = obj.collate(data, tokenizer.pad_token_id)
    own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                num_items_in_batch=obj.count(data)).loss
    own.backward()
    torch.testing.assert_close(fast.detach(), own.detach(), rtol=1e-6, atol=1e-6)
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(g1[n], p.grad, rtol=1e-5, atol=1e-7)


def test_fast_dropout_rate_scale_and_eval():
    torch.manual_seed(0)
    drop = fast_dropout(0.05)
    x = torch.ones(500, 1000)
    y = drop.train()(x)
    assert abs(float((y == 0).float().mean()) - 0.05) < 0.002  # 500k draws
    assert abs(float(y.mean()) - 1.0) < 0.005  # kept values scaled by 1 / the exact keep rate
    assert torch.equal(y[y > 0], torch.full_like(y[y > 0], 65536 / (65536 - 3277)))
    assert drop.eval()(x) is x
    torch.manual_seed(0)
    assert torch.equal(drop.train()(x), y)  # the torch seed decides the masks (resume replays them)


def test_bf16_path_matches_plain_autocast(tiny_model, tokenizer):
    data, obj = rows(len(tokenizer)), SFT()
    plain, fast = lora_model(tiny_model, "sdpa"), lora_model(tiny_model, "sdpa")
    assert use_fp32_attention(fast.get_base_model())
    assert fast_lora_dropout(fast) == 0  # dropout 0: nothing to swap
    frozen = [n for n, p in fast.named_parameters() if not p.requires_grad]
    assert precast_frozen(fast, torch.bfloat16) == len(frozen) > 0
    assert all((p.dtype == torch.float32) == p.requires_grad for p in fast.parameters())  # LoRA stays fp32
    out = {}
    for name, model in (("plain", plain), ("fast", fast)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out[name] = loss_and_grads(model, obj, data, tokenizer.pad_token_id)
    torch.testing.assert_close(out["fast"][0], out["plain"][0], rtol=2e-2, atol=2e-2)
    a, b = (torch.cat([g.flatten() for g in out[k][1].values()]) for k in ("plain", "fast"))
    assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.99
