"""``tunesmith data check``: one file per fault, each named as ``file:row: field: problem``,
exit 1 and no traceback; good data exits 0."""
from __future__ import annotations

import json

import pytest

from tunesmith.cli import main


def jl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)


GOOD = {"instruction": "Who are you?", "input": "", "output": "I am Tuna."}
GOOD2 = {"instruction": "Add 2 and 2", "input": "", "output": "4"}
SG = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
MSG = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
PREF = {"instruction": "Say hi", "input": "", "chosen": "Hi!", "rejected": "Go away."}


def sg(*turns, **extra):
    return {"conversations": [{"from": f, "value": v} for f, v in turns], **extra}


def msgs(*messages):
    return {"messages": list(messages)}


U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}

# (file name, content, row, field, words of the problem)
CASES = [
    ("bad_line.jsonl", jl(GOOD, '{"instruction": "x", "output": }'), 2, "json", "not valid JSON"),
    ("trailing_comma.json", "[" + json.dumps(GOOD) + ",\n]", 2, "json", "not valid JSON"),
    ("missing_comma.json", "[" + json.dumps(GOOD) + "\n" + json.dumps(GOOD2) + "]", 2, "json", "expected ','"),
    ("unclosed.json", "[" + json.dumps(GOOD) + ", " + json.dumps(GOOD2)[:-1], 2, "json", "not valid JSON"),
    ("utf16.jsonl", jl(GOOD).encode("utf-16"), 1, "encoding", "UTF-16"),
    ("bad_byte.jsonl", jl(GOOD).encode() + b'{"instruction": "caf\xe9", "output": "x"}\n', 2, "instruction",
     "not valid UTF-8"),
    ("latin1.csv", "instruction,output\nWho,Me\ncaf\u00e9,ok\n".encode("latin-1"), 3, "instruction",
     "not valid UTF-8"),
    ("output_number.json", json.dumps([GOOD, {**GOOD2, "output": 4}]), 2, "output", "expected text, got a number"),
    ("instruction_list.jsonl", jl(GOOD, {**GOOD2, "instruction": ["a"]}), 2, "instruction", "expected text"),
    ("no_output.jsonl", jl(GOOD, {"instruction": "x", "input": ""}), 2, "output", "missing"),
    ("empty_output.jsonl", jl(GOOD, {**GOOD2, "output": "  "}), 2, "output", "empty answer"),
    ("empty_prompt.jsonl", jl(GOOD, {**GOOD2, "instruction": ""}), 2, "instruction", "empty user turn"),
    ("history_pair.jsonl", jl(GOOD, {**GOOD2, "history": [["only a question"]]}), 2, "history[0]",
     "[question, answer] pair"),
    ("history_text.jsonl", jl(GOOD, {**GOOD2, "history": "earlier"}), 2, "history", "expected a list"),
    ("unknown_tag.jsonl", jl(SG, sg(("human", "hi"), ("bot", "yo"))), 2, "conversations[1].from",
     "unknown role tag 'bot'"),
    ("two_humans.jsonl", jl(SG, sg(("human", "hi"), ("human", "again"), ("gpt", "yo"))), 2, "conversations[1]",
     "roles out of order"),
    ("no_answer.jsonl", jl(SG, sg(("human", "hi"), ("gpt", "yo"), ("human", "and?"))), 2, "conversations[2]",
     "missing response"),
    ("no_turns.jsonl", jl(SG, {"conversations": []}), 2, "conversations", "no messages"),
    ("turn_text.jsonl", jl(SG, {"conversations": ["hi", "yo"]}), 2, "conversations[0]", "expected a message"),
    ("no_from.jsonl", jl(SG, {"conversations": [{"value": "hi"}, {"from": "gpt", "value": "x"}]}), 2,
     "conversations[0].from", "missing"),
    ("conv_text.jsonl", jl(SG, {"conversations": "hello"}), 2, "conversations", "expected a list of messages"),
    ("late_system.jsonl", jl(SG, sg(("human", "hi"), ("system", "be nice"), ("gpt", "yo"))), 2,
     "conversations[1].from", "may only come first"),
    ("bad_call.jsonl", jl(SG, sg(("human", "hi"), ("function_call", "call it"), ("observation", "r"),
                                 ("gpt", "yo"))), 2, "conversations[1].value", "tool calls"),
    ("assistant_first.jsonl", jl(MSG, msgs(A, U, A)), 2, "messages[0]", "roles out of order"),
    ("content_number.jsonl", jl(MSG, msgs(U, {"role": "assistant", "content": 7})), 2, "messages[1].content",
     "expected text"),
    ("image_part.jsonl", jl(MSG, msgs({"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}, A)),
     2, "messages[0].content", "only text parts"),
    ("orphan_tool.jsonl", jl(MSG, msgs(U, A, {"role": "tool", "content": "42"}, A)), 2, "messages[2]",
     "roles out of order"),
    ("reasoning_number.jsonl", jl(MSG, msgs(U, {**A, "reasoning_content": 3})), 2, "messages[1].reasoning_content",
     "expected text"),
    ("bad_arguments.jsonl", jl(MSG, msgs(U, {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{oops"}}]}, {"role": "tool", "content": "r"}, A)),
     2, "messages[1].tool_calls[0].arguments", "not valid JSON"),
    ("open_think.jsonl", jl(GOOD, {**GOOD2, "output": "<think>hmm, 4"}), 2, "output", "never closed"),
    ("not_object.jsonl", jl(GOOD, "[1, 2]"), 2, "row", "expected an object"),
    ("no_completion.jsonl", jl({"prompt": "a", "completion": "b"}, {"prompt": "c"}), 2, "completion", "missing"),
    ("same_answers.jsonl", jl(PREF, {**PREF, "instruction": "x", "rejected": "Hi!"}), 2, "rejected",
     "same answer as chosen"),
    ("empty_rejected.jsonl", jl(PREF, {**PREF, "instruction": "y", "rejected": ""}), 2, "rejected", "empty answer"),
    ("no_rejected.jsonl", jl(PREF, {"instruction": "z", "chosen": "a"}), 2, "rejected", "missing"),
    ("short_row.csv", "instruction,input,output\nWho,,Me\nHow,far\n", 3, "row", "2 cells, the header has 3"),
    ("empty_cell.csv", "instruction,input,output\nWho,,Me\nHow,,\n", 3, "output", "empty answer"),
    ("unknown_format.jsonl", jl({"question": "a", "answer": "b"}), 1, "format", "can't tell the format"),
    ("empty.jsonl", "", 1, "file", "no rows"),
    ("bad_conv_json.csv", 'conversations\n"[{oops"\n', 2, "conversations", "not valid JSON text"),
    ("garbage.parquet", b"not a parquet file at all", 1, "parquet", "can't read the parquet file"),
]


@pytest.mark.parametrize("name,content,row,field,words", CASES, ids=[c[0] for c in CASES])
def test_each_fault_is_one_line(tmp_path, monkeypatch, capsys, name, content, row, field, words):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    rc = main(["data", "check", name])
    out, err = capsys.readouterr()
    assert rc == 1, out + err
    lines = [ln for ln in out.splitlines() if ln.startswith(f"{name}:")]
    assert lines, out
    assert any(ln.startswith(f"{name}:{row}: {field}: ") and words in ln for ln in lines), out
    assert "Traceback" not in out + err


def test_at_least_thirty_faults():
    assert len(CASES) >= 30


def test_good_files_of_every_format_exit_0(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps([GOOD, GOOD2]))
    (tmp_path / "s.jsonl").write_text(jl(SG, sg(("system", "be brief"), ("human", "x"), ("gpt", "y"))))
    (tmp_path / "m.jsonl").write_text(jl(MSG))
    (tmp_path / "pc.jsonl").write_text(jl({"prompt": "2+2=", "completion": "4"}))
    (tmp_path / "p.jsonl").write_text(jl(PREF))
    (tmp_path / "c.csv").write_text("instruction,input,output\nWho,,Me\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "one.jsonl").write_text(jl(GOOD))
    (folder / "two.json").write_text(json.dumps([GOOD2]))
    rc = main(["data", "check", "a.json", "s.jsonl", "m.jsonl", "pc.jsonl", "p.jsonl", "c.csv", "folder"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "a (a.json): 2 rows, 2 ok, 0 bad" in out
    assert "folder (folder): 2 rows, 2 ok, 0 bad" in out
    assert "all 10 rows in 7 datasets are ok" in out


def test_max_lines_caps_each_kind(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rows = [{**GOOD, "instruction": f"q{i}", "output": ""} for i in range(30)]
    (tmp_path / "many.jsonl").write_text(jl(*rows))
    assert main(["data", "check", "many.jsonl", "--max_lines", "5"]) == 1
    out = capsys.readouterr().out
    assert sum(ln.startswith("many.jsonl:") for ln in out.splitlines()) == 5
    assert "... and 25 more 'empty' problems" in out


def test_token_lengths_and_cutoff_with_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.jsonl").write_text(jl(GOOD, {**GOOD2, "output": "word " * 200}))
    assert main(["data", "check", "a.jsonl", "--model", "smollm2-135m-instruct", "--cutoff_len", "100"]) == 0
    out = capsys.readouterr().out
    assert "tokens p50" in out and "1 over cutoff_len 100" in out


def test_missing_spec_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "check", "nowhere.jsonl"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: nowhere.jsonl: no such file or folder") and len(err.splitlines()) == 1
