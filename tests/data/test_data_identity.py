"""``tunesmith identity --identity_data``: the user's own identity rows (LLaMA-Factory's
identity.json with {{name}}/{{author}}) are filled and trained on instead of the shipped ones."""
from __future__ import annotations

import json

import pytest
from lf_folder import IDENTITY, build_lf_folder

from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.data.names import IdentityNames
from tunesmith.synth.identity import user_identity_messages


def test_user_rows_are_filled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_lf_folder(tmp_path)
    rows = user_identity_messages("data:identity", IdentityNames(name="Mira", author="Tunesmith Lab"))
    assert [r["messages"] for r in rows] == [
        [{"role": "user", "content": "hi"},
         {"role": "assistant", "content": "Hello! I am Mira, an AI assistant developed by Tunesmith Lab."}],
        [{"role": "user", "content": "Who are you?"},
         {"role": "assistant", "content": "I am Mira, made by Tunesmith Lab."}]]
    (tmp_path / "mine.jsonl").write_text(json.dumps({"messages": [
        {"role": "system", "content": "You are {{NAME}}."}, {"role": "user", "content": "name?"},
        {"role": "assistant", "content": "{{NAME}} by {{AUTHOR}}"}]}) + "\n")
    (row,) = user_identity_messages("mine.jsonl", IdentityNames(name="Mira", author="Lab"))
    assert [m["content"] for m in row["messages"]] == ["You are Mira.", "name?", "Mira by Lab"]
    with pytest.raises(UserError, match=r"data/identity.json:1: text uses \{\{author\}\} but no author is set"):
        user_identity_messages("data:identity", IdentityNames(name="Mira"))


def test_bad_identity_rows_stop_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps([{"instruction": "hi", "output": ""}]))
    with pytest.raises(UserError, match=r"^identity_data: bad.json:1: output: empty answer"):
        user_identity_messages("bad.json", IdentityNames(name="Mira", author="Lab"))


def test_identity_job_trains_on_the_users_rows(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    build_lf_folder(tmp_path)
    assert main(["identity", f"model={tiny_model}", "--identity_data", "data:identity", "--name", "Mira",
                 "--author", "Tunesmith Lab", "replay.enabled=false", "eval=false", "train.max_steps=1",
                 "progress=false", "output_dir=run"]) == 0
    written = [json.loads(ln) for ln in (tmp_path / "run" / "data" / "identity.jsonl").read_text().splitlines()]
    assert len(written) == len(IDENTITY)
    assert written[1]["messages"][1]["content"] == "I am Mira, made by Tunesmith Lab."
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["status"] == "done" and m["datasets"][0]["rows"] == len(IDENTITY)


def test_extra_data_rows_keep_tools_and_fill_reasoning(tmp_path):
    """``identity.extra_data`` goes through the same filler: reasoning placeholders are filled and
    tools survive (the job's own copy of this loop used to drop both)."""
    from tunesmith.data.config import DatasetConfig
    from tunesmith.synth.identity import filled_rows

    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}]
    f = tmp_path / "extra.jsonl"
    f.write_text(json.dumps({"tools": tools, "messages": [
        {"role": "user", "content": "who?"},
        {"role": "assistant", "content": "{{NAME}}", "reasoning_content": "I am {{NAME}} by {{AUTHOR}}."}]}) + "\n")
    (row,) = filled_rows(DatasetConfig(path=str(f)), IdentityNames(name="Mira", author="Lab"), "extra_data[0]")
    assert row["messages"][1]["content"] == "Mira"
    assert row["messages"][1]["reasoning_content"] == "I am Mira by Lab."
    assert row["tools"]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(UserError, match=r"^extra_data\[0\]: "):
        filled_rows(DatasetConfig(path=str(tmp_path / "bad.jsonl")), IdentityNames(name="M", author="L"),
                    "extra_data[0]")
