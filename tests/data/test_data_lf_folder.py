"""LLaMA-Factory's data, unedited: every kind of dataset is read or named (never misread),
duplicates and unfilled placeholders are warnings, plain text trains, and one path rule."""
from __future__ import annotations

import json
import re

import pytest
import yaml
from lf_folder import DUPLICATES, HUB_ONLY, INFO, VERDICTS, build_lf_folder

from tunesmith.cli import main
from tunesmith.data import DataConfig, DatasetConfig, build_sft_data, load_conversations, load_dataset
from tunesmith.data.types import TextDoc, Unsupported
from tunesmith.errors import ConfigError, UserError


@pytest.fixture
def lf(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return build_lf_folder(tmp_path)


def table_rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["dataset", "format"])
    rows = {}
    for ln in lines[start + 1:]:
        if ln.startswith("data check:"):
            break
        cells = ln.split("  ")
        cells = [c.strip() for c in cells if c.strip()]
        rows[cells[0]] = cells
    return rows


def test_check_whole_folder_reports_every_dataset(lf, capsys):
    assert main(["data", "check", "data"]) == 1  # some are unsupported
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ("note: data: skipped 4 hub-only datasets (alpaca_en: hf_hub_url, deepctrl: "
                                   "ms_hub_url, alpaca_om: om_hub_url, …), not readable offline (download one next "
                                   "to dataset_info.json and set its file_name to check it)")
    rows = table_rows(out)
    assert {name: cells[-1] for name, cells in rows.items()} == VERDICTS
    assert rows["c4_demo"][1:6] == ["text", "6", "6", "0", "0"]
    assert rows["wiki_demo"][1:3] == ["text", "3"]  # one document per non-empty line
    assert rows["alpaca_en_demo"][1:6] == ["alpaca", "7", "7", "0", str(DUPLICATES)]
    assert rows["glaive_toolcall_en_demo"][1] == "sharegpt" and rows["dpo_en_demo"][1] == "preference"
    said = {ln.split(":")[0]: ln for ln in out.splitlines() if ": unsupported: " in ln or ": failed: " in ln}
    assert "KTO data (label) is not supported: tunesmith trains SFT and preference pairs" in said["kto_en_demo"]
    assert "data/kto_en_demo.json:1: KTO data (label) is not supported" in said["kto_unmapped"]
    assert "multimodal data (images) is not supported: tunesmith trains text only" in said["mllm_demo"]
    assert "data/mllm_demo.json:1: multimodal data (images)" in said["mllm_unmapped"]
    assert "lost.json not found" in said["lost"] and not set(HUB_ONLY) & set(said)
    assert "data/alpaca_en_demo.json:6: row: warning: duplicate of row 2" in out
    assert "data/identity.json:1: output: warning: {{name}}/{{author}} placeholder left unfilled" in out
    assert "--identity_data" in out
    assert out.splitlines()[-1].startswith("data check: 0 problems, 4 warnings, 0 bad rows; 5 of 12 datasets failed")


def test_hub_only_entries_do_not_fail_a_folder_whose_local_data_is_fine(lf, capsys):
    good = ("alpaca_en_demo", "glaive_toolcall_en_demo", "dpo_en_demo", "c4_demo", "wiki_demo")
    (lf / "dataset_info.json").write_text(json.dumps({k: v for k, v in INFO.items() if k in good or k in HUB_ONLY}))
    assert main(["data", "check", "data"]) == 0
    out = capsys.readouterr().out
    assert set(table_rows(out)) == set(good) and out.startswith("note: data: skipped 4 hub-only datasets (")
    assert out.splitlines()[-1] == f"data check: all 22 rows in 5 datasets are ok, {DUPLICATES} warnings"


@pytest.mark.parametrize("spec", ["data:alpaca_en", "data:identity,deepctrl"])
def test_a_hub_only_dataset_named_explicitly_is_one_line(lf, capsys, smol_tok, spec):
    name = spec.rpartition(",")[2].removeprefix("data:")
    assert main(["data", "check", spec]) == 1
    got = capsys.readouterr()
    want = f"error: dataset '{name}' in data/dataset_info.json: hub-only dataset ({HUB_ONLY[name]}: "
    assert got.out == "" and got.err.startswith(want) and got.err.count("\n") == 1 and "set file_name" in got.err
    with pytest.raises(Unsupported) as e:  # training stops with the same line
        build_sft_data(DataConfig(datasets=[DatasetConfig(dataset_info="data", name=name)]), smol_tok)
    assert f"error: {e.value}\n" == got.err


