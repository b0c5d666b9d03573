"""Readers (json, jsonl, csv, parquet, folders), ``data convert`` round trips and ``data stats``."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_strategies import conversations, to_conversation
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesmith.cli import main
from tunesmith.data import DatasetConfig, load_conversations
from tunesmith.data.convert import WRITERS
from tunesmith.data.readers import read_file

ROWS = [{"instruction": "Who?", "input": "", "output": "Me.", "history": [["hi", "hello"]]},
        {"instruction": "2+2", "input": "say it", "output": "<think>\nadd\n</think>\n\n4"}]


def turns_of(convs):
    return [[(t.role, t.content, t.reasoning) for t in c.turns] for c in convs]


EXPECTED = [[("user", "hi", None), ("assistant", "hello", None), ("user", "Who?", None), ("assistant", "Me.", None)],
            [("user", "2+2\nsay it", None), ("assistant", "4", "add")]]


def test_every_file_type_reads_the_same(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(ROWS, indent=2))
    (tmp_path / "a.jsonl").write_text("\ufeff" + "\n\n".join(json.dumps(r) for r in ROWS) + "\n")
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in ROWS))  # JSONL named .json
    csv_rows = [{**r, "history": json.dumps(r["history"])} if "history" in r else r for r in ROWS]
    cols = ("instruction", "input", "output", "history")
    csv_text = ",".join(cols) + "\n" + "".join(
        ",".join('"' + str(r.get(k, "")).replace('"', '""') + '"' for k in cols) + "\n" for r in csv_rows)
    (tmp_path / "a.csv").write_text(csv_text)
    pq.write_table(pa.Table.from_pylist([{**r, "history": r.get("history")} for r in ROWS]), tmp_path / "a.parquet")
    for name in ("a.json", "a.jsonl", "lines.json", "a.csv", "a.parquet"):
        convs, problems = load_conversations(DatasetConfig(path=str(tmp_path / name)))
        assert problems == [], name
        assert turns_of(convs) == EXPECTED, name


def test_rows_keep_their_line_numbers(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n" + json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    records, problems = read_file(tmp_path / "a.jsonl")
    assert [r.row for r in records] == [2, 4] and problems == []
    (tmp_path / "a.csv").write_text('instruction,output\n"two\nlines",x\nnext,y\n')
    assert [r.row for r in read_file(tmp_path / "a.csv")[0]] == [2, 4]


def test_line_separators_inside_strings_stay_in_their_row(tmp_path):
    row = {"instruction": "a\u2028b\x85c", "output": "ok"}
    (tmp_path / "a.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n")
    convs, problems = load_conversations(DatasetConfig(path=str(tmp_path / "a.jsonl")))
    assert problems == [] and convs[0].turns[0].content == "a\u2028b\x85c"


def test_folder_reads_its_data_files_in_order(tmp_path):
    (tmp_path / "b.jsonl").write_text(json.dumps(ROWS[1]) + "\n")
    (tmp_path / "a.json").write_text(json.dumps([ROWS[0]]))
    (tmp_path / "notes.txt").write_text("not data")
    convs, problems = load_conversations(DatasetConfig(path=str(tmp_path)))
    assert problems == [] and turns_of(convs) == EXPECTED


@pytest.mark.parametrize("to,tools", [("alpaca", False), ("sharegpt", True), ("messages", True)])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_convert_round_trips(tmp_path_factory, to, tools, data):
    system, turns = data.draw(conversations(multi=True, tools=tools))
    conv = to_conversation(system, turns)
    d = tmp_path_factory.mktemp("rt")
    (d / "in.jsonl").write_text(json.dumps(WRITERS[to](conv), ensure_ascii=False) + "\n", encoding="utf-8")
    (back,), problems = load_conversations(DatasetConfig(path=str(d / "in.jsonl")))
    assert problems == []
    assert (back.turns, back.system, back.tools) == (conv.turns, conv.system, conv.tools)


def test_convert_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    assert main(["data", "convert", "a.json", "out.jsonl", "--to", "sharegpt"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows[0]["conversations"][0] == {"from": "human", "value": "hi"}
    assert main(["data", "convert", "out.jsonl", "back.json", "--to", "alpaca"]) == 0
    back = json.loads((tmp_path / "back.json").read_text())
    assert [r["output"] for r in back] == [r["output"] for r in ROWS]
    assert "wrote 2 rows to back.json as alpaca" in capsys.readouterr().out


def test_convert_refuses_what_the_target_cannot_hold(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    call = {"function": {"name": "w", "arguments": {}}}
    row = {"messages": [{"role": "user", "content": "weather?"},
                        {"role": "assistant", "content": "", "tool_calls": [call]},
                        {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}]}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    assert main(["data", "convert", "m.jsonl", "out.jsonl", "--to", "alpaca"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: m.jsonl:1: tools: alpaca can't hold tool calls") and len(err.splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists()
    assert main(["data", "convert", "m.jsonl"]) == 1
    assert "needs IN and OUT" in capsys.readouterr().err


def test_stats_writes_a_histogram(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rows = [{"instruction": f"q{i}", "input": "", "output": "word " * (i + 1)} for i in range(40)]
    (tmp_path / "train.json").write_text(json.dumps(rows))
    assert main(["data", "stats", "train.json", "--cutoff_len", "40"]) == 0
    out = capsys.readouterr().out
    assert "train (train.json): 40 rows, 40 ok, 0 bad; tokens p50" in out and "over cutoff_len 40" in out
    png = tmp_path / "train_lengths.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "stats", "train.json", "--out", "plots/h.png"]) == 0
    assert (tmp_path / "plots" / "h.png").is_file()
