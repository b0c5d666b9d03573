"""The task home: rewards (property-based for the arithmetic tasks, unit for the generic ones), and
the one-copy rule — synth, eval and train read the task's code from tunesmith.tasks, nowhere else."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesmith.tasks import answers
from tunesmith.tasks.arith import TASKS
from tunesmith.tasks.rewards import REWARDS, build, think_asked
from tunesmith.tasks.steps import step_share

SRC = Path(__file__).resolve().parents[2] / "src" / "tunesmith"


@st.composite
def problems(draw):
    da, db = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    a = draw(st.integers(1 if da == 1 else 10 ** (da - 1), 10 ** da - 1))
    b = draw(st.integers(1 if db == 1 else 10 ** (db - 1), 10 ** db - 1))
    return draw(st.sampled_from(sorted(TASKS))), a, b, draw(st.sampled_from(["zh", "en"]))


def _row(name, a, b, lang):
    return {"prompt": TASKS[name].question(a, b, lang), "expect": None}


@settings(max_examples=200, deadline=None)
@given(problems())
def test_the_generated_answer_earns_the_whole_reward_and_a_wrong_result_half_at_most(p):
    name, a, b, lang = p
    mod, row = TASKS[name], _row(*p)
    text = mod.steps(a, b, lang)
    assert mod.reward(text, row) == 1.0
    assert mod.reward(f"<think>\nplace values first\n</think>\n\n{text}", row) == 1.0  # judged after the block
    lines = text.splitlines()
    wrong = "\n".join(lines[:-1] + [re.sub(r"\d+$", lambda m: str(int(m[0]) + 1), lines[-1])])
    assert mod.reward(wrong, row) == pytest.approx(0.5 * (len(lines) - 1) / len(lines))  # steps right, result wrong
    result = a * b if name == "multiply" else a + b
    assert mod.reward(f"I think it is {result}", row) == 0.5  # right number, no step holds
    exact_only = build(name, {"step_weight": 0})  # the recipe's way to reward the result alone
    assert exact_only(f"I think it is {result}", row) == 1.0 and exact_only(wrong, row) == 0.0
    steps_more = build(name, {"step_weight": 0.75})
    assert steps_more(wrong, row) == pytest.approx(0.75 * (len(lines) - 1) / len(lines))


@settings(max_examples=200, deadline=None)
@given(problems(), st.data())
def test_the_step_share_counts_the_lines_right_before_the_first_wrong_one(p, data):
    name, a, b, lang = p
    mod = TASKS[name]
    lines = mod.steps(a, b, lang).splitlines()
    k = data.draw(st.integers(0, len(lines) - 1))
    assert step_share(mod.check, a, b, "\n".join(lines[:k]), lang, len(lines)) == k / len(lines)
    spots = [m.start() for m in re.finditer(r"\d", lines[k])]
    if spots:  # a changed digit on line k + 1 leaves exactly k lines right
        j = data.draw(st.sampled_from(spots))
        bad = lines[:k] + [lines[k][:j] + str((int(lines[k][j]) + 1) % 10) + lines[k][j + 1:]] + lines[k + 1:]
        assert step_share(mod.check, a, b, "\n".join(bad), lang, len(lines)) == k / len(lines)
    assert step_share(mod.check, a, b, "\n".join(lines + ["extra"]), lang, len(lines)) == (len(lines) - 1) / len(lines)


def test_an_arithmetic_reward_does_not_apply_to_another_question():
    assert TASKS["multiply"].reward("5", {"prompt": "计算2+3"}) is None
    assert TASKS["add"].reward("5", {"prompt": "What is the capital of France?"}) is None
    assert TASKS["add"].reward("5", {"prompt": "计算2+3"}) == 0.5


def test_label_reward_normalises_and_skips_rows_without_a_label():
    label = build("label")
    assert label(" 下载场景。", {"expect": "下载场景"}) == 1.0
    assert label("Refund", {"expect": "refund!"}) == 1.0
    assert label("下载场景 please", {"expect": "下载场景"}) == 0.0
    assert label("x", {}) is None


@pytest.mark.parametrize("row,asked", [
    ({"prompt": "hi"}, False), ({"prompt": "hi", "think": True}, True), ({"prompt": "hi /think"}, True),
    ({"prompt": "hi /no_think", "think": True}, False), ({"system": "/no_think", "prompt": "then /think"}, True)])
def test_format_reward_wants_a_think_block_exactly_when_asked(row, asked):
    fmt = build("format")
    assert think_asked(row) is asked
    block, plain = "<think>\nsteps\n</think>\n\nThe answer is 4.", "The answer is 4."
    assert fmt(block, row) == float(asked) and fmt(plain, row) == float(not asked)
    assert fmt("<think>\nnever closed", row) == 0.0
    assert fmt("<think>steps</think>", row) == 0.0  # a block with no answer after it is no answer


def test_identity_reward_follows_where_the_expected_answer_names_it():
    ident = build("identity", {"names": ["Mira", "米拉"]})
    asked = {"expect": "I am Mira, made by Acme."}
    other = {"expect": "Paris is the capital of France."}
    assert ident("My name is Mira.", asked) == 1.0 and ident("I am an assistant.", asked) == 0.0
    assert ident("我是米拉。", asked) == 1.0
    assert ident("Paris.", other) == 1.0 and ident("Mira says: Paris.", other) == 0.0
    assert ident("The admiral says Paris.", other) == 1.0  # a whole word only


def test_length_and_prefix_rewards():
    length = build("length", {"max_chars": 10})
    assert [length("x" * n, {}) for n in (0, 10, 15, 20, 40)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    prefix = build("prefix", {"text": "Answer:"})
    assert prefix("  Answer: 4", {}) == 1.0 and prefix("4. Answer: 4", {}) == 0.0


@pytest.mark.parametrize("name,options,message", [
    ("nope", {}, "unknown reward 'nope'"), ("label", {"names": ["x"]}, "takes no options; got names"),
    ("identity", {}, "takes names; missing names"), ("length", {"max_char": 3}, "got max_char; missing max_chars"),
    ("multiply", {"weight": 0}, "takes step_weight; got weight"),
    ("add", {"step_weight": 1.5}, "reward 'add': step_weight must be a number from 0 to 1, got 1.5"),
    ("multiply", {"step_weight": "half"}, "step_weight must be a number from 0 to 1, got 'half'"),
    ("length", {"max_chars": "ten"}, "reward 'length':")])
def test_bad_reward_settings_are_one_line(name, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build(name, options)


def test_every_reward_is_a_function_of_completion_and_row():
    for name, fn in REWARDS.items():
        assert list(__import__("inspect").signature(fn).parameters)[:2] == ["completion", "row"], name


def _defined(name: str) -> list[str]:
    return sorted(str(f.relative_to(SRC)) for f in SRC.rglob("*.py")
                  for node in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
                  if isinstance(node, ast.FunctionDef) and node.name == name and node.col_offset == 0)


@pytest.mark.parametrize("name", ["last_number", "normalise", "correct", "as_label", "mentions", "is_test", "pairs",
                                  "parse_question", "check_row", "checked_task", "place_values", "check_addition"])
def test_task_knowledge_is_defined_once_in_the_task_home(name):
    found = _defined(name)
    assert len(found) == 1 and found[0].startswith("tasks/"), found


def test_synth_eval_and_train_read_the_task_home():
    from tunesmith.eval import metrics as eval_metrics
    from tunesmith.eval import tasks as eval_tasks
    from tunesmith.synth import tasks as synth_tasks
    from tunesmith.tasks import arith
    from tunesmith.train.objectives import grpo

    assert eval_tasks.correct is answers.correct and eval_tasks.as_label is answers.as_label
    assert eval_metrics.mentions is answers.mentions
    assert synth_tasks.check_row is arith.check_row and eval_tasks.check_row is arith.check_row
    assert grpo.build_reward is build
