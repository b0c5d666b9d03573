"""CoT task generators and their step checkers (property-based), the split rule, the verb."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesmith.errors import UserError
from tunesmith.synth.tasks import TaskConfig, make_rows, task
from tunesmith.tasks.arith import TASKS, check_row, is_test, pairs, parse_question

digit_counts = st.integers(1, 4)
langs = st.sampled_from(["zh", "en"])
tasks = st.sampled_from(sorted(TASKS))


def number(d: int):
    return st.integers(1 if d == 1 else 10 ** (d - 1), 10 ** d - 1)


@st.composite
def problems(draw):
    da, db = draw(digit_counts), draw(digit_counts)
    return draw(tasks), draw(number(da)), draw(number(db)), draw(langs)


@settings(max_examples=300, deadline=None)
@given(problems())
def test_every_generated_answer_passes_its_checker(p):
    name, a, b, lang = p
    mod = TASKS[name]
    text = mod.steps(a, b, lang)
    mod.check(a, b, text, lang)  # raises StepError on any wrong line
    final = text.splitlines()[-1]
    assert final.endswith(str(a * b if name == "multiply" else a + b))
    assert check_row(name, {"instruction": mod.question(a, b, lang), "output": text}) is None


@settings(max_examples=300, deadline=None)
@given(problems(), st.data())
def test_a_changed_digit_in_any_line_fails_the_checker(p, data):
    name, a, b, lang = p
    lines = TASKS[name].steps(a, b, lang).splitlines()
    spots = [(i, m.start()) for i, line in enumerate(lines) for m in re.finditer(r"\d", line)]
    i, j = data.draw(st.sampled_from(spots))
    new = data.draw(st.sampled_from([d for d in "0123456789" if d != lines[i][j]]))
    lines[i] = lines[i][:j] + new + lines[i][j + 1:]
    why = check_row(name, {"instruction": TASKS[name].question(a, b, lang), "output": "\n".join(lines)})
    assert why is not None and why.startswith("line ")


@settings(max_examples=100, deadline=None)
@given(problems(), st.data())
def test_a_dropped_or_repeated_line_fails_the_checker(p, data):
    name, a, b, lang = p
    lines = TASKS[name].steps(a, b, lang).splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    broken = lines[:i] + lines[i + 1:] if data.draw(st.booleans()) else lines[:i + 1] + lines[i:]
    assert check_row(name, {"instruction": TASKS[name].question(a, b, lang), "output": "\n".join(broken)})


def test_the_seed_001_format_line_for_line():
    text = TASKS["multiply"].steps(874, 265, "zh").splitlines()
    assert text[:5] == ["开始计算 874 * 265：", "把 (874, 265) 拆成：", "874 = 800 + 70 + 4", "265 = 200 + 60 + 5",
                        "分别计算乘积："]
    assert "计算 160000 + 048000：" in text
    assert "第4位，6 + 4 + 之前的进位 0 = 10；有进位1，保留0" in text
    assert text[-1] == "所以，最终结果是231610"
    assert TASKS["add"].steps(95, 7, "en").splitlines()[-2:] == ["Result = 102", "So the final result is 102"]


def test_padding_follows_the_operands_and_a_top_carry_gets_its_own_line():
    # 900 + 120: operands padded to 3 digits (not to the sum's 4), the carry out of digit 2 is a line
    text = TASKS["add"].steps(900, 120, "en").splitlines()
    assert text[1:] == ["Compute 900 + 120:", "Digit 0: 0 + 0 + previous carry 0 = 0",
                        "Digit 1: 0 + 2 + previous carry 0 = 2", "Digit 2: 9 + 1 + previous carry 0 = 10; carry 1, keep 0",
                        "Digit 3: 0 + 0 + previous carry 1 = 1", "Result = 1020", "So the final result is 1020"]
    q = TASKS["add"].question(900, 120, "en")
    padded_to_sum = "\n".join(["Start computing 900 + 120:", "Compute 0900 + 0120:"] + text[2:])
    assert check_row("add", {"instruction": q, "output": padded_to_sum}).startswith("line 2: operands must be padded")
    no_top_line = "\n".join(text[:4] + text[5:])
    assert check_row("add", {"instruction": q, "output": no_top_line}).startswith("line 5:")


@settings(max_examples=200, deadline=None)
@given(tasks, st.integers(1, 10 ** 6), st.integers(1, 10 ** 6))
def test_the_split_ignores_the_order_of_the_pair(name, a, b):
    assert is_test(name, a, b, 0.1) == is_test(name, b, a, 0.1)


@settings(max_examples=20, deadline=None)
@given(tasks, st.integers(1, 3), st.integers(1, 3), st.integers(0, 10 ** 6), st.integers(0, 10 ** 6))
def test_train_and_test_pairs_never_overlap(name, da, db, s1, s2):
    n = 30
    train = pairs(name, [da, db], n, "train", s1, 0.2)
    test = pairs(name, [da, db], min(n, 5), "test", s2, 0.2)
    assert len(set(train)) == len(train)
    assert not {tuple(sorted(p)) for p in train} & {tuple(sorted(p)) for p in test}


def test_large_spaces_are_sampled_and_still_split():
    got = pairs("multiply", [6, 6], 50, "test", 1, 0.1)
    assert len(set(got)) == 50 and all(is_test("multiply", a, b, 0.1) for a, b in got)


def test_too_many_rows_for_the_space_is_one_line():
    with pytest.raises(UserError, match="only .* test pairs"):
        pairs("add", [1, 1], 80, "test", 0, 0.1)


def test_questions_parse_back_and_others_do_not():
    assert parse_question("multiply", "计算12*34") == (12, 34, "zh")
    assert parse_question("add", "Compute 5+6") == (5, 6, "en")
    assert parse_question("multiply", "计算12+34") is None
    assert check_row("add", {"instruction": "hello", "output": ""}) == "instruction is not a add question"


def test_verb_writes_rows_and_manifest_then_checks_them(tmp_path, capsys):
    out = tmp_path / "mul.jsonl"
    from tunesmith.cli import main

    assert main(["synth", "task", "multiply", "--digits", "2,2", "--n", "40", "--out", str(out), "--lang", "mix",
                 "--seed", "3"]) == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 40 and {r["input"] for r in rows} == {""}
    assert {parse_question("multiply", r["instruction"])[2] for r in rows} == {"zh", "en"}
    man = json.loads((tmp_path / "mul.manifest.json").read_text())
    assert man["split"] == "train" and man["rows"] == 40 and man["status"] == "done"
    rows[5]["output"] = rows[5]["output"].replace("= ", "= 1", 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    capsys.readouterr()
    assert task(TaskConfig(task="multiply", check=str(bad))) == 0
    printed = capsys.readouterr().out
    assert f"{bad}:6: line " in printed and "39/40 rows pass" in printed
    assert make_rows(TaskConfig(task="multiply", digits=[2, 2], n=40, out="x.jsonl", lang="mix", seed=3)) == \
        [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    # its own output is rewritten with --overwrite; a file tunesmith did not write is refused and left as it was
    again = ["synth", "task", "multiply", "--digits", "2,2", "--n", "10", "--lang", "en", "--out"]
    assert main(again + [str(out)]) == 1 and "pass --overwrite" in capsys.readouterr().err
    assert main(again + [str(out), "--overwrite"]) == 0
    assert len(out.read_text().splitlines()) == 10
    assert main(again + [str(bad), "--overwrite"]) == 1
    assert "bad.jsonl was not written by tunesmith" in capsys.readouterr().err
    assert len(bad.read_text().splitlines()) == 40


def test_cli_folder_output_and_bad_digits(tmp_path):
    folder = tmp_path / "stage"
    r = subprocess.run([sys.executable, "-m", "tunesmith", "synth", "task", "add", "--digits", "3,2", "--n", "5",
                        "--out", str(folder), "--split", "test", "--lang", "en"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len((folder / "data.jsonl").read_text().splitlines()) == 5 and (folder / "manifest.json").is_file()
    r = subprocess.run([sys.executable, "-m", "tunesmith", "synth", "task", "add", "--digits", "3", "--out",
                        str(tmp_path / "x.jsonl")], capture_output=True, text=True)
    assert r.returncode == 2 and "digits" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.jsonl").exists()