def test_a_folder_of_hub_only_entries_names_nothing_to_check(lf, capsys):
    (lf / "dataset_info.json").write_text(json.dumps({k: INFO[k] for k in HUB_ONLY}))
    assert main(["data", "check", "data"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: data: every dataset of its dataset_info.json is hub-only (")


def _lf_yaml(**keys) -> str:
    cfg = {"model_name_or_path": "m", "stage": "sft", "do_train": True, "dataset": "identity,alpaca_en_demo",
           "dataset_dir": "data", "template": "llama3", "cutoff_len": 64, "max_samples": 3, **keys}
    with open("lf.yaml", "w") as f:
        yaml.safe_dump(cfg, f)
    return "lf.yaml"


def test_check_reads_a_llamafactory_train_yaml(lf, capsys):
    assert main(["data", "check", _lf_yaml()]) == 0  # a bare .yaml is data to check, as a recipe is
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert list(rows) == ["identity", "alpaca_en_demo"] and rows["identity"][-1] == "ok, warnings"
    assert main(["data", "check", _lf_yaml(dataset="identity,lost")]) == 1
    out = capsys.readouterr().out
    assert table_rows(out)["lost"][-1] == "failed" and "lost.json not found" in out


@pytest.mark.parametrize("keys,needle", [
    ({"dataset_dir": "nowhere"}, "lf.yaml: dataset_dir: nowhere not found (resolved from the current folder"),
    ({"dataset": "identity,alpaca_en"}, "dataset 'alpaca_en' in data/dataset_info.json: hub-only dataset"),
    ({"dataset": 5}, "lf.yaml: dataset: 5: must be a comma-separated list of names"),
    ({"max_samples": 0}, "lf.yaml: dataset: \"identity,alpaca_en_demo\": max_samples must be a whole number above 0"),
])
def test_a_llamafactory_yaml_that_names_nothing_readable_is_one_line(lf, capsys, keys, needle):
    assert main(["data", "check", _lf_yaml(**keys)]) != 0
    got = capsys.readouterr()
    assert got.out == "" and got.err.count("\n") == 1 and needle in got.err, got.err


def test_tools_preference_and_v1_parts_are_read(lf):
    convs, problems = load_conversations(DatasetConfig(dataset_info="data", name="glaive_toolcall_en_demo"))
    assert problems == [] and len(convs) == 3
    assert [t.role for t in convs[0].turns] == ["user", "assistant", "tool", "assistant"]
    assert convs[0].turns[1].tool_calls[0]["function"] == {"name": "get_weather", "arguments": {"city": "c0"}}
    assert convs[0].tools[0]["function"]["name"] == "get_weather"
    (v1,), problems = load_conversations(DatasetConfig(dataset_info="data", name="v1_sft_demo"))
    assert problems == [] and [t.content for t in v1.turns] == ["Two plus two?", "Four."]


def test_non_text_parts_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    row = {"messages": [{"role": "user", "content": [{"type": "text", "value": "look"}, {"type": "image"}]},
                        {"role": "assistant", "content": "ok"}]}
    (tmp_path / "v1.jsonl").write_text(json.dumps(row) + "\n")
    _, problems = load_conversations(DatasetConfig(path="v1.jsonl"))
    assert [str(p) for p in problems] == ["v1.jsonl:1: messages[0].content: only text parts are supported, "
                                          "got image (text only)"]


@pytest.mark.parametrize("rows,words", [
    ([{"instruction": "hi", "input": "", "output": "yo", "label": True}], "KTO data (label) is not supported"),
    ([{"conversations": [{"from": "human", "value": "<image>what?"}, {"from": "gpt", "value": "a cat"}],
       "images": ["1.jpg"]}], "multimodal data (images) is not supported"),
    ([{"messages": [{"role": "user", "content": "<audio>what?"}, {"role": "assistant", "content": "a bird"}],
       "audios": ["1.mp3"]}], "multimodal data (audios) is not supported"),
])
def test_bare_kto_and_multimodal_files_are_not_sft(tmp_path, monkeypatch, capsys, smol_tok, rows, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.json").write_text(json.dumps(rows))
    assert main(["data", "check", "f.json"]) == 1
    assert f"f: unsupported: dataset 'f': f.json:1: {words}" in capsys.readouterr().out
    with pytest.raises(Unsupported, match=re.escape(words)):
        build_sft_data(DataConfig(datasets=[DatasetConfig(path="f.json")]), smol_tok)


def test_duplicates_train_with_a_warning_and_dedupe_drops_them(lf, capsys, smol_tok):
    cfg = DataConfig(datasets=[DatasetConfig(dataset_info="data", name="alpaca_en_demo")])
    kept = build_sft_data(cfg, smol_tok)
    assert len(kept.train) == 7 and kept.report[0]["duplicates"] == DUPLICATES
    assert (f"warning: dataset 'alpaca_en_demo': {DUPLICATES} exact duplicate rows, trained on as they are "
            "(set data.dedupe: true to drop them)") in capsys.readouterr().out
    deduped = build_sft_data(cfg.model_copy(update={"dedupe": True}), smol_tok)
    assert len(deduped.train) == 5 and deduped.report[0]["duplicates_dropped"] == DUPLICATES
    assert deduped.report[0]["bad_rows"] == 0 and deduped.report[0]["rows"] == 7
    assert len({tuple(r["input_ids"]) for r in deduped.train}) == 5
    assert f"dropped {DUPLICATES} exact duplicate rows (data.dedupe)" in capsys.readouterr().out


def test_strict_turns_warnings_into_errors(lf, capsys):
    assert main(["data", "check", "data:alpaca_en_demo"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"data check: all 7 rows in 1 datasets are ok, {DUPLICATES} warnings"
    assert main(["data", "check", "data:alpaca_en_demo", "--strict"]) == 1
    out = capsys.readouterr().out
    assert table_rows(out)["alpaca_en_demo"][-1] == "failed (strict)"
    assert "--strict: warnings count as errors" in out.splitlines()[-1]


def test_unfilled_placeholders_warn_when_training(lf, capsys, smol_tok):
    build_sft_data(DataConfig(datasets=[DatasetConfig(dataset_info="data", name="identity")]), smol_tok)
    out = capsys.readouterr().out
    assert ("warning: dataset 'identity': 2 rows keep {{name}}/{{author}} unfilled (data/identity.json:1, "
            "data/identity.json:2); fill them with `tunesmith identity --identity_data DIR:identity") in out


def test_text_is_packed_with_eos_and_trained_on_every_token(lf, smol_tok):
    cfg = DataConfig(dataset_dir="data", cutoff_len=32,
                     datasets=[DatasetConfig(name="c4_demo"), DatasetConfig(name="wiki_demo")])
    data = build_sft_data(cfg, smol_tok)
    docs = [r.text for n in ("c4_demo", "wiki_demo") for r in load_dataset(DatasetConfig(dataset_info="data",
                                                                                        name=n)).rows]
    stream = [t for r in data.train for t in r["input_ids"]]
    n_tokens = sum(len(smol_tok(d, add_special_tokens=False)["input_ids"]) + 1 for d in docs)
    assert len(stream) == n_tokens and stream.count(smol_tok.eos_token_id) == len(docs) == 9
    assert all(r["labels"] == r["input_ids"] for r in data.train)
    assert all(len(r["input_ids"]) == 32 for r in data.train[:-1])
    assert isinstance(load_dataset(DatasetConfig(path="data/wiki_demo.txt")).rows[0], TextDoc)


def test_text_mixed_with_chat_is_one_config_error(lf, smol_tok):
    cfg = DataConfig(dataset_dir="data", datasets=[DatasetConfig(name="c4_demo"), DatasetConfig(name="identity")])
    with pytest.raises(ConfigError) as e:
        build_sft_data(cfg, smol_tok)
    assert str(e.value) == ("data.datasets: 'c4_demo' is plain text (pretraining) and 'identity' is chat data: "
                            "train them in separate stages")


def test_bare_text_jsonl_is_detected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c4.jsonl").write_text('{"text": "one doc"}\n{"text": "two doc"}\n')
    loaded = load_dataset(DatasetConfig(path="c4.jsonl"))
    assert loaded.format == "text" and [r.text for r in loaded.rows] == ["one doc", "two doc"]


def test_train_two_steps_on_text(lf, tiny_model, tmp_path, capsys):
    recipe = tmp_path / "pt.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": str(tiny_model), "output_dir": "runs/pt", "progress": False,
        "data": {"dataset_dir": "data", "cutoff_len": 16, "datasets": [{"name": "c4_demo"}, {"name": "wiki_demo"}]},
        "lora": {"r": 4, "alpha": 8}, "train": {"max_steps": 2, "batch_size": 2, "save_every": None}}))
    assert main(["train", "pt.yaml"]) == 0, capsys.readouterr().err
    m = json.loads((tmp_path / "runs" / "pt" / "manifest.json").read_text())
    assert m["status"] == "done" and [d["name"] for d in m["datasets"]] == ["c4_demo", "wiki_demo"]
    losses = [json.loads(ln) for ln in (tmp_path / "runs" / "pt" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses if "loss" in r] == [1, 2]


def test_check_and_train_resolve_the_same_relative_path(tmp_path, monkeypatch, capsys, tiny_model):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "q", "input": "", "output": "a"}) + "\n")
    (tmp_path / "recipes" / "r.yaml").write_text(yaml.safe_dump({
        "model": str(tiny_model), "output_dir": str(tmp_path / "run"),
        "data": {"datasets": [{"path": "data.jsonl"}]}}))
    monkeypatch.chdir(tmp_path)  # from here both find it …
    assert main(["data", "check", "--specs", "recipes/r.yaml"]) == 0
    capsys.readouterr()
    from tunesmith.data.specs import read_recipe_data

    assert build_sft_data(read_recipe_data(tmp_path / "recipes" / "r.yaml"), _tok(tiny_model)).report[0]["path"] == \
        str(tmp_path / "data.jsonl")
    monkeypatch.chdir(tmp_path / "recipes")  # … and from the recipe's folder neither does, with the same words
    want = f"data.datasets[0].path: data.jsonl not found (resolved from the current folder {tmp_path / 'recipes'})"
    assert main(["data", "check", "--specs", "r.yaml"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == f"data: failed: r.yaml: {want}"
    assert main(["train", "r.yaml"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {want}"
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="has only a name: set data.dataset_dir"):
        build_sft_data(DataConfig(datasets=[DatasetConfig(name="x")]), _tok(tiny_model))


def _tok(model):
    from tunesmith.models import load_tokenizer

    return load_tokenizer(model)
