"""``data.template``: a shipped template (qwen3: Qwen3's conversation format, with the thinking switch) or a user's
.jinja file replaces the model's own, renders both modes, is saved by the run and kept by the merge;
a wrong choice is one line before any work. Also the task home's reasoning rows (``think``)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.models.template import SHIPPED, ensure_chat_template, supports_thinking, template_text

TRL_TEMPLATES = Path(list(importlib.util.find_spec("trl").submodule_search_locations)[0]) / "chat_templates"
CHAT = [{"role": "user", "content": "Compute 12+34"}]


def _tok(embedded_dir):
    from tunesmith.models import load_tokenizer

    return load_tokenizer(embedded_dir)


# Conversations without tools: system or not, reasoning as a field or as a <think> head, earlier and
# latest assistant turns, an empty think block, leading newlines.
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "two and two"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "<think>x</think>b"},
     {"role": "user", "content": "c"}, {"role": "assistant", "content": "<think>\ny\n</think>\n\nd"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "<think>x</think>b"}, {"role": "user", "content": "c"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "assistant", "content": "<think>t</think>e"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "\n\nb"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "<think>\n\n</think>\n\nb"}],
]


@pytest.mark.parametrize("conv", CONVERSATIONS)
def test_qwen3_renders_as_qwen3s_own_template(embedded_dir, conv):
    """Ours (written for tunesmith, no tools) renders every conversation as Qwen3's own template does
    (TRL's copy of it), in each mode, with and without the generation prompt."""
    tok, ref = _tok(embedded_dir), _tok(embedded_dir)
    ensure_chat_template(tok, "qwen3")
    ref.chat_template = (TRL_TEMPLATES / "qwen3.jinja").read_text()
    assert tok.chat_template != ref.chat_template
    for gen in (False, True):
        for think in ({}, {"enable_thinking": True}, {"enable_thinking": False}):
            assert (tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen, **think)
                    == ref.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen, **think))


def test_qwen3_renders_both_modes(embedded_dir):
    assert SHIPPED == ("qwen3",)
    assert "written for tunesmith" in template_text("qwen3")
    tok = _tok(embedded_dir)
    assert not supports_thinking(tok)  # SmolLM2's own template has no switch
    ensure_chat_template(tok, "qwen3")
    assert supports_thinking(tok)
    on = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    off = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert on == "<|im_start|>user\nCompute 12+34<|im_end|>\n<|im_start|>assistant\n"
    assert off == on + "<think>\n\n</think>\n\n"
    # ChatML's special tokens of SmolLM2: a turn is still one <|im_start|> … <|im_end|> token pair
    ids = tok(off, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == 1


def test_rows_with_and_without_reasoning_train_the_two_sides(embedded_dir):
    from tunesmith.data.render import render
    from tunesmith.data.types import Conversation, Turn

    tok = _tok(embedded_dir)
    ensure_chat_template(tok, "qwen3")
    think = Conversation([Turn("user", "Compute 1+2"), Turn("assistant", "So the final result is 3", reasoning="1 + 2 = 3")])
    plain = Conversation([Turn("user", "Compute 1+2"), Turn("assistant", "So the final result is 3")])

    def trained(conv):
        r = render(conv, tok, 256)
        return tok.decode([i for i, lab in zip(r["input_ids"], r["labels"]) if lab != -100])

    assert trained(think) == "<think>\n1 + 2 = 3\n</think>\n\nSo the final result is 3<|im_end|>"
    assert trained(plain) == "So the final result is 3<|im_end|>"  # after the prompt's empty think block
    assert tok.decode(render(plain, tok, 256)["input_ids"]).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\nSo the final result is 3<|im_end|>\n")


def test_a_users_jinja_file_is_used_and_a_bad_one_is_one_line(embedded_dir, tmp_path):
    good = tmp_path / "mine.jinja"
    good.write_text("{#- my own copy -#}\n" + (TRL_TEMPLATES / "qwen3.jinja").read_text())
    tok = _tok(embedded_dir)
    ensure_chat_template(tok, str(good))
    assert tok.chat_template == good.read_text() and supports_thinking(tok)
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m.content }")
    tok = _tok(embedded_dir)
    own = tok.chat_template
    with pytest.raises(UserError, match=r"template .*broken.jinja: does not render a chat \(TemplateSyntaxError"):
        ensure_chat_template(tok, str(broken))
    assert tok.chat_template == own  # left as it was
    foreign = tmp_path / "llama3.jinja"
    foreign.write_text((TRL_TEMPLATES / "llama3.jinja").read_text())
    with pytest.raises(UserError, match="holds no special token"):  # <|eot_id|> is no SmolLM2 token
        ensure_chat_template(_tok(embedded_dir), str(foreign))


@pytest.mark.parametrize("value,say", [
    ("nope.jinja", "data.template: Value error, nope.jinja not found (resolved from the current folder"),
    ("qwen4", "unknown template 'qwen4': choose a fallback for models without one (chatml, alpaca), a template "
              "that replaces the model's own (qwen3), or the path of a .jinja file"),
])
def test_bad_template_choice_is_one_line_before_any_work(tmp_path, value, say):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"instruction": "hi", "output": "hello"}) + "\n")
    r = subprocess.run([sys.executable, "-m", "tunesmith", "train", "--model", "smollm2-135m-instruct",
                        "--data.datasets", str(rows), "--data.template", value, "--output_dir", str(tmp_path / "run")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and say in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_reasoning_rows_of_the_task_home():
    from tunesmith.tasks.arith import check_row, make_rows

    on, off = make_rows("add", [2, 2], 2, think="both", lang="en")
    assert on["instruction"] == off["instruction"]  # the same question on both sides
    assert on["output"].startswith("<think>\nStart computing ") and "\n</think>\n\nSo the final result is " in on["output"]
    assert off["output"] == on["output"].rsplit("\n", 1)[1] and off["output"].startswith("So the final result is ")
    assert check_row("add", on) is None  # the steps inside the block are checked like plain steps
    assert [r["output"] for r in make_rows("add", [2, 2], 3, think="off", lang="en")] == \
        [r["output"].rsplit("\n", 1)[1] for r in make_rows("add", [2, 2], 3, lang="en")]


def test_run_saves_the_template_and_merge_keeps_it(tiny_model, tmp_path):
    """A run trained with data.template: qwen3 saves it beside the adapter; export merge carries it into the
    merged folder; both load with the switch."""
    from tunesmith.models import load_tokenizer
    from tunesmith.tasks.arith import make_rows

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in make_rows("add", [1, 1], 8, think="both", lang="en")))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": str(tiny_model), "output_dir": str(tmp_path / "run"), "progress": False,
        "data": {"datasets": [{"path": str(rows)}], "template": "qwen3", "cutoff_len": 96},
        "lora": {"r": 4, "alpha": 8}, "train": {"max_steps": 2, "batch_size": 4, "save_every": None}}))
    assert main(["train", str(recipe)]) == 0
    qwen3 = template_text("qwen3")
    assert (tmp_path / "run" / "chat_template.jinja").read_text() == qwen3
    assert supports_thinking(load_tokenizer(tiny_model, tmp_path / "run"))
    assert main(["export", "merge", "--model", str(tiny_model), "--adapter", str(tmp_path / "run"),
                 "--out", str(tmp_path / "merged")]) == 0
    merged = load_tokenizer(tmp_path / "merged")
    assert merged.chat_template == qwen3 and supports_thinking(merged)
    assert not supports_thinking(load_tokenizer(tiny_model))  # the base itself is untouched
