"""On CUDA: Liger's fused kernels give the plain path's loss and gradients (bf16 tolerance),
honour the loop's normaliser, and packed rows equal padded rows there too."""
import json

import pytest
import torch

from tunesmith.data.render import IGNORE
from tunesmith.train import kernels
from tunesmith.train.objectives.sft import SFT

from tests.conftest import build_tiny_model
from tests.train.test_train import recipe, train_cli

LENGTHS = [37, 120, 5, 64, 250, 18, 90, 33]
VOCAB = 32000


def make_model(dtype, choice: str, attn: str = "sdpa", compiled: bool = False, arch: str = "qwen2"):
    """A small random Qwen2 or Llama (seeded: the same weights every call), kernels applied,
    then LoRA. Liger patches functions of transformers' module for the family process-wide,
    so tests that need an unpatched model use the other family."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    family = {"qwen2": Qwen2Config, "llama": LlamaConfig}[arch]
    cfg = family(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=1024, tie_word_embeddings=True)
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).cuda()
    kernels.patch_model(model, choice, compiled)
    torch.manual_seed(1)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             init_lora_weights=False))
    return model.train()


def rows() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for n in LENGTHS:
        ids = torch.randint(10, VOCAB, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE] * (n // 3) + ids[n // 3:]})
    return out


def loss_and_grads(model, pack_len, data, normaliser=None):
    obj = SFT()
    obj.pack_len = pack_len
    batch = {k: v.cuda() for k, v in obj.collate(data, 0).items()}
    model.zero_grad(set_to_none=True)
    loss, _ = obj.loss(model, batch, normaliser or obj.count(data))
    loss.backward()
    return loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}


def close(a: dict, b: dict, rel: float) -> None:
    for n in a:  # relative to the tensor's scale: bf16 kernels round differently per element
        assert (a[n] - b[n]).norm() <= rel * b[n].norm() + 1e-6, n


def test_liger_matches_plain_and_honours_the_normaliser():
    assert kernels.resolve_kernels("auto", "cuda", "qwen2") == "liger"  # the GPU machine has liger-kernel
    data = rows()
    # the plain path first: Liger also patches module-level functions of transformers' qwen2
    plain_loss, plain_grads = loss_and_grads(make_model(torch.bfloat16, "none"), None, data)
    liger = make_model(torch.bfloat16, "liger")
    inner = liger.get_base_model()
    assert inner.model.norm._get_name() == "LigerRMSNorm" and "forward" in vars(inner)  # really patched
    loss, grads = loss_and_grads(liger, None, data)
    torch.testing.assert_close(loss, plain_loss, rtol=2e-2, atol=2e-2)
    close(grads, plain_grads, 0.05)
    doubled, _ = loss_and_grads(liger, None, data, normaliser=2 * SFT().count(data))
    torch.testing.assert_close(doubled * 2, loss, rtol=1e-3, atol=1e-3)  # sum / num_items_in_batch


@pytest.mark.parametrize("choice", ["none", "liger"])
def test_packed_equals_padded_on_cuda(choice):
    model = make_model(torch.float32, choice)
    data = rows()
    l0, g0 = loss_and_grads(model, None, data)
    l1, g1 = loss_and_grads(model, 256, data)
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-5)
    close(g1, g0, 1e-4)


def test_train_on_cuda_picks_liger_and_packs(embedded_dir, tmp_path):
    base = build_tiny_model(tmp_path / "qwen2", embedded_dir, arch="qwen2")
    over = {"device": "cuda", "dtype": "bf16", "lora.dropout": 0.0, "train.max_steps": 3, "train.save_every": None}
    on = recipe(tmp_path, base, "auto", **over)
    off = recipe(tmp_path, base, "plain", **over, **{"train.kernels": "none", "train.packing": False})
    train_cli(on)
    train_cli(off)
    m = json.loads((tmp_path / "auto" / "manifest.json").read_text())["schedule"]
    assert m["kernels"] == "liger" and m["packing"] is True
    loss = {k: [json.loads(x)["loss"] for x in (tmp_path / k / "metrics.jsonl").read_text().splitlines()
                if '"loss"' in x] for k in ("auto", "plain")}
    assert len(loss["auto"]) == 3 and max(abs(a - b) for a, b in zip(loss["auto"], loss["plain"])) < 0.05


@pytest.mark.parametrize("choice", ["none", "liger"])
def test_compiled_layers_match_eager(choice):
    data = rows()
    plain = make_model(torch.float32, choice, compiled=True, arch="llama")
    l0, g0 = loss_and_grads(plain, 256, data)
    compiled = make_model(torch.float32, choice, compiled=True, arch="llama")  # liger: only the fused loss
    assert kernels.compile_layers(compiled) == 2  # both decoder layers, LoRA inside them
    l1, g1 = loss_and_grads(compiled, 256, data)
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-4)
    close(g1, g0, 1e-3)
    assert set(g1) == set(g0)  # parameter names unchanged: checkpoints and adapters load as before
