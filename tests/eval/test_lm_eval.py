"""``eval lm-eval``: the harness run offline on local JSONL tasks, through the CLI, on the tiny model
alone, with one adapter (peft) and with two (merged first); every score checked against the
model's own log-probabilities and greedy answers computed here without the harness."""
from __future__ import annotations

import json

import pytest

from tunesmith.cli import main

MC = [("2+2=", ["3", "4", "5"], 1), ("Capital of France:", ["Paris", "Rome", "Berlin"], 0),
      ("Opposite of hot:", ["cold", "warm"], 0), ("Color of the sky:", ["green", "blue", "red"], 1),
      ("3*3=", ["6", "9", "12"], 1), ("Water freezes at", ["0", "100"], 0),
      ("Largest planet:", ["Mars", "Venus", "Jupiter"], 2), ("First letter:", ["A", "Z"], 0)]
GEN_PROMPTS = ["Q: name a fruit\nA:", "Q: say hello\nA:", "Q: count to three\nA:", "Q: a colour\nA:",
               "Q: a city\nA:", "Q: an animal\nA:"]
MC_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
GEN_YAML = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def _load(model_dir, adapters=()):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for a in adapters:
        m = PeftModel.from_pretrained(m, str(a)).merge_and_unload()
    return m.eval()


def _loglik(model, tok, ctx: str, cont: str) -> float:
    """log P(cont | ctx), the harness's definition: the continuation's tokens are those of
    ctx + cont after the tokens of ctx alone."""
    import torch

    whole, n = tok(ctx + cont)["input_ids"], len(tok(ctx)["input_ids"])
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([whole])).logits[0].log_softmax(-1)
    return sum(float(logp[k - 1, whole[k]]) for k in range(n, len(whole)))


def _greedy(model, tok, prompt: str, n: int = 6) -> str:
    import torch

    ids = torch.tensor([tok(prompt)["input_ids"]])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0]


def _table_value(text: str, task: str) -> float:
    """The Value column of ``task``'s row in the harness's Markdown table."""
    lines = [ln.split("|") for ln in text.splitlines() if ln.startswith("|")]
    col = [c.strip() for c in lines[0]].index("Value")
    return float(next(r for r in lines if r[1].strip() == task)[col])


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model, tokenizer):
    """Two adapters (A on tiny, B on tiny + A), with non-zero LoRA weights so they change scores."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("lm-eval")
    torch.manual_seed(1)
    lora = dict(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False,
                task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(**lora)).save_pretrained(root / "a")
    # B is trained on tiny + A: a merged stage whose manifest records that lineage
    from tunesmith.export.merge import MergeConfig, merge

    merge(MergeConfig(model=str(tiny_model), adapter=[str(root / "a")], out=str(root / "tiny+a"), device="cpu"))
    on_a = AutoModelForCausalLM.from_pretrained(root / "tiny+a")
    get_peft_model(on_a, LoraConfig(**lora)).save_pretrained(root / "b")
    return root


def _tasks(folder, model, tok):
    """Task YAMLs + JSONL in ``folder``. The generation task's first four answers are the model's
    own greedy answers and the last two are not, so its exact match must be 4/6."""
    folder.mkdir()
    (folder / "mc.jsonl").write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n"
                                             for q, c, a in MC))
    answers = [_greedy(model, tok, p) for p in GEN_PROMPTS[:4]] + ["not this", "nor this"]
    assert all(a.strip() for a in answers)
    (folder / "gen.jsonl").write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n"
                                              for p, a in zip(GEN_PROMPTS, answers)))
    (folder / "mc.yaml").write_text(MC_YAML.format(data=folder / "mc.jsonl"))
    (folder / "gen.yaml").write_text(GEN_YAML.format(data=folder / "gen.jsonl"))


@pytest.mark.parametrize("adapters", [(), ("a",), ("a", "b")], ids=["base", "peft", "merged"])
def test_local_tasks_score_what_the_model_computes(adapters, setup, tiny_model, tokenizer, tmp_path, capsys,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the verb itself must switch offline on
    model = _load(tiny_model, [setup / a for a in adapters])
    _tasks(tmp_path / "tasks", model, tokenizer)
    argv = ["eval", "lm-eval", "--model", str(tiny_model), "--tasks", "tiny_mc,tiny_gen", "--include_path", "tasks",
            "--batch_size", "1", "--out", "res"] + [x for a in adapters for x in ("--adapter", str(setup / a))]
    assert main(argv) == 0
    shown = capsys.readouterr().out

    res = json.loads((tmp_path / "res" / "results.json").read_text())
    assert res["tunesmith"]["offline"] is True
    assert res["tunesmith"]["adapters"] == [str((setup / a).resolve()) for a in adapters]
    assert res["tunesmith"]["merged"] is (len(adapters) > 1)
    mc = [json.loads(line) for line in (tmp_path / "res" / "samples_tiny_mc.jsonl").read_text().splitlines()]
    assert len(mc) == len(MC)
    right = 0
    for s in sorted(mc, key=lambda s: s["doc_id"]):
        q, choices, gold = MC[s["doc_id"]]
        want = [_loglik(model, tokenizer, q, " " + c) for c in choices]
        got = [r[0][0] for r in s["resps"]]
        assert got == pytest.approx(want, abs=1e-3)
        right += max(range(len(want)), key=want.__getitem__) == gold
    assert res["results"]["tiny_mc"]["acc,none"] == pytest.approx(right / len(MC))
    assert res["results"]["tiny_gen"]["exact_match,none"] == pytest.approx(4 / 6)

    table = (tmp_path / "res" / "results.md").read_text()
    for text in (table, shown):
        assert _table_value(text, "tiny_mc") == pytest.approx(right / len(MC))
        assert _table_value(text, "tiny_gen") == pytest.approx(4 / 6, abs=1e-4)
    if len(adapters) > 1:  # the merge went into a temporary folder, not beside the run
        assert sorted(p.name for p in tmp_path.iterdir()) == ["res", "tasks"]


def test_adapter_changes_the_scores(setup, tiny_model, tokenizer):
    """The adapters used above are not no-ops, so the peft and merged runs test something."""
    base, tuned = _load(tiny_model), _load(tiny_model, [setup / "a"])
    q, choices, _ = MC[0]
    b = [_loglik(base, tokenizer, q, " " + c) for c in choices]
    t = [_loglik(tuned, tokenizer, q, " " + c) for c in choices]
    assert max(abs(x - y) for x, y in zip(b, t)) > 0.05


def test_without_the_harness_one_line_names_the_extra(tiny_model, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what `import lm_eval` meets when it is not installed
    argv = ["eval", "lm-eval", "--model", str(tiny_model), "--tasks", "hellaswag", "--out", str(tmp_path / "res")]
    assert main(argv) != 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "pip install 'tunesmith[lm-eval]'" in err[0]
    assert not (tmp_path / "res").exists()
