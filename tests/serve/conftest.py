"""Session servers for the serve tests (one model load each) and a real LoRA adapter."""
from __future__ import annotations

import pytest
from serve_helpers import NAME, TOOL_NAME, Running
from tool_model import build_tool_model

from tunesmith.serve import ServeConfig


@pytest.fixture(scope="session")
def server(embedded_dir):
    s = Running(ServeConfig(model=str(embedded_dir), served_name=NAME, max_batch=8))
    yield s
    s.close()


@pytest.fixture(scope="session")
def tool_server(tmp_path_factory, embedded_dir):
    """A tiny random-weight model whose chat template renders tools (tests/serve/tool_model.py)."""
    model = build_tool_model(tmp_path_factory.mktemp("tools") / "model", embedded_dir)
    s = Running(ServeConfig(model=str(model), served_name=TOOL_NAME, max_batch=8))
    yield s
    s.close()


@pytest.fixture(scope="session")
def lora_dir(tmp_path_factory, embedded_dir):
    """A real peft LoRA adapter on the embedded model with random non-zero weights (B is not zero-initialised),
    saved with save_pretrained: it changes the model's answers the way a trained adapter would."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                                   init_lora_weights=False))
    out = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(out)
    return out
