"""On CUDA: the packed-attention paths that skip the work between rows (train.attention: flex,
varlen) give padded rows' loss and LoRA gradients, and `tunesmith train` takes the default
one by itself (its first line and manifest say so)."""
import copy
import json
import random

import pytest
import torch

from tunesmith.data.render import IGNORE
from tunesmith.train import attention
from tunesmith.train.objectives.sft import SFT

from tests.train.test_train import recipe, train_cli

LENGTHS = [37, 120, 5, 64, 250, 18, 90, 33, 7, 141]
VOCAB = 32000


def lora_model():
    """A small random Qwen2 in bf16 with fp32 LoRA adapters (what peft gives a bf16 base), 6 query
    heads over 2 KV heads of width 64: a head count that is no power of two, as in Qwen2.5-0.5B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(hidden_size=384, intermediate_size=768, num_hidden_layers=2, num_attention_heads=6,
                      num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=1024, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).cuda()
    torch.manual_seed(1)
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                            init_lora_weights=False)).train()


def rows() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for n in LENGTHS:
        ids = torch.randint(10, VOCAB, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE] * (n // 3) + ids[n // 3:]})
    return out


def run(model, path: str, pack_len, data, autocast=True):
    obj = SFT()
    obj.pack_len, obj.attention = pack_len, path
    batch = {k: v.cuda() for k, v in obj.collate(data, 0).items()}
    assert ("segments" in batch) == bool(pack_len)
    model.get_base_model().set_attn_implementation(attention.implementation(path) or "sdpa")
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):  # as the loop runs on CUDA
        loss, _ = obj.loss(model, batch, obj.count(data))
    loss.backward()
    return loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}


def rel(a, b) -> float:
    return float((a - b).norm() / (b.norm() + 1e-12))


@pytest.mark.parametrize("path", ["flex", "varlen"])
def test_packed_equals_unpacked_on_the_fast_path(path):
    data = rows()
    model = lora_model()
    truth = copy.deepcopy(model).float()  # the same weights in fp32: the reference for both bf16 runs
    l32, g32 = run(truth, "sdpa", None, data, autocast=False)
    base_l, base_g = run(model, "sdpa", None, data)  # bf16, padded rows, plain sdpa: bf16 without packing
    obj = SFT()
    obj.pack_len = 256
    assert obj.collate(data, 0)["input_ids"].shape[0] < len(data)  # rows really share bins
    rows_l, rows_g = run(model, path, None, data)  # padded rows through the same kernel
    fast_l, fast_g = run(model, path, 256, data)  # packed bins: the path a run takes by default
    # packed = unpacked on the new path, within bf16 rounding (the tolerance of tests/gpu/test_kernels.py)
    torch.testing.assert_close(fast_l, rows_l, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(fast_l, base_l, rtol=2e-2, atol=2e-2)
    assert len(fast_g) == len(base_g) > 0
    for n in base_g:
        assert rel(fast_g[n], rows_g[n]) <= 0.05 and rel(fast_g[n], base_g[n]) <= 0.05, n
        # no further from the fp32 truth than bf16 padded rows are: nothing leaks between rows
        assert rel(fast_g[n], g32[n]) <= 2 * rel(base_g[n], g32[n]) + 1e-2, n
    assert abs(float(fast_l) - float(l32)) <= 2 * abs(float(base_l) - float(l32)) + 1e-2


def test_train_on_cuda_takes_the_fast_path_by_default(embedded_dir, tmp_path):
    """`tunesmith train` on CUDA in bf16 with packing: the default attention is the fast one, its
    first line and manifest say which settings are on, and its losses are the 4-D mask's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    tok = AutoTokenizer.from_pretrained(embedded_dir)
    cfg = Qwen2Config(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)  # heads 64 wide: auto takes the fast path from 16
    torch.manual_seed(0)
    base = tmp_path / "qwen2"
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(base, safe_serialization=True)
    tok.save_pretrained(base)
    rng = random.Random(0)
    words = "model data train answer token layer value river stone cloud garden signal".split()
    data = tmp_path / "varied.jsonl"
    with data.open("w") as f:  # lengths from a few tokens to ~200: rows share bins
        for i in range(48):
            answer = " ".join(rng.choice(words) for _ in range(rng.choice([3, 10, 30, 80, 180])))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"Say {i}."},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    over = {"device": "cuda", "dtype": "bf16", "lora.dropout": 0.0, "train.max_steps": 4, "train.save_every": None,
            "train.batch_size": 8, "train.grad_accum": 1, "train.pack_len": 256, "data.cutoff_len": 256,
            "data.datasets": [{"path": str(data)}]}
    fast, mask = recipe(tmp_path, base, "auto", **over), recipe(tmp_path, base, "mask", **over,
                                                                **{"train.attention": "sdpa"})
    out = train_cli(fast).stdout
    train_cli(mask)
    first = next(line for line in out.splitlines() if line.startswith("train: "))
    assert f"| attention {attention.AUTO_CUDA} |" in first and "packing on (256-token bins)" in first, first
    assert "compile off" in first and "checkpointing off" in first and "autocast bf16" in first, first
    m = {k: json.loads((tmp_path / k / "manifest.json").read_text())["schedule"] for k in ("auto", "mask")}
    assert m["auto"]["attention"] == attention.AUTO_CUDA and m["mask"]["attention"] == "sdpa"
    assert m["auto"]["packing"] is True and m["auto"]["autocast"] == "bf16" and m["auto"]["compile"] is False
    loss = {k: [json.loads(x)["loss"] for x in (tmp_path / k / "metrics.jsonl").read_text().splitlines()
                if '"loss"' in x] for k in ("auto", "mask")}
    assert len(loss["auto"]) == 4 and max(abs(a - b) for a, b in zip(loss["auto"], loss["mask"])) < 0.05
