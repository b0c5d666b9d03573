"""Packing is exact: packed rows give the same loss and LoRA gradients as padded rows, and only
because each row's attention is confined to itself (the 4-D block-diagonal mask)."""
import json

import pytest
import torch

from tunesmith.data.render import IGNORE
from tunesmith.train.batching import block_causal_mask, pack_bins, pack_collate
from tunesmith.train.objectives.sft import SFT

from tests.train.test_train import recipe, train_cli

LENGTHS = [5, 17, 9, 30, 3, 12, 21]


def rows(vocab: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for n in LENGTHS:
        ids = torch.randint(10, vocab, (n,), generator=g).tolist()
        prompt = n // 3  # a prompt part that is not trained on, as in a chat row
        out.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return out


def lora_model(tiny_model, attn: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=attn)
    # init_lora_weights=False: B is random too, so both A and B get non-zero gradients
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                           init_lora_weights=False))


def loss_and_grads(model, obj: SFT, data: list[dict], pad_id: int):
    model.zero_grad(set_to_none=True)
    loss, _ = obj.loss(model, obj.collate(data, pad_id), obj.count(data))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_loss_and_grads_equal_padded(tiny_model, tokenizer, attn):
    model = lora_model(tiny_model, attn)
    data = rows(len(tokenizer))
    padded, packed = SFT(), SFT()
    packed.pack_len = 40  # several bins, several rows in most of them
    batch = packed.collate(data, tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] < len(data)  # rows really share bins
    l0, g0 = loss_and_grads(model, padded, data, tokenizer.pad_token_id)
    l1, g1 = loss_and_grads(model, packed, data, tokenizer.pad_token_id)
    torch.testing.assert_close(l1, l0, rtol=1e-6, atol=1e-6)
    assert len(g0) == len(g1) > 0 and all(g.abs().sum() > 0 for g in g0.values())
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-7)


def test_without_the_block_mask_rows_leak_into_each_other(tiny_model, tokenizer):
    """The same packed tensors with a plain all-ones mask (what packing without the 4-D mask
    amounts to) give a different loss: the equality above depends on the mask."""
    model = lora_model(tiny_model, "sdpa")
    data = rows(len(tokenizer))
    obj = SFT()
    obj.pack_len = 40
    batch = obj.collate(data, tokenizer.pad_token_id)
    with torch.no_grad():
        exact, _ = obj.loss(model, batch, obj.count(data))
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                      attention_mask=torch.ones_like(batch["input_ids"]), labels=batch["labels"],
                      num_items_in_batch=obj.count(data)).loss
    # ten times the tolerance the exact test allows (a tiny random model's attention is nearly
    # uniform, so the leak is small in absolute terms, yet far above fp32 rounding)
    assert abs(float(leaky) - float(exact)) > 1e-5


def test_pack_layout_positions_labels_and_mask():
    data = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4, 5], "labels": [IGNORE, 5]},
            {"input_ids": [6, 7, 8, 9], "labels": [6, 7, 8, 9]}]
    # packed 2 × 6 = padded 3 × 4 tokens: by default such a batch stays padded (no gain to pay
    # for the 4-D mask); min_gain=1 packs whenever rows share a bin
    assert set(pack_collate(data, 0, width=6)) == {"input_ids", "attention_mask", "labels"}
    b = pack_collate(data, 0, width=6, min_gain=1.0)
    # first-fit decreasing: the 4-row first, the 2-row fills its bin, the 3-row opens a second bin
    assert b["input_ids"].tolist() == [[6, 7, 8, 9, 4, 5], [1, 2, 3, 0, 0, 0]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]
    # each row's first label is ignored: nothing is predicted across a boundary
    assert b["labels"].tolist() == [[IGNORE, 7, 8, 9, IGNORE, 5], [IGNORE, 2, 3, IGNORE, IGNORE, IGNORE]]
    allowed = block_causal_mask(b["segments"], torch.float32)[:, 0] == 0
    assert allowed[0, 5].tolist() == [False] * 4 + [True, True]  # the second row sees only itself
    assert allowed[0, 3].tolist() == [True] * 4 + [False, False]
    assert allowed[1].diagonal().all()  # padding attends to itself: no all-masked row, no NaN
    # rows that share no bin stay plain padded rows (sdpa keeps its causal fast path)
    assert set(pack_collate(data, 0, width=4, min_gain=1.0)) == {"input_ids", "attention_mask", "labels"}


