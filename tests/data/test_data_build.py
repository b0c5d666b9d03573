"""build_sft_data and render: truncation and drop counts, mask_history, bad rows, reports,
fallback templates for base models, and parallel rendering giving the same rows."""
from __future__ import annotations

import copy
import hashlib
import json

import pytest

from tunesmith.data import (
    Conversation,
    DataConfig,
    DatasetConfig,
    Turn,
    build_sft_data,
    render,
    render_many,
    template_messages,
)
from tunesmith.errors import UserError


def write_alpaca(path, n, answer=lambda i: f"Answer number {i}.", question=lambda i: f"Question {i}?"):
    rows = [{"instruction": question(i), "input": "", "output": answer(i)} for i in range(n)]
    path.write_text(json.dumps(rows))
    return path


def conv(*texts, system=None):
    roles = ["user", "assistant"] * len(texts)
    return Conversation([Turn(r, t) for r, t in zip(roles, texts)], system=system, source="x.jsonl:1")


def trained_text(row, tok):
    return tok.decode([t for t in row["labels"] if t != -100])


def test_cutoff_truncates_from_the_end(smol_tok):
    c = conv("hi", "word " * 50)
    full = render(c, smol_tok, cutoff_len=None)
    cut = render(c, smol_tok, cutoff_len=40)
    assert cut["input_ids"] == full["input_ids"][:40] and cut["labels"] == full["labels"][:40]
    n_prompt = full["labels"].index(next(t for t in full["labels"] if t != -100))
    assert render(c, smol_tok, cutoff_len=n_prompt) is None  # nothing trainable left


def test_mask_history_trains_only_the_last_answer(smol_tok):
    c = conv("q1", "first answer", "q2", "second answer")
    assert trained_text(render(c, smol_tok, 512), smol_tok) == "first answer<|im_end|>second answer<|im_end|>"
    assert trained_text(render(c, smol_tok, 512, mask_history=True), smol_tok) == "second answer<|im_end|>"


def test_system_prompt_kept_and_default_used_otherwise(smol_tok):
    with_sys = smol_tok.decode(render(conv("hi", "yo", system="You are Tuna."), smol_tok, 512)["input_ids"])
    assert with_sys.startswith("<|im_start|>system\nYou are Tuna.<|im_end|>")
    without = smol_tok.decode(render(conv("hi", "yo"), smol_tok, 512)["input_ids"])
    assert "named SmolLM" in without


def test_reasoning_inline_for_templates_without_reasoning_support(smol_tok):
    c = Conversation([Turn("user", "2+2?"), Turn("assistant", "4", reasoning="two and two")])
    msgs, kwargs = template_messages(c, smol_tok)
    assert msgs[-1] == {"role": "assistant", "content": "<think>\ntwo and two\n</think>\n\n4"} and kwargs == {}
    assert trained_text(render(c, smol_tok, 512), smol_tok) == "<think>\ntwo and two\n</think>\n\n4<|im_end|>"


def test_build_report_and_drop_counts(tmp_path, smol_tok):
    short = write_alpaca(tmp_path / "short.json", 20)
    long = write_alpaca(tmp_path / "long.json", 5, answer=lambda i: f"{i} " + "very long answer " * 60)
    huge = write_alpaca(tmp_path / "huge.json", 3, question=lambda i: f"{i} " + "a long question " * 60)
    cfg = DataConfig(datasets=[DatasetConfig(path=str(p)) for p in (short, long, huge)], cutoff_len=50, val_size=4)
    data = build_sft_data(cfg, smol_tok)
    assert len(data.train) == 21 and len(data.val) == 4
    assert all(len(r["input_ids"]) <= 50 for r in data.train + data.val)
    r0, r1, r2 = data.report
    assert r0 == {"name": "short", "path": r0["path"], "sha256": hashlib.sha256(short.read_bytes()).hexdigest(),
                  "rows": 20, "bad_rows": 0, "rows_used": r0["rows_used"], "dropped_too_long": 0, "duplicates": 0,
                  "duplicates_dropped": 0}
    assert (r1["rows"], r1["dropped_too_long"]) == (5, 0)  # cut at 50 tokens, still trainable
    assert (r2["rows"], r2["dropped_too_long"], r2["rows_used"]) == (3, 3, 0)  # the question fills the cutoff
    assert r0["rows_used"] + r1["rows_used"] == 25


