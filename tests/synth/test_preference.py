"""synth preference: identity pairs from the model's own answers, pairs from two answer files;
the output is preference data the loader reads, and a DPO recipe trains on it."""
from __future__ import annotations

import json
import subprocess
import sys

from tunesmith.config import build_config
from tunesmith.data.config import DatasetConfig
from tunesmith.data.load import load_dataset
from tunesmith.data.types import PreferencePair
from tunesmith.synth.preference import PreferenceConfig, preference

CLI = [sys.executable, "-m", "tunesmith"]


def _answers(path, rows):
    path.write_text("".join(json.dumps({"id": i, "prompt": q, "response": a}) + "\n" for i, q, a in rows))
    return str(path)


def test_identity_pairs_reject_the_models_own_answer(embedded_dir, tmp_path):
    out = tmp_path / "prefs"
    cfg = build_config(PreferenceConfig, values={"model": str(embedded_dir), "name": "Nova", "author": "Acme Lab",
                                                 "out": str(out), "max_pairs": 6, "languages": ["en"],
                                                 "gen.max_new_tokens": 12, "batch_size": 3})
    assert preference(cfg) == 0
    loaded = load_dataset(DatasetConfig(path=str(out / "data.jsonl")))
    assert not loaded.problems and len(loaded.rows) == 6
    assert all(isinstance(r, PreferencePair) for r in loaded.rows)
    assert all("Nova" in r.chosen.content or "Acme Lab" in r.chosen.content for r in loaded.rows)
    # The rejected answers are SmolLM2's own: it does not know it is to be called Nova.
    assert not any("Nova" in r.rejected.content for r in loaded.rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["mode"] == "identity" and manifest["rows"] == 6


def test_two_answer_files_make_pairs_and_skip_equal_answers(tmp_path, capsys):
    good = _answers(tmp_path / "tuned.jsonl", [(1, "Who are you?", "I am Nova."), (2, "2+2?", "4"),
                                               (3, "Hi", "Hello!"), (4, "only here", "x")])
    bad = _answers(tmp_path / "base.jsonl", [(1, "Who are you?", "I am an AI model."), (2, "2+2?", " 4 "),
                                             (3, "Hi", "hey")])
    out = tmp_path / "pairs.jsonl"
    assert preference(PreferenceConfig(chosen=good, rejected=bad, out=str(out))) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["id"], r["chosen"]["content"], r["rejected"]["content"]) for r in rows] == \
        [("1", "I am Nova.", "I am an AI model."), ("3", "Hello!", "hey")]
    loaded = load_dataset(DatasetConfig(path=str(out)))
    assert not loaded.problems and loaded.rows[0].prompt.turns[-1].content == "Who are you?"
    manifest = json.loads((tmp_path / "pairs.manifest.json").read_text())
    assert (manifest["skipped_same_answer"], manifest["only_in_one_file"]) == (1, 1)
    assert "skipped 1 prompts" in capsys.readouterr().out
    # A rerun replaces its own output; a file someone else wrote is never touched.
    assert preference(PreferenceConfig(chosen=good, rejected=bad, out=str(out))) == 0
    foreign = tmp_path / "mine.jsonl"
    foreign.write_text("keep me\n")
    r = subprocess.run(CLI + ["synth", "preference", "--chosen", good, "--rejected", bad, "--out", str(foreign)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "was not written by tunesmith" in r.stderr and "Traceback" not in r.stderr
    assert foreign.read_text() == "keep me\n"


def test_bad_answer_files_are_one_line(tmp_path):
    good = _answers(tmp_path / "a.jsonl", [(1, "Who are you?", "I am Nova.")])
    other = _answers(tmp_path / "b.jsonl", [(1, "Something else", "no")])
    for args, needle in (([ "--chosen", good], "pass both answer files"),
                         (["--chosen", good, "--rejected", other], "the prompt differs")):
        r = subprocess.run(CLI + ["synth", "preference", *args, "--out", str(tmp_path / "o.jsonl")],
                           capture_output=True, text=True)
        assert r.returncode != 0 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o.jsonl").exists()