def test_pack_bins_first_fit_decreasing():
    bins = pack_bins([7, 2, 5, 9, 1, 12], width=10)
    assert bins == [[5], [3, 4], [0, 1], [2]]  # a row longer than the width gets a bin of its own
    assert sorted(j for b in bins for j in b) == list(range(6))


def test_training_with_packing_matches_padded_and_batch_tokens_runs(tiny_model, tmp_path):
    """Through `tunesmith train`: the loss of every step is the same with packing on and off
    (same rows per step, dropout off), and a token budget forms its own steps."""
    common = {"lora.dropout": 0.0, "train.max_steps": 3, "train.save_every": None, "train.lr": 1e-3}
    on = recipe(tmp_path, tiny_model, "on", **common, **{"train.pack_len": 128})
    off = recipe(tmp_path, tiny_model, "off", **common, **{"train.packing": False})
    tok = recipe(tmp_path, tiny_model, "tok", **{**common, "train.max_steps": None, "train.epochs": 1,
                                                 "train.batch_tokens": 140, "train.grad_accum": 1})
    for r in (on, off, tok):
        train_cli(r)
    loss = {k: [json.loads(x)["loss"] for x in (tmp_path / k / "metrics.jsonl").read_text().splitlines()
                if '"loss"' in x] for k in ("on", "off", "tok")}
    assert len(loss["on"]) == 3 and max(abs(a - b) for a, b in zip(loss["on"], loss["off"])) < 1e-5
    m = json.loads((tmp_path / "on" / "manifest.json").read_text())["schedule"]
    assert m["packing"] is True and m["kernels"] == "none"
    m = json.loads((tmp_path / "tok" / "manifest.json").read_text())["schedule"]
    # 20 toy rows of 50–60 tokens, ≤ 140 tokens per micro-batch: 2 rows per step, one epoch
    assert m["batch_tokens"] == 140 and m["global_batch"] is None and m["steps"] == m["steps_per_epoch"] == 10
    assert len(loss["tok"]) == 10


def test_kernel_switch_on_cpu():
    from tunesmith.errors import UserError
    from tunesmith.train import kernels
    from tunesmith.train.config import TrainConfig

    assert kernels.resolve_kernels("auto", "cpu", "llama") == "none"
    assert kernels.resolve_kernels("none", "cuda", "llama") == "none"
    with pytest.raises(UserError, match="train.kernels: liger needs a CUDA GPU"):
        kernels.resolve_kernels("liger", "cpu", "llama")
    with pytest.raises(ValueError, match="train.kernels: liger needs a CUDA GPU"):
        TrainConfig(device="cpu", train={"kernels": "liger"})
    with pytest.raises(ValueError, match="train.packing: dpo"):
        TrainConfig(objective="dpo", train={"packing": True})


def test_eval_sums_packed_equal_padded(tiny_model, tokenizer):
    model = lora_model(tiny_model, "sdpa").eval()
    data = rows(len(tokenizer))
    packed = SFT()
    packed.pack_len = 40
    with torch.no_grad():
        a = SFT().eval_sums(model, SFT().collate(data, tokenizer.pad_token_id))
        b = packed.eval_sums(model, packed.collate(data, tokenizer.pad_token_id))
    assert int(a["tokens"]) == int(b["tokens"]) == SFT().count(data)
    assert int(a["correct"]) == int(b["correct"])
    torch.testing.assert_close(b["loss"], a["loss"], rtol=1e-6, atol=1e-5)
