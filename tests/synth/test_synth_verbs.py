"""style, judge, chunks and the teacher's one-line failures, against the fake and a real `tunesmith serve`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunesmith.config import build_config
from tunesmith.errors import UserError
from tunesmith.synth.chunks import ChunksConfig, chunk_text, chunks, sentences
from tunesmith.synth.judge import JudgeConfig, judge, parse_score
from tunesmith.synth.style import StyleConfig, style

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "tunesmith"]


def corpus(path: Path, n: int, dup_answer: bool = True) -> list[tuple[str, str]]:
    pairs = [(f"question {i}?", f"my own answer number {i}.") for i in range(n)]
    if dup_answer:  # a repeated answer must not leak either
        pairs.append(("question dup?", pairs[0][1]))
    path.write_text("".join(json.dumps({"instruction": q, "input": "", "output": a}) + "\n" for q, a in pairs))
    return pairs


def test_style_prompt_never_holds_the_targets_own_answer(tmp_path, fake):
    pairs = corpus(tmp_path / "c.jsonl", 40)
    own = dict(pairs)
    own["question 0?"] = own["question dup?"]
    cfg = build_config(StyleConfig, values={"corpus": str(tmp_path / "c.jsonl"), "out": str(tmp_path / "s.jsonl"),
                                            "k": 3, "teacher.base_url": fake.url, "teacher.timeout": 1.5})
    assert style(cfg) == 0
    rows = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(rows) == len(pairs)
    asked = {m[-1]["content"] for m in fake.requests}
    assert len(asked) == len(pairs)
    for prompt in asked:
        question = prompt.rsplit("Question: ", 1)[1]
        assert own[question] not in prompt                       # never its own answer (nor a duplicate of it)
        assert prompt.count("Answer: ") == 3                     # k other pairs
    for r in rows:  # every output row: its question with the teacher's answer, not the corpus answer
        q, a = r["messages"][0]["content"], r["messages"][-1]["content"]
        assert a.startswith("ANSWER: ") and own[q] not in a
    # Seeded: the same prompts on a second run (so it resumes instead of asking again).
    n = len(fake.requests)
    assert style(cfg) == 0 and len(fake.requests) == n


def test_style_zh_template_is_chosen_for_a_chinese_corpus(tmp_path, fake):
    rows = [{"instruction": f"第{i}个问题是什么？", "input": "", "output": f"这是我自己的第{i}个回答。"} for i in range(6)]
    (tmp_path / "zh.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cfg = build_config(StyleConfig, values={"corpus": str(tmp_path / "zh.jsonl"), "out": str(tmp_path / "o"),
                                            "teacher.base_url": fake.url, "teacher.timeout": 1.5})
    assert style(cfg) == 0
    assert all("问题：" in m[-1]["content"] and "请以这位作者的口吻" in m[-1]["content"] for m in fake.requests)


@pytest.mark.parametrize("reply,score", [
    ("Score: 8", 8), ("**Score:** 7/10", 7), ("I would give it 9 out of 10.", 9), ("评分：6分", 6), ("7", 7),
    ("Score: 3 at first... Revised score: 8", 8), ("8/10", 8), ("Rating = 4.5", 4.5), ("得分：9", 9),
    ("no idea", None), ("Score: 42", None), ("", None), ("Score: 0", None)])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_judge_keeps_rows_at_or_above_min_score_and_counts_unparseable(tmp_path, fake, capsys):
    def grade(msgs):  # the judge's reply depends on the row being judged
        text = msgs[-1]["content"]
        n = int(text.split("answer number ")[1].split(".")[0])
        return "hmm, hard to say" if n % 5 == 0 else f"Reasoning...\nScore: {n % 10}/10"
    fake.answer = grade
    corpus(tmp_path / "rows.jsonl", 20, dup_answer=False)
    cfg = build_config(JudgeConfig, values={"input": str(tmp_path / "rows.jsonl"), "out": str(tmp_path / "j"),
                                            "min_score": 6, "teacher.base_url": fake.url, "teacher.timeout": 1.5})
    assert judge(cfg) == 0
    kept = [json.loads(x)["messages"][-1]["content"] for x in (tmp_path / "j" / "data.jsonl").read_text().splitlines()]
    want = [f"my own answer number {i}." for i in range(20) if i % 5 and i % 10 >= 6]
    assert kept == want
    scores = [json.loads(x)["score"] for x in (tmp_path / "j" / "scores.jsonl").read_text().splitlines()]
    assert scores.count(None) == 4 and len(scores) == 20
    man = json.loads((tmp_path / "j" / "manifest.json").read_text())
    assert man["unparseable"] == 4 and man["kept"] == len(want)
    assert "4 of 20 replies had no score" in capsys.readouterr().out


EN = ("The keeper woke early. He lit the lamp! Was the sea calm? It was not.\n\n"
      "A new paragraph starts here. It has \"quoted speech.\" And more text follows it.\n\n") * 6
ZH = "灯塔看守人醒得很早。他点亮了灯！海面平静吗？并不平静。\n\n新的一段从这里开始。“有引号的话。”后面还有更多的文字。\n\n" * 6


@pytest.mark.parametrize("text", [EN, ZH])
def test_chunks_end_on_sentence_boundaries_within_the_token_limit(text, tokenizer):
    parts = chunk_text(text, tokenizer, 40)
    assert len(parts) > 3
    ends = tuple(".!?\"”。！？")
    for p in parts:
        assert len(tokenizer(p, add_special_tokens=False)["input_ids"]) <= 40 + 2
        assert p.endswith(ends), p
        assert p[0] not in " \n"
    # Nothing lost or reordered: the chunks are the text's sentences in order.
    flat = lambda s: "".join(s.split())  # noqa: E731
    assert flat("".join(parts)) == flat(text)
    assert sentences("One. Two? Three!") == ["One.", " Two?", " Three!"]


def test_chunks_verb_writes_continuation_pairs(tmp_path):
    (tmp_path / "n.md").write_text(EN, encoding="utf-8")
    cfg = build_config(ChunksConfig, values={"text": str(tmp_path / "n.md"), "out": str(tmp_path / "c.jsonl"),
                                             "chunk_tokens": 40})
    assert chunks(cfg) == 0
    rows = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert all(r["instruction"] == "Continue the passage." for r in rows)
    assert all(a["output"] == b["input"] for a, b in zip(rows, rows[1:]))   # output = the next chunk


def test_teacher_down_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    r = subprocess.run(CLI + ["synth", "distill", "--prompts", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "o"),
                              "--teacher.base_url", "http://127.0.0.1:9/v1", "--teacher.max_retries", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and "http://127.0.0.1:9/v1 is not reachable" in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_missing_api_key_variable_names_it_and_never_a_key(tmp_path, fake, monkeypatch):
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    env = {k: v for k, v in __import__("os").environ.items() if k != "TS_TEST_KEY"}
    cmd = CLI + ["synth", "distill", "--prompts", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "o"),
                 "--teacher.base_url", fake.url, "--teacher.api_key_env", "TS_TEST_KEY"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0 and "TS_TEST_KEY is not set" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists() and fake.requests == []
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**env, "TS_TEST_KEY": "sk-secret-123"})
    assert r.returncode == 0, r.stderr
    written = "".join(p.read_text() for p in (tmp_path / "o").iterdir())
    assert "sk-secret-123" not in written + r.stdout + r.stderr and "TS_TEST_KEY" in written


def test_distill_against_tunesmith_serve(tmp_path, served):
    from tunesmith.synth.distill import DistillConfig, distill

    (tmp_path / "p.jsonl").write_text('{"prompt": "Say hello."}\n{"prompt": "Name a colour."}\n')
    cfg = build_config(DistillConfig, values={"prompts": str(tmp_path / "p.jsonl"), "out": str(tmp_path / "d.jsonl"),
                                              "system": "You are Mira.", "teacher.base_url": served.url + "/v1",
                                              "teacher.model": "smollm2", "teacher.max_tokens": 12,
                                              "teacher.temperature": 0})
    assert distill(cfg) == 0
    man = json.loads((tmp_path / "d.manifest.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert man["requested"] == 2 and len(rows) + man["dropped_truncated"] + man["dropped_empty"] == 2
    assert all(r["messages"][0]["role"] == "user" for r in rows)   # the system prompt is not kept by default


@pytest.mark.parametrize("recipe", ["reasoning-distill.yaml", "style-distill.yaml", "novel-chunks.yaml"])
def test_recipe_first_stage_runs_on_tunesmith_serve(recipe, tmp_path, served, monkeypatch):
    from tunesmith.jobs.pipeline import PipelineConfig, pipeline

    monkeypatch.chdir(ROOT)  # recipes name their data relative to the checkout
    raw = yaml.safe_load((ROOT / "recipes" / recipe).read_text())
    first = dict(raw["stages"][0])
    first["teacher"] = {**first["teacher"], "base_url": served.url + "/v1", "max_tokens": 16, "concurrency": 4}
    first["max_items"] = 3
    cfg = build_config(PipelineConfig, values={"model": raw["model"], "output_dir": str(tmp_path / "run"),
                                               "stages": [first]})
    assert pipeline(cfg) == 0
    folder = tmp_path / "run" / f"1-{first['stage']}"
    man = json.loads((folder / "manifest.json").read_text())
    assert man["status"] == "done" and (folder / "data.jsonl").is_file()
    # The train stage of the recipe reads exactly the file this stage wrote: its reference
    # ($<stage>.dataset) resolves to it under any output_dir.
    from tunesmith.jobs.pipeline import plan

    whole = build_config(PipelineConfig, [str(ROOT / "recipes" / recipe)], {"output_dir": str(tmp_path / "run")})
    train = next(p for p in plan(whole, tmp_path / "run") if p.verb.name == "train")
    assert train.stage.config["data"]["datasets"][0]["path"] == str(folder / "data.jsonl")


def test_bad_template_and_k_are_one_line_errors(tmp_path):
    corpus(tmp_path / "c.jsonl", 2, dup_answer=False)
    with pytest.raises(Exception, match="needs both"):
        build_config(StyleConfig, values={"corpus": "x", "out": "y", "template": "no placeholders"})
    cfg = build_config(StyleConfig, values={"corpus": str(tmp_path / "c.jsonl"), "out": str(tmp_path / "o"), "k": 3})
    with pytest.raises(UserError, match="at least 4"):
        style(cfg)
