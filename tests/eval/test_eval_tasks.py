"""``eval tasks``: answer extractors, the log-likelihood label ranking against a direct
computation on a tiny model, classification metrics, task files, and the report files."""
from __future__ import annotations

import json

import pytest

from tunesmith.errors import UserError
from tunesmith.eval.tasks import (EvalTasksConfig, classification, label_logprobs, read_task, retention_items, run_eval,
                                  shot_turns)
from tunesmith.tasks import add, multiply
from tunesmith.tasks.answers import as_label, correct, last_number, normalise


def test_extractors_and_matching():
    assert last_number("开始计算 12 * 34：…\n所以，最终结果是408") == "408"
    assert last_number("So the final result is 1,234.") == "1234"
    assert last_number("no number here") is None
    assert correct("number", "… = 408\nSo the final result is 408", "所以，最终结果是408")
    assert not correct("number", "the result is 4080", "408")
    assert not correct("number", "I don't know", "408")
    assert normalise("  下载场景。 ") == "下载场景" and normalise("Ｐａｒｉｓ!") == "paris"
    assert correct("exact", "Paris.", "paris") and not correct("exact", "It is Paris", "Paris")
    assert correct("contains", "It is Paris", "Paris")
    assert as_label("下载场景。", ["下载场景", "退款场景"]) == "下载场景"
    assert as_label("下载", ["下载场景", "退款场景"]) is None


