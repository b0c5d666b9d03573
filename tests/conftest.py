"""Shared fixtures: the embedded model's folder and tiny random-weight models built locally."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

EMBEDDED = "smollm2-135m-instruct"


def pytest_configure(config):
    # Convert the embedded model once, in the controller, before xdist workers start.
    if not hasattr(config, "workerinput"):
        from tunesmith.models import resolve_model

        resolve_model(EMBEDDED)
    else:
        import torch

        # Two workers on two cores: one thread each, also for the CLI subprocesses tests start.
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    from tunesmith.models import resolve_model

    return resolve_model(EMBEDDED)


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):
    from tunesmith.models import load_tokenizer

    return load_tokenizer(embedded_dir)


def build_tiny_model(path: Path, tokenizer_dir: Path, seed: int = 0, arch: str = "llama",
                     intermediate_size: int = 32, tie: bool = True) -> Path:
    """A 2-layer, hidden-16 random-weight model with the embedded model's real tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen2Config

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    cfg = cls(hidden_size=16, intermediate_size=intermediate_size, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
              vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=tie,
              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, embedded_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", embedded_dir)


@pytest.fixture
def ts_home(tmp_path, monkeypatch) -> Path:
    """An empty TUNESMITH_HOME for tests that must see a fresh cache."""
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