def test_no_row_left_is_an_error(tmp_path, smol_tok):
    path = write_alpaca(tmp_path / "a.json", 3)
    with pytest.raises(UserError, match="no row has a trainable token within data.cutoff_len=5"):
        build_sft_data(DataConfig(datasets=[DatasetConfig(path=str(path))], cutoff_len=5), smol_tok)


def test_upsampled_build_is_exact_and_seeded(tmp_path, smol_tok):
    path = write_alpaca(tmp_path / "identity.json", 108)
    cfg = DataConfig(datasets=[DatasetConfig(path=str(path), samples=500)])
    a, b = build_sft_data(cfg, smol_tok), build_sft_data(cfg, smol_tok)
    assert len(a.train) == 500 and a.report[0]["rows_used"] == 500 and a.train == b.train


def test_bad_rows_stop_with_first_problem_unless_dropped(tmp_path, smol_tok):
    path = tmp_path / "a.jsonl"
    rows = [{"instruction": "q", "output": "a"}, {"instruction": "q2", "output": ""},
            {"instruction": "q3"}, {"instruction": "q4", "output": "d"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(datasets=[DatasetConfig(path=str(path))])
    with pytest.raises(UserError) as e:
        build_sft_data(cfg, smol_tok)
    assert str(e.value).endswith("a.jsonl:2: output: empty answer (2 bad rows in total; run `tunesmith data check` "
                                 "for all, or set data.drop_bad_rows: true)")
    data = build_sft_data(cfg.model_copy(update={"drop_bad_rows": True}), smol_tok)
    assert len(data.train) == 2 and data.report[0]["bad_rows"] == 2 and data.report[0]["rows"] == 4


@pytest.mark.parametrize("ds,words", [
    (DatasetConfig(path="missing.jsonl"), r"^data.datasets\[0\].path: missing.jsonl not found \(resolved from the "
                                          r"current folder .*\)$"),
    (DatasetConfig(dataset_info="nowhere", name="x"), r"^data.datasets\[0\].dataset_info: nowhere not found"),
])
def test_missing_dataset_is_named(tmp_path, monkeypatch, smol_tok, ds, words):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=words):
        build_sft_data(DataConfig(datasets=[ds]), smol_tok)


def test_preference_data_is_not_sft_data(tmp_path, smol_tok):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"instruction": "hi", "chosen": "hello", "rejected": "go"}) + "\n")
    with pytest.raises(UserError, match="preference pairs"):
        build_sft_data(DataConfig(datasets=[DatasetConfig(path=str(path))]), smol_tok)


def test_base_model_needs_a_named_fallback_template(tmp_path, smol_tok):
    base = copy.deepcopy(smol_tok)
    base.chat_template = None
    cfg = DataConfig(datasets=[DatasetConfig(path=str(write_alpaca(tmp_path / "a.json", 2)))])
    with pytest.raises(UserError, match="no chat template: set template: chatml"):
        build_sft_data(cfg, base)
    data = build_sft_data(cfg.model_copy(update={"template": "alpaca"}), base)
    text = base.decode(data.train[0]["input_ids"])
    assert "### Instruction:\nQuestion" in text
    assert trained_text(data.train[0], base).startswith("Answer number")
    assert trained_text(data.train[0], base).endswith(".<|im_end|>")


def test_rows_the_template_refuses_are_bad_rows(tmp_path, smol_tok):
    strict = copy.deepcopy(smol_tok)
    strict.chat_template = ("{% for m in messages %}{% if 'forbidden' in m['content'] %}"
                            "{{ raise_exception('no forbidden words') }}{% endif %}"
                            "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
                            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    path = write_alpaca(tmp_path / "a.json", 4, answer=lambda i: "forbidden" if i == 2 else f"ok {i}")
    cfg = DataConfig(datasets=[DatasetConfig(path=str(path))])
    with pytest.raises(UserError, match=r"a.json:3: template: .*no forbidden words"):
        build_sft_data(cfg, strict)
    data = build_sft_data(cfg.model_copy(update={"drop_bad_rows": True}), strict)
    assert len(data.train) == 3 and data.report[0]["bad_rows"] == 1


def test_two_workers_render_the_same_rows(smol_tok):
    convs = [conv(f"question {i}", "answer " * (i % 17 + 1)) for i in range(700)]
    one, e1 = render_many(convs, smol_tok, 64, num_workers=1, batch_size=128)
    two, e2 = render_many(convs, smol_tok, 64, num_workers=2, batch_size=128)
    assert one == two and e1 == e2 == {} and len(one) == 700