def test_classification_metrics_by_hand():
    r = classification(["a", "a", "b", "b"], ["a", "b", "b", None], ["a", "b"])
    assert r["accuracy"] == 0.5
    assert r["per_label"]["a"] == {"precision": 1.0, "recall": 0.5, "support": 2}
    assert r["per_label"]["b"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert r["confusion"] == {"labels": ["a", "b", "(other)"], "matrix": [[1, 1, 0], [0, 1, 1]]}


@pytest.fixture(scope="module")
def engine(tiny_model):
    from tunesmith.infer import Engine

    return Engine.load(str(tiny_model), dtype="fp32", device="cpu")


def _direct_logprob(engine, ctx: list[int], label: str) -> float:
    import torch

    cont = engine.tok(label, add_special_tokens=False)["input_ids"] + engine.stop_ids[:1]
    with torch.no_grad():  # one sequence, no padding: the plain definition
        logp = engine.model(input_ids=torch.tensor([ctx + cont])).logits[0].log_softmax(-1)
    return sum(float(logp[len(ctx) - 1 + k, t]) for k, t in enumerate(cont))


def test_label_ranking_equals_a_direct_computation(engine):
    import torch

    prompt, labels = "导出本月的数据", ["下载场景", "用户会员相关分析", "a"]
    got = label_logprobs(engine, prompt, labels)
    ctx = engine.prompt_ids([{"role": "user", "content": prompt}])
    for label, value in zip(labels, got):
        cont = engine.tok(label, add_special_tokens=False)["input_ids"] + engine.stop_ids[:1]
        ids = torch.tensor([ctx + cont])  # one sequence, no padding: the plain definition
        with torch.no_grad():
            logp = engine.model(input_ids=ids).logits[0].log_softmax(-1)
        want = sum(float(logp[len(ctx) - 1 + k, t]) for k, t in enumerate(cont))
        assert value == pytest.approx(want, abs=1e-4)
    # the end-of-turn token counts: without it a label's score is its tokens' alone (higher)
    bare = label_logprobs(engine, prompt, labels, with_end=False)
    assert all(b > g for b, g in zip(bare, got))


def test_shots_are_earlier_turns_of_the_same_chat(tmp_path, engine):
    shots = tmp_path / "shots.jsonl"
    shots.write_text('{"instruction": "计算12*34", "output": "所以，最终结果是408"}\n'
                     '{"instruction": "计算11*11", "output": "所以，最终结果是121"}\n', encoding="utf-8")
    turns = shot_turns(EvalTasksConfig(model="m", shots=str(shots)))  # n_shots 1: the first row only
    assert turns == [{"role": "user", "content": "计算12*34"}, {"role": "assistant", "content": "所以，最终结果是408"}]
    assert len(shot_turns(EvalTasksConfig(model="m", shots=str(shots), n_shots=2))) == 4
    prompt, labels = "导出本月的数据", ["下载场景", "a"]
    ctx = engine.prompt_ids([*turns, {"role": "user", "content": prompt}])
    got = label_logprobs(engine, prompt, labels, shots=turns)
    assert got == pytest.approx([_direct_logprob(engine, ctx, l) for l in labels], abs=1e-4)
    assert got != pytest.approx(label_logprobs(engine, prompt, labels), abs=1e-4)


def test_task_files_kinds_and_errors(tmp_path):
    f = tmp_path / "intents.jsonl"
    f.write_text('{"instruction": "导出本月的数据", "input": "", "output": "下载场景"}\n'
                 '{"instruction": "会员消费情况", "input": "", "output": "用户会员相关分析"}\n', encoding="utf-8")
    t = read_task(f"{f}:label")
    assert [i["kind"] for i in t["items"]] == ["label", "label"] and t["labels"] == ["下载场景", "用户会员相关分析"]
    assert [i["kind"] for i in read_task(str(f))["items"]] == ["exact", "exact"]
    g = tmp_path / "mul.jsonl"
    g.write_text('{"instruction": "计算12*34", "output": "…\\n所以，最终结果是408"}\n{"text": "hi", "label": "x", '
                 '"labels": ["x", "y"]}\n', encoding="utf-8")
    assert [i["kind"] for i in read_task(str(g))["items"]] == ["number", "label"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "answer": "a"}\n{"prompt": "q"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:2: needs a prompt"):
        read_task(str(bad))
    bad.write_text('{"prompt": "p", "answer": "a", "kind": "fuzzy"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:1: kind: 'fuzzy'"):
        read_task(str(bad))


def test_retention_set_is_big_bilingual_and_answerable():
    items = retention_items()
    assert len(items) >= 150
    assert {i["lang"] for i in items} == {"en", "zh"} and min(
        sum(i["lang"] == lang for i in items) for lang in ("en", "zh")) >= 60
    assert all(i["prompt"] and i["expect"] and all(isinstance(e, str) and e for e in i["expect"]) for i in items)
    assert len({i["prompt"] for i in items}) == len(items)


def test_report_base_vs_adapter(tmp_path, tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                      init_lora_weights=False)  # random B: the tuned model really differs from the base
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), lora).save_pretrained(tmp_path / "ad")
    intents = tmp_path / "intents.jsonl"
    intents.write_text("".join(json.dumps({"instruction": q, "output": a}, ensure_ascii=False) + "\n" for q, a in
                               [("导出本月的数据", "下载场景"), ("refund my order", "refund"),
                                ("下载报表", "下载场景"), ("I want my money back", "refund")]), encoding="utf-8")
    mul = tmp_path / "mul.jsonl"
    mul.write_text(json.dumps({"instruction": "计算12*34", "output": multiply.steps(12, 34, "zh")}) + "\n",
                   encoding="utf-8")
    out = tmp_path / "report"
    rep = run_eval(EvalTasksConfig(model=str(tiny_model), adapter=[str(tmp_path / "ad")],
                                   tasks=[f"{intents}:label", str(mul)], out=str(out), short_tokens=3,
                                   max_new_tokens=4, batch_size=64, device="cpu"))
    assert [r["name"] for r in rep["runs"]] == ["base", "ad"]
    for name in ("report.md", "report.json", "scores.png", "confusion-intents-base.png", "confusion-intents-ad.png",
                 "answers/base/mul.jsonl", "answers/ad/retention.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    base, tuned = saved["runs"]
    assert saved["retention_delta"]["ad"] == pytest.approx(tuned["retention"]["accuracy"] -
                                                           base["retention"]["accuracy"])
    assert base["retention"]["items"] == len(retention_items())
    conf = base["tasks"]["intents"]["loglik"]["confusion"]
    assert conf["labels"] == ["refund", "下载场景", "(other)"] and sum(map(sum, conf["matrix"])) == 4
    answers = [json.loads(x) for x in (out / "answers/base/mul.jsonl").read_text(encoding="utf-8").splitlines()]
    assert answers[0]["instruction"] == "计算12*34" and "output" in answers[0]
    assert answers[0]["step_valid"] is False and answers[0]["step_error"].startswith("line 1:")  # 4 tokens: no chain
    assert base["tasks"]["mul"]["step_items"] == 1 and "step_valid" not in base["tasks"]["intents"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "Retention delta, ad − base" in md and "ranked by log-likelihood" in md and "## Wrong answers" in md


def test_bad_task_file_fails_before_any_model_loads(tmp_path):
    with pytest.raises(UserError, match="task file not found"):
        run_eval(EvalTasksConfig(model="no-such-model-anywhere", tasks=[str(tmp_path / "missing.jsonl")],
                                 out=str(tmp_path / "r")))
    (tmp_path / "t.jsonl").write_text('{"prompt": "p", "answer": "a"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="task file not found: .*missing-shots.jsonl"):
        run_eval(EvalTasksConfig(model="no-such-model-anywhere", tasks=[str(tmp_path / "t.jsonl")],
                                 shots=str(tmp_path / "missing-shots.jsonl"), out=str(tmp_path / "r")))
    assert not (tmp_path / "r").exists()


class _Canned:
    """A model stand-in that answers each prompt from a table: the judging, not the generation, is tested."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    @classmethod
    def load(cls, model, adapters, *args, **kwargs):
        return cls(TUNED if adapters else BASE)

    def generate(self, chats, params):
        return [self.answers[c[-1]["content"]] for c in chats]


RIGHT = multiply.steps(21, 13, "zh")
SLIP = RIGHT.replace("20 * 3 = 60", "20 * 3 = 50")  # a wrong product, the final line still 273
THOUGHT = multiply.steps(12, 34, "en")
BASE = {"Compute 12*34": THOUGHT, "计算21*13": SLIP, "计算11*11": "121", "导出本月的数据": "下载场景",
        "计算478+356": add.steps(478, 356, "zh")}
TUNED = {**BASE, "Compute 12*34": "<think>\n" + THOUGHT.rsplit("\n", 1)[0] + "\n</think>\n\nSo the final result is 408",
         "计算21*13": RIGHT}


def test_step_valid_beside_exact(tmp_path, monkeypatch, capsys):
    from tunesmith.eval import tasks as eval_tasks

    assert SLIP != RIGHT and last_number(SLIP) == "273"
    mul = tmp_path / "mul.jsonl"  # two chains (one en, one zh) and a row whose answer is the final result alone
    mul.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"instruction": "Compute 12*34", "output": THOUGHT}, {"instruction": "计算21*13", "output": RIGHT},
        {"instruction": "计算11*11", "output": "121"}]), encoding="utf-8")
    (tmp_path / "intents.jsonl").write_text('{"instruction": "导出本月的数据", "output": "下载场景"}\n', encoding="utf-8")
    (tmp_path / "add.jsonl").write_text(json.dumps({"instruction": "计算478+356", "output": add.steps(478, 356, "zh")})
                                        + "\n", encoding="utf-8")
    assert [i["steps"] for i in read_task(str(mul))["items"]] == ["multiply", "multiply", None]
    monkeypatch.setattr(eval_tasks, "Engine", _Canned)
    out = tmp_path / "report"
    cfg = EvalTasksConfig(model="m", adapter=["tuned"], tasks=[str(mul), str(tmp_path / "intents.jsonl"),
                                                                str(tmp_path / "add.jsonl")],
                          out=str(out), retention=False)
    assert eval_tasks.eval_tasks(cfg) == 0
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    base, tuned = saved["runs"]
    # every final number is right; the base slipped a product in one chain, so only its steps fail
    assert base["tasks"]["mul"]["accuracy"] == tuned["tasks"]["mul"]["accuracy"] == 1.0
    assert (base["tasks"]["mul"]["step_valid"], tuned["tasks"]["mul"]["step_valid"]) == (0.5, 1.0)  # a think block too
    assert base["tasks"]["mul"]["step_items"] == 2 and saved["tasks"]["mul"]["steps"] == ["multiply"]
    assert (base["step_valid"], base["step_items"], tuned["step_valid"]) == (0.6667, 3, 1.0)  # all tasks together
    assert set(base["tasks"]["intents"]) == {"accuracy", "items"} and "steps" not in saved["tasks"]["intents"]
    answers = [json.loads(x) for x in (out / "answers/base/mul.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [a.get("step_valid") for a in answers] == [True, False, None] and all(a["correct"] for a in answers)
    assert "20 * 3 = 60" in answers[1]["step_error"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| mul (step-valid) | multiply steps | 2 | 50.0% | 100.0% |" in md
    assert "| add (step-valid) | add steps | 1 | 100.0% | 100.0% |" in md and "intents (step-valid)" not in md
    assert "| all step-checked answers (step-valid) | steps | 3 | 66.7% | 100.0% |" in md
    assert "Step-valid: the share of answers" in md
    assert "`计算21*13` expected" in md.split("## Wrong answers")[1]  # exact, but a step wrong
    printed = capsys.readouterr().out
    assert "base: step-valid (every step holds): mul 50.0%, add 100.0%, all 66.7%\n" in printed
    assert "tuned: step-valid (every step holds): mul 100.0%, add 100.0%, all 100.0%\n" in printed

