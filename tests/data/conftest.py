"""Fixtures for the data tests: the embedded model's real tokenizer, and copies of it
carrying the Qwen2.5- and Qwen3-style templates of data_templates.py."""
from __future__ import annotations

import copy

import pytest
from data_templates import QWEN3, QWEN25


class _Families(dict):
    def __repr__(self):  # hypothesis prints fixtures of failing cases: keep it one line
        return f"tokenizers({', '.join(self)})"


@pytest.fixture(scope="session")
def smol_tok(tokenizer):
    """The embedded SmolLM2's real tokenizer (tests/conftest.py loads it once)."""
    return tokenizer


@pytest.fixture(scope="session")
def tokenizers(smol_tok):
    """family name → tokenizer; the template families the property tests cover."""
    out = _Families(smollm2=smol_tok)
    for name, template in (("qwen25", QWEN25), ("qwen3", QWEN3)):
        tok = copy.deepcopy(smol_tok)
        tok.chat_template = template
        out[name] = tok
    return out
