"""A LLaMA-Factory data folder, written as LF users write it, loads unedited."""
from __future__ import annotations

import json

import pytest

from tunesmith.cli import main
from tunesmith.data import DataConfig, DatasetConfig, build_sft_data, load_conversations, load_preferences
from tunesmith.errors import UserError

INFO = {
    # LF's identity.json entry as users copy it: maps history although the file has none.
    "identity": {"file_name": "identity.json", "formatting": "alpaca",
                 "columns": {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
                             "system": ""}},
    "chat": {"file_name": "chat.jsonl", "formatting": "sharegpt",
             "columns": {"messages": "dialog", "system": "sys"},
             "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "me", "assistant_tag": "bot",
                      "system_tag": "rules"}},
    "prefs": {"file_name": "prefs.json", "ranking": True,
              "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
    "prefs_sg": {"file_name": "prefs_sg.json", "formatting": "sharegpt", "ranking": True,
                 "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
    "openai": {"file_name": "oa", "formatting": "sharegpt", "num_samples": 5, "columns": {"messages": "messages"},
               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                        "assistant_tag": "assistant", "system_tag": "system"}},
}


@pytest.fixture
def lf_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "dataset_info.json").write_text(json.dumps(INFO, indent=2))
    (d / "identity.json").write_text(json.dumps(
        [{"instruction": f"hi {i}", "input": "", "output": f"I am {{{{name}}}}, number {i}."} for i in range(6)],
        ensure_ascii=False))
    (d / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"dialog": [{"speaker": "me", "text": "hello"}, {"speaker": "bot", "text": "hey"}], "sys": "be brief"},
        {"dialog": [{"speaker": "rules", "text": "pirate"}, {"speaker": "me", "text": "hi"},
                    {"speaker": "bot", "text": "arr"}]},
    ]))
    (d / "prefs.json").write_text(json.dumps([{"instruction": "Greet", "input": "me", "chosen": "Hello!",
                                               "rejected": "No."}]))
    (d / "prefs_sg.json").write_text(json.dumps([{
        "conversations": [{"from": "human", "value": "Greet me"}],
        "chosen": {"from": "gpt", "value": "Hello!"}, "rejected": {"from": "gpt", "value": "No."}}]))
    (d / "oa").mkdir()
    (d / "oa" / "part1.jsonl").write_text(json.dumps(
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"},
                      {"role": "assistant", "content": "a1"}]}) + "\n")
    (d / "oa" / "part2.json").write_text(json.dumps(
        [{"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]}]))
    return d


def test_alpaca_mapping_history_without_a_history_column(lf_dir):
    convs, problems = load_conversations(DatasetConfig(dataset_info=str(lf_dir), name="identity"))
    assert problems == [] and len(convs) == 6
    assert [t.role for t in convs[0].turns] == ["user", "assistant"]
    assert convs[0].turns[1].content == "I am {{name}}, number 0." and convs[0].system is None


def test_sharegpt_custom_tags_and_system(lf_dir):
    convs, problems = load_conversations(DatasetConfig(dataset_info=str(lf_dir), name="chat"))
    assert problems == []
    assert convs[0].system == "be brief" and convs[1].system == "pirate"
    assert [(t.role, t.content) for t in convs[1].turns] == [("user", "hi"), ("assistant", "arr")]


def test_ranking_datasets_are_preference_pairs(lf_dir):
    for name in ("prefs", "prefs_sg"):
        pairs, problems = load_preferences(DatasetConfig(dataset_info=str(lf_dir), name=name))
        assert problems == [] and len(pairs) == 1
        assert pairs[0].prompt.turns[-1].content in ("Greet\nme", "Greet me")
        assert (pairs[0].chosen.content, pairs[0].rejected.content) == ("Hello!", "No.")


def test_folder_dataset_and_num_samples(lf_dir, smol_tok):
    cfg = DataConfig(datasets=[DatasetConfig(dataset_info=str(lf_dir), name="openai")])
    data = build_sft_data(cfg, smol_tok)
    assert len(data.train) == 5  # num_samples: 2 rows → 2 copies + 1
    assert data.report[0]["rows"] == 2 and data.report[0]["rows_used"] == 5


def test_check_whole_folder_and_dir_name(lf_dir, monkeypatch, capsys):
    monkeypatch.chdir(lf_dir.parent)
    assert main(["data", "check", "data"]) == 0
    out = capsys.readouterr().out
    assert "identity (data/identity.json): 6 rows, 6 ok" in out and "openai (data/oa): 2 rows" in out
    assert main(["data", "check", "data:chat,prefs"]) == 0
    assert "chat (data/chat.jsonl): 2 rows, 2 ok, 0 bad" in capsys.readouterr().out


def test_mapped_column_no_row_has_names_column_and_dataset(lf_dir, monkeypatch, capsys, smol_tok):
    info = {"broken": {"file_name": "identity.json", "columns": {"prompt": "question", "response": "output"}}}
    (lf_dir / "dataset_info.json").write_text(json.dumps(info))
    monkeypatch.chdir(lf_dir.parent)
    assert main(["data", "check", "data:broken"]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("data/identity.json:1: question: "))
    assert "dataset 'broken'" in line and "instruction" in line
    with pytest.raises(UserError, match="question.*dataset 'broken'"):
        build_sft_data(DataConfig(datasets=[DatasetConfig(dataset_info=str(lf_dir), name="broken")]), smol_tok)


@pytest.mark.parametrize("entry,words,verdict", [
    ({"file_name": "identity.json", "columns": {"images": "images"}}, "multimodal data (images) is not supported",
     "unsupported"),
    ({"file_name": "identity.json", "formatting": "webdataset"}, "formatting 'webdataset'", "failed"),
    ({"file_name": "nope.json"}, "not found", "failed"),
])
def test_registry_errors_are_one_line(lf_dir, monkeypatch, capsys, smol_tok, entry, words, verdict):
    (lf_dir / "dataset_info.json").write_text(json.dumps({"x": entry}))
    monkeypatch.chdir(lf_dir.parent)
    assert main(["data", "check", "data:x"]) == 1
    out = capsys.readouterr().out
    assert any(ln.startswith(f"x: {verdict}: dataset 'x'") and words in ln for ln in out.splitlines()), out
    with pytest.raises(UserError) as e:  # training stops with the same one line
        build_sft_data(DataConfig(datasets=[DatasetConfig(dataset_info="data", name="x")]), smol_tok)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_unknown_name_suggests_nearest(lf_dir):
    with pytest.raises(UserError, match="did you mean 'identity'"):
        load_conversations(DatasetConfig(dataset_info=str(lf_dir), name="identiy"))


def test_inline_yaml_datasets_and_recipe_spec(lf_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "qa.csv").write_text("question,answer\nWho?,Me.\nWhere?,Here.\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "model: smollm2-135m-instruct\n"
        "data:\n"
        "  cutoff_len: 256\n"
        "  datasets:\n"
        "    - {path: qa.csv, format: alpaca, columns: {prompt: question, response: answer}, samples: 3}\n"
        "    - {dataset_info: data, name: identity}\n")
    monkeypatch.chdir(tmp_path)  # relative paths resolve from the current folder, as train resolves them
    assert main(["data", "check", "--specs", "recipe.yaml"]) == 0
    out = capsys.readouterr().out
    assert "qa (qa.csv): 2 rows, 2 ok" in out and "identity (data/identity.json)" in out
    monkeypatch.chdir(tmp_path / "data")  # not from the recipe's folder: the path is named with its folder and key
    assert main(["data", "check", "--specs", str(recipe)]) == 1
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("qa: failed: "))
    assert line.endswith(f"recipe.yaml: data.datasets[0].path: qa.csv not found (resolved from the current folder "
                         f"{tmp_path / 'data'})")
