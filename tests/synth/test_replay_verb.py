"""synth replay: the model's own answers to the shipped general prompts as a dataset (each kept
answer once), cached per model; a pipeline stage whose rows a train stage weighs with ``ratio``.

The tiny random model answers nothing usable (empty answers), so these run the embedded SmolLM2
on 3 English prompts and 16 new tokens: greedy, it keeps some answers, trimmed to a full sentence."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tunesmith.cli import main

SMALL = ["languages=en", "prompts=3", "max_new_tokens=16", "batch_size=3", "progress=false"]


@pytest.fixture(scope="module")
def replay_home(tmp_path_factory):
    """One TUNESMITH_HOME for this module, so the pipeline test reuses the answers the first test
    generated (the cache is keyed by model, prompts and length, so sharing cannot mix them up)."""
    return tmp_path_factory.mktemp("replay-home")


def _rows(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_rows_are_the_kept_answers_once_and_a_rerun_hits_the_cache(embedded_dir, replay_home, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.setenv("TUNESMITH_HOME", str(replay_home))
    out = tmp_path / "replay.jsonl"
    assert main(["synth", "replay", f"model={embedded_dir}", f"out={out}", *SMALL]) == 0
    said = capsys.readouterr().out.strip().splitlines()
    m = json.loads((tmp_path / "replay.manifest.json").read_text())
    assert m["kind"] == "synth replay" and m["status"] == "done" and m["prompts"] == 3
    assert m["kept"] > 0 and m["kept"] + m["dropped"] == 3
    rows = _rows(out)
    assert len(rows) == m["rows"] == m["kept"]
    assert len({json.dumps(r, sort_keys=True) for r in rows}) == len(rows)  # no repeats: ratio weighs them
    for r in rows:
        user, answer = r["messages"]
        assert user["role"] == "user" and answer["role"] == "assistant"
        assert answer["content"].rstrip()[-1] in ".!?。！？"  # never ends mid-sentence
    assert said[-2].startswith(f"replay: 3 prompts, {m['kept']} kept, ") and m["cache"] in said[-2]
    assert said[-1] == f"wrote {len(rows)} rows to {out}"
    cache = replay_home / "replay"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cache.iterdir()}

    # Same model, prompts and length: nothing is generated again; its own earlier output is replaced.
    out.unlink()
    assert main(["synth", "replay", f"model={embedded_dir}", f"out={out}", *SMALL]) == 0
    assert "all 3 rows already answered" in capsys.readouterr().out
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cache.iterdir()} == before
    assert _rows(out) == rows


def test_pipeline_stage_feeds_a_train_stage(embedded_dir, replay_home, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_HOME", str(replay_home))
    root = tmp_path / "p"
    recipe = tmp_path / "p.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(embedded_dir), "output_dir": str(root), "stages": [
        {"stage": "general", "job": "synth_replay", "languages": ["en"], "prompts": 3, "max_new_tokens": 16,
         "batch_size": 3, "progress": False},
        {"stage": "tune", "job": "train", "data": {"datasets": [{"path": str(root / "1-general" / "data.jsonl"),
                                                                 "ratio": 2}], "cutoff_len": 64},
         "lora": {"r": 2, "alpha": 4}, "train": {"max_steps": 1, "batch_size": 2}, "progress": False},
    ]}))
    assert main(["pipeline", str(recipe)]) == 0
    made = json.loads((root / "1-general" / "manifest.json").read_text())
    assert made["kind"] == "synth replay" and made["rows"] == made["kept"] > 0
    trained = json.loads((root / "2-tune" / "manifest.json").read_text())
    assert trained["status"] == "done" and trained["datasets"][0]["rows"] == made["rows"]
    assert trained["datasets"][0]["rows_used"] == 2 * made["rows"]  # the train stage's ratio weighs the replay
    assert (root / "2-tune" / "adapter_model.safetensors").is_file()
    m = json.loads((root / "manifest.json").read_text())
    assert [s["kind"] for s in m["stages"]] == ["synth_replay", "train"]
    assert m["stages"][0]["model_in"] == str(embedded_dir)


def test_user_mistakes_are_one_line_and_write_nothing(embedded_dir, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("TUNESMITH_HOME", str(home))
    # An unknown model, through the real command line: one line, no traceback, no file, no cache.
    r = subprocess.run([sys.executable, "-m", "tunesmith", "synth", "replay", "--model", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "r.jsonl")], capture_output=True, text=True)
    assert r.returncode != 0 and "not found" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "r.jsonl").exists() and not (home / "replay").exists()

    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    foreign = tmp_path / "mine.jsonl"
    foreign.write_text("keep me\n")
    for args, code, needle in (([f"out={a_file}/r.jsonl"], 1, "is a file, not a folder"),
                               ([f"out={foreign}"], 1, "was not written by tunesmith"),
                               ([f"out={tmp_path / 'r.jsonl'}", "prompts=0"], 2, "prompts"),
                               ([f"out={tmp_path / 'r.jsonl'}", "languages=fr"], 2, "languages.0")):
        assert main(["synth", "replay", f"model={embedded_dir}", *SMALL, *args]) == code, args
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert a_file.read_text() == "mine\n" and foreign.read_text() == "keep me\n"
    assert not (tmp_path / "r.jsonl").exists() and not (home / "replay").exists()
