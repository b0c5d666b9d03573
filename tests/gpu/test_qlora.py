"""On CUDA with bitsandbytes: QLoRA keeps a frozen, untied input embedding in CPU memory (train/qlora.py) —
the same loss and LoRA gradients as with the matrix on the GPU, the matrix's bytes off the GPU, a tied one
left in place — and ``tunesmith train`` says so in its first line and its manifest."""
import json
from types import SimpleNamespace

import torch

from tunesmith.train.qlora import host_embeddings, load_4bit

from tests.conftest import build_tiny_model
from tests.gpu.test_kernels import loss_and_grads, rows
from tests.train.test_train import recipe, train_cli

VOCAB, HIDDEN = 32000, 256


def saved(path, tie: bool):
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(hidden_size=HIDDEN, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=1024, tie_word_embeddings=tie)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(path, safe_serialization=True)
    return path


def qlora(path):
    from peft import LoraConfig, get_peft_model

    m = load_4bit(path, SimpleNamespace(trust_remote_code=False), 0)
    torch.manual_seed(1)
    return get_peft_model(m, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                        init_lora_weights=False)).train()


def test_host_embeddings_same_numbers_matrix_off_the_gpu(tmp_path):
    d = saved(tmp_path / "untied", tie=False)
    la, ga = loss_and_grads(qlora(d), None, rows())
    m = qlora(d)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    assert host_embeddings(m)
    assert m.get_input_embeddings().weight.device.type == "cpu"
    assert before - torch.cuda.memory_allocated() >= VOCAB * HIDDEN * 2  # the bf16 matrix left the GPU
    lb, gb = loss_and_grads(m, None, rows())
    assert torch.equal(la, lb) and all(torch.equal(ga[n], gb[n]) for n in ga)


def test_tied_or_trained_embeddings_stay(tmp_path):
    assert not host_embeddings(qlora(saved(tmp_path / "tied", tie=True)))  # the output head needs it
    m = load_4bit(saved(tmp_path / "untied", tie=False), SimpleNamespace(trust_remote_code=False), 0)
    from peft import LoraConfig, get_peft_model

    m = get_peft_model(m, LoraConfig(r=8, target_modules="all-linear", modules_to_save=["embed_tokens"]))
    assert not host_embeddings(m)


def test_train_qlora_says_embeddings_in_cpu_memory(embedded_dir, tmp_path):
    base = build_tiny_model(tmp_path / "untied", embedded_dir, arch="qwen2", tie=False)
    r = train_cli(recipe(tmp_path, base, "q", method="qlora", device="cuda", dtype="bf16",
                         **{"lora.dropout": 0.0, "train.max_steps": 3, "train.save_every": None}))
    assert "input embeddings in CPU memory" in r.stdout.splitlines()[0]
    run = tmp_path / "q"
    assert json.loads((run / "manifest.json").read_text())["schedule"]["embeddings"] == "cpu"
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(losses) == 3 and all(x == x for x in losses)
