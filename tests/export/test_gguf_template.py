"""The Modelfile's TEMPLATE, rendered by Go's real text/template, equals apply_chat_template.

Real chat templates: the embedded SmolLM2's own, and the verbatim Qwen2.5, Qwen3 and Llama 3
templates TRL ships to recognise those models (trl/chat_templates/, a dev dependency).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tunesmith.export import ollama

GO = Path(__file__).with_name("render_template.go")
TRL_TEMPLATES = Path(list(importlib.util.find_spec("trl").submodule_search_locations)[0]) / "chat_templates"


def _go_render(template: str, cases) -> list[str]:
    assert shutil.which("go"), "Go is needed for this test: apt-get install golang-go (make test installs it)"
    values = [{"Messages": [{"Role": m["role"], "Content": m["content"]} for m in msgs],
               "IsThinkSet": think is not None, "Think": bool(think)} for msgs, think in cases]
    proc = subprocess.run(["go", "run", str(GO)], input=json.dumps({"template": template, "cases": values}),
                          capture_output=True, text=True, timeout=120, cwd=GO.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _tok(embedded_dir, template_file: str | None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_dir)
    if template_file:
        tok.chat_template = (TRL_TEMPLATES / template_file).read_text()
    return tok


@pytest.mark.parametrize("template_file,fmt,dsys", [
    (None, "chatml", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
    ("qwen2_5.jinja", "chatml", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
    ("qwen3.jinja", "qwen3", None),
    ("llama3.jinja", "llama3", None),
])
def test_go_template_renders_exactly_like_the_chat_template(embedded_dir, template_file, fmt, dsys):
    tok = _tok(embedded_dir, template_file)
    picked, found_sys = ollama.pick_format(tok)
    assert (picked.name, found_sys) == (fmt, dsys)
    got = _go_render(picked.go(found_sys), ollama.CONVERSATIONS)
    assert len(got) == len(ollama.CONVERSATIONS) >= 6
    for out, (msgs, think) in zip(got, ollama.CONVERSATIONS):
        want = ollama.jinja_render(tok, msgs, think)
        if picked.adds_bos:  # Llama 3's template starts with BOS, which llama.cpp and Ollama add themselves
            assert want.startswith(tok.bos_token)
            want = want[len(tok.bos_token):]
        assert out == want
    if fmt == "qwen3":  # thinking off really differs from on: the switch is rendered, not ignored
        assert got[4] != got[5] and got[4].endswith("<think>\n\n</think>\n\n")


def test_modelfile_stops_and_system(embedded_dir):
    tok = _tok(embedded_dir, None)
    text, fmt = ollama.modelfile("model-q4_k_m.gguf", tok, "You are Mira.")
    lines = text.splitlines()
    assert lines[0] == "FROM ./model-q4_k_m.gguf" and fmt == "chatml"
    assert 'PARAMETER stop "<|im_end|>"' in lines
    assert lines[-1] == 'SYSTEM """You are Mira."""'
    assert not any(ln.startswith("PARAMETER") and "stop" not in ln for ln in lines)  # no sampling parameters
    assert "SYSTEM" not in ollama.modelfile("m.gguf", tok, None)[0]


def test_unmatched_template_gets_no_template_and_says_so(embedded_dir):
    tok = _tok(embedded_dir, "gemma.jinja")  # Gemma's turns are not ChatML, Qwen3 or Llama 3
    assert ollama.pick_format(tok) is None
    text, fmt = ollama.modelfile("model-q8_0.gguf", tok, None)
    assert fmt is None and "TEMPLATE" not in text.replace("# No TEMPLATE", "")
    assert "no TEMPLATE" in ollama.readme("m", ["model-q8_0.gguf"], "model-q8_0.gguf", None, None)
