"""Teacher replies are data, never trusted (issue 23): a teacher that answers HTTP 200 with a
broken body fails those requests only — retried, then named in errors.jsonl with the reason —
and the run ends on one line with exit ≠ 0, keeping every good answer for the rerun."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fake_teacher import FAULTS, FakeTeacher, default_answer, digest

from tunesmith.cli import main
from tunesmith.synth.runner import item_key
from tunesmith.synth.teacher import TeacherConfig

# Each broken body → the reason errors.jsonl gives for it, exactly.
REASONS = {
    "garbage": "reply was not JSON: '<html><body>502 Bad Gateway</body></html>'",
    "empty-body": "reply was empty (HTTP 200 with no body)",
    "not-object": "reply was a list, not a JSON object: '[\"a\", \"list\"]'",
    "no-choices": "reply had no choices",
    "error-200": "reply had no choices (it held an error: 'upstream overloaded')",
    "choices-string": "reply's choices was a string, not a list",
    "choice-number": "reply's choices[0] was a number, not an object",
    "no-message": "reply's choices[0] had no message",
    "message-string": "reply's message was a string, not an object",
    "null-content": "reply's message content was null, not text",
    "number-content": "reply's message content was a number, not text",
    "usage-string": "reply's usage was a string, not an object",
    "usage-total-string": "reply's usage.total_tokens was '\"10\"', not a whole number",
}
BAD = sorted(REASONS)
KEY_CFG = TeacherConfig()  # the verbs below leave the sampling parameters unset


@pytest.fixture
def teacher():
    t = FakeTeacher(fail_every=0)
    yield t
    t.close()


def cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """``tunesmith ARGV`` in this process: the exit code and the non-empty stderr lines."""
    code = main(argv)
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def teacher_args(url: str, retries: int = 1) -> list[str]:
    return ["--teacher.base_url", url, "--teacher.max_retries", str(retries), "--teacher.timeout", "5"]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def prompts_file(path: Path, prompts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def test_each_broken_body_is_retried_then_named_in_errors_jsonl(tmp_path, teacher, capsys):
    teacher.bad = lambda msgs, attempt: msgs[-1]["content"].removeprefix("fault:") if "fault:" in msgs[-1]["content"] \
        else None
    prompts = [f"fault:{f}" for f in BAD] + ["good one", "good two"]
    argv = ["synth", "distill", "--prompts", str(prompts_file(tmp_path / "p.jsonl", prompts)),
            "--out", str(tmp_path / "out"), *teacher_args(teacher.url, retries=2)]
    code, err = cli(argv, capsys)
    assert code != 0 and len(err) == 1, err
    assert err[0].startswith(f"error: distill: {len(BAD)} of {len(prompts)} requests failed (first: reply"), err
    assert err[0].endswith(f"); the reasons are in {tmp_path}/out/errors.jsonl; rerun the same command to retry "
                           "them (the 2 answers are kept)"), err
    # Every broken body was asked 1 + max_retries times, every good answer once.
    asked = [m[-1]["content"] for m in teacher.requests]
    assert {p: asked.count(p) for p in prompts} == {p: 3 if p.startswith("fault:") else 1 for p in prompts}
    errors = jsonl(tmp_path / "out" / "errors.jsonl")
    assert {e["messages"][-1]["content"].removeprefix("fault:"): e["reason"] for e in errors} == REASONS
    assert all(e["step"] == "distill" and e["key"] == item_key(e["messages"], KEY_CFG) for e in errors)
    journal = jsonl(tmp_path / "out" / "distill.journal.jsonl")
    assert sorted(r["key"] for r in journal) == sorted(item_key([{"role": "user", "content": p}], KEY_CFG)
                                                       for p in ("good one", "good two"))
    assert not (tmp_path / "out" / "data.jsonl").exists() and not (tmp_path / "out" / "manifest.json").exists()

    teacher.bad, before = None, len(teacher.requests)      # the teacher is fixed: only the failed are asked again
    code, err = cli(argv, capsys)
    assert code == 0, err
    assert sorted(m[-1]["content"] for m in teacher.requests[before:]) == sorted(f"fault:{f}" for f in BAD)
    rows = jsonl(tmp_path / "out" / "data.jsonl")
    assert sorted(r["messages"][0]["content"] for r in rows) == sorted(prompts)
    assert not (tmp_path / "out" / "errors.jsonl").exists()


NOVEL = "".join(f"On day {i} the keeper woke early. He lit lamp number {i}! Was the sea calm? It was not.\n\n"
                f"Ship {i} came in at dusk. Its captain said \"{i} nights at sea.\" Then he slept.\n\n"
                for i in range(12))


def _pair_or_score(msgs: list[dict]) -> str:
    text = msgs[-1]["content"]
    if "strict grader" in text:
        return "Looks faithful.\nScore: 9"
    return json.dumps({"question": f"What happens in passage {digest(msgs) % 1000}?", "answer": "The keeper acts."})


def _verb(name: str, tmp_path: Path, embedded_dir: Path) -> tuple[list[str], str, int]:
    """(argv without the teacher, the step whose journal holds the answers, rows a full run writes)."""
    out = str(tmp_path / "out")
    pairs = [(f"question {i}?", f"my own answer number {i}.") for i in range(9)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"instruction": q, "input": "", "output": a}) + "\n"
                                                 for q, a in pairs))
    if name == "distill":
        prompts_file(tmp_path / "p.jsonl", [f"question number {i}: what is {i} squared?" for i in range(9)])
        return ["synth", "distill", "--prompts", str(tmp_path / "p.jsonl"), "--out", out], "distill", 9
    if name == "style":
        return ["synth", "style", "--corpus", str(tmp_path / "rows.jsonl"), "--k", "2", "--out", out], "style", 9
    if name == "judge":
        return ["synth", "judge", "--input", str(tmp_path / "rows.jsonl"), "--out", out], "judge", 9
    (tmp_path / "novel.md").write_text(NOVEL, encoding="utf-8")
    return ["synth", "chunks", "--text", str(tmp_path / "novel.md"), "--tokenizer", str(embedded_dir),
            "--chunk_tokens", "40", "--generate", "--judge", "--max_items", "9", "--out", out], "generate", 9


@pytest.mark.parametrize("verb", ["distill", "style", "judge", "chunks"])
def test_verb_with_a_partly_broken_teacher_fails_cleanly_and_resumes(verb, tmp_path, teacher, embedded_dir, capsys):
    argv, step, n_rows = _verb(verb, tmp_path, embedded_dir)
    argv += teacher_args(teacher.url)
    if verb in ("judge", "chunks"):
        teacher.answer = _pair_or_score if verb == "chunks" else (lambda msgs: "Score: 9")

    def fault(msgs):  # about half the items, each broken its own way, on every attempt
        d = digest(msgs)
        return BAD[(d // 2) % len(BAD)] if d % 2 else None
    teacher.bad = lambda msgs, attempt: fault(msgs)
    code, err = cli(argv, capsys)
    sent = {item_key(m, KEY_CFG): m for m in teacher.requests}
    bad = {k for k, m in sent.items() if fault(m)}
    good = set(sent) - bad
    assert len(sent) == 9 and bad and good, "the inputs must give both good and broken replies"
    assert code != 0
    label = "generate" if verb == "chunks" else verb
    errors_path = tmp_path / "out" / "errors.jsonl"
    assert len(err) == 1 and err[0].startswith(f"error: {label}: {len(bad)} of 9 requests failed (first: reply"), err
    assert f"the reasons are in {errors_path}; rerun the same command" in err[0]
    errors = jsonl(errors_path)
    assert {e["key"]: e["reason"] for e in errors} == {k: REASONS[fault(sent[k])] for k in bad}
    journal = {r["key"]: r for r in jsonl(tmp_path / "out" / f"{step}.journal.jsonl")}
    assert set(journal) == good                       # every good answer kept, nothing broken in it
    for k in good:
        assert journal[k]["content"] == teacher.answer(sent[k]) and journal[k]["tokens"] == 10
    assert not (tmp_path / "out" / "data.jsonl").exists()

    teacher.bad, before = None, len(teacher.requests)
    code, err = cli(argv, capsys)
    assert code == 0, err
    again = [item_key(m, KEY_CFG) for m in teacher.requests[before:] if item_key(m, KEY_CFG) in sent]
    assert sorted(again) == sorted(bad)               # the rerun asked only the failed ones
    assert len(jsonl(tmp_path / "out" / "data.jsonl")) == n_rows
    assert not errors_path.exists()
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "done"


def test_nothing_answered_says_so(tmp_path, teacher, capsys):
    teacher.bad = lambda msgs, attempt: "garbage"
    out = tmp_path / "o.jsonl"
    argv = ["synth", "distill", "--prompts", str(prompts_file(tmp_path / "p.jsonl", ["a", "b", "c"])),
            "--out", str(out), *teacher_args(teacher.url, retries=0)]
    code, err = cli(argv, capsys)
    assert code != 0
    assert err == ["error: distill: nothing was answered: all 3 requests failed (first: reply was not JSON: "
                   f"'<html><body>502 Bad Gateway</body></html>'); the reasons are in {tmp_path}/o.errors.jsonl; "
                   "rerun the same command to retry them"]
    assert len(teacher.requests) == 3                              # max_retries 0: asked once each
    assert (tmp_path / "o.errors.jsonl").is_file()
    assert not any((tmp_path / n).exists() for n in ("o.jsonl", "o.distill.journal.jsonl", "o.manifest.json"))


def test_a_broken_body_once_is_retried_and_every_attempt_is_counted(tmp_path, teacher, capsys):
    flaky = {"b", "d"}
    teacher.bad = lambda msgs, attempt: "empty-body" if msgs[-1]["content"] in flaky and attempt < 2 else None
    argv = ["synth", "distill", "--prompts", str(prompts_file(tmp_path / "p.jsonl", list("abcde"))),
            "--out", str(tmp_path / "out"), *teacher_args(teacher.url, retries=2)]
    code, err = cli(argv, capsys)
    assert code == 0, err
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["requests_this_run"] == len(teacher.requests) == 5 + 2 * len(flaky)
    assert man["tokens_this_run"] == 10 * 5                         # broken bodies reported no usage
    assert len(jsonl(tmp_path / "out" / "data.jsonl")) == 5


def test_a_replys_tokens_are_its_own_usage(tmp_path, teacher, capsys):
    prompts = ["p0", "p1", "empty-content", "p3", "empty-cut", "empty-choices"]
    teacher.bad = lambda msgs, attempt: msgs[-1]["content"] if msgs[-1]["content"].startswith("empty-") else None
    teacher.usage = lambda msgs: 20 + int(msgs[-1]["content"][1:])
    argv = ["synth", "distill", "--prompts", str(prompts_file(tmp_path / "p.jsonl", prompts)),
            "--out", str(tmp_path / "out"), "--teacher.concurrency", "1", *teacher_args(teacher.url)]
    code, err = cli(argv, capsys)
    assert code == 0, err                          # an empty but well-formed reply is an answer, dropped and counted
    journal = {r["key"]: r for r in jsonl(tmp_path / "out" / "distill.journal.jsonl")}
    own = {"p0": 20, "p1": 21, "empty-content": 4, "p3": 23, "empty-cut": 5, "empty-choices": 3}  # FAULTS' usage
    assert {p: journal[item_key([{"role": "user", "content": p}], KEY_CFG)]["tokens"] for p in prompts} == own
    assert journal[item_key([{"role": "user", "content": "empty-choices"}], KEY_CFG)]["finish_reason"] == "empty"
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["tokens_this_run"] == sum(own.values()) and man["rows"] == 3
    assert man["dropped_empty"] == 2 and man["dropped_truncated"] == 1
    assert len(teacher.requests) == 6              # not retried: nothing was wrong with them
    assert [r["messages"][-1]["content"] for r in jsonl(tmp_path / "out" / "data.jsonl")] == \
        [default_answer([{"role": "user", "content": p}]) for p in ("p0", "p1", "p3")]


def test_the_real_cli_prints_one_line_and_no_traceback(tmp_path, teacher):
    teacher.bad = lambda msgs, attempt: "null-content" if msgs[-1]["content"] == "two" else None
    cmd = [sys.executable, "-m", "tunesmith", "synth", "distill", "--out", str(tmp_path / "d.jsonl"),
           "--prompts", str(prompts_file(tmp_path / "p.jsonl", ["one", "two"])), *teacher_args(teacher.url, 0)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: distill: 1 of 2 requests failed (first: reply's message content was null, not text); the reasons "
        f"are in {tmp_path}/d.errors.jsonl; rerun the same command to retry them (the 1 answer is kept)"]
    assert [e["messages"] for e in jsonl(tmp_path / "d.errors.jsonl")] == [[{"role": "user", "content": "two"}]]
    assert not (tmp_path / "d.jsonl").exists()
