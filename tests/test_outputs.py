"""The one output policy (``tunesmith.outputs``), checked on every verb of the registry that writes.

Each writing verb runs (in process, through ``tunesmith.cli.main``) against three outputs it must
refuse before any model or teacher is touched: an existing file a user wrote, its own input, and
a folder holding a user's file. A verb added to the registry without an entry in ``ARGV`` fails
``test_every_writing_verb_has_a_case``; one with an output field but no ``writes`` declaration fails
``test_verbs_with_an_output_field_declare_it``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tunesmith import outputs
from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.registry import VERBS, Verb

OUT = "{out}"
# Per verb: argv with {out} for the output, and the input path a case may name as the output.
ARGV: dict[str, tuple[list[str], str | None]] = {
    "predict": (["predict", "--model", "m", "--input", "in.jsonl", "--output", OUT], "in.jsonl"),
    "data convert": (["data", "convert", "in.jsonl", "--to", "messages", OUT], "in.jsonl"),
    "data stats": (["data", "stats", "in.jsonl", "--model", "m", "--out", OUT], "in.jsonl"),
    "train": (["train", "--model", "m", "--data.path", "in.jsonl", "--output_dir", OUT], "m"),
    "identity": (["identity", "--model", "m", "--name", "Ada", "--author", "Lab", "--output_dir", OUT], "m"),
    "eval identity": (["eval", "identity", "--model", "m", "--name", "Ada", "--author", "Lab", "--out", OUT], "m"),
    "eval probes": (["eval", "probes", "--model", "m", "--probes", "in.jsonl", "--out", OUT], "in.jsonl"),
    "eval tasks": (["eval", "tasks", "--model", "m", "--tasks", "in.jsonl", "--out", OUT], "in.jsonl"),
    "eval lm-eval": (["eval", "lm-eval", "--model", "m", "--tasks", "x", "--out", OUT], "m"),
    "pipeline": (["pipeline", "--model", "m", "--stages", '[{"job": "train"}]', "--output_dir", OUT], "m"),
    "export merge": (["export", "merge", "--model", "m", "--adapter", "m", "--out", OUT], "m"),
    "export gguf": (["export", "gguf", "--model", "m", "--out", OUT], "m"),
    "convert-recipe": (["convert-recipe", "lf.yaml", "--out", OUT], "lf.yaml"),
    "synth distill": (["synth", "distill", "--prompts", "in.jsonl", "--out", OUT], "in.jsonl"),
    "synth style": (["synth", "style", "--corpus", "in.jsonl", "--out", OUT], "in.jsonl"),
    "synth judge": (["synth", "judge", "--input", "in.jsonl", "--out", OUT], "in.jsonl"),
    "synth chunks": (["synth", "chunks", "--text", "novel.txt", "--out", OUT], "novel.txt"),
    "synth task": (["synth", "task", "multiply", "--n", "4", "--out", OUT], None),
    "synth preference": (["synth", "preference", "--model", "m", "--name", "Ada", "--author", "Lab",
                          "--out", OUT], "m"),
    "synth replay": (["synth", "replay", "--model", "m", "--out", OUT], "m"),
}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text('{"instruction": "hi", "output": "yo", "prompt": "hi", "expect": "yo"}\n')
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "novel.txt").write_text("It was a dark night. The end.\n")
    (tmp_path / "lf.yaml").write_text("model_name_or_path: m\nstage: sft\nfinetuning_type: lora\n")
    (tmp_path / "notes.jsonl").write_text("my own notes\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.jsonl").write_text("my own data\n")
    return tmp_path


def _run(argv: list[str], out: str, capsys) -> tuple[int, list[str]]:
    code = main([a.replace(OUT, out) for a in argv])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return code, err


def test_every_writing_verb_has_a_case():
    assert {v.name for v in VERBS if v.writes} == set(ARGV)


def test_verbs_with_an_output_field_declare_it():
    assert _undeclared(VERBS) == []


def _undeclared(verbs: list[Verb]) -> list[str]:
    out_like = {"out", "output", "output_dir"}
    return [v.name for v in verbs if out_like & set(v.load_schema().model_fields) and not v.writes]


def test_the_declaration_check_can_fail():
    rogue = Verb("synth rogue", "tunesmith.synth.distill:distill", "tunesmith.synth.distill:DistillConfig", "x")
    assert _undeclared([rogue]) == ["synth rogue"]


CASES = [("foreign-file", "notes.jsonl"), ("same-as-input", None), ("foreign-folder", "mine")]


@pytest.mark.parametrize("verb", sorted(ARGV))
@pytest.mark.parametrize("case,out", CASES, ids=[c[0] for c in CASES])
def test_policy_refuses_before_any_work(verb, case, out, workdir, capsys):
    argv, same = ARGV[verb]
    if case == "same-as-input":
        if same is None:
            assert next(v for v in VERBS if v.name == verb).reads in ((), ("check",))
            return
        out = same
    before = _snapshot(workdir)
    code, err = _run(argv, out, capsys)
    assert code != 0
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert out in err[0], err
    assert _snapshot(workdir) == before


# ------------------------------------------------------------------------ the policy, unit by unit

def test_ours_is_replaced_only_with_overwrite_and_only_while_unchanged(workdir, capsys):
    argv = ["data", "convert", "in.jsonl", "--to", "messages", "o.jsonl"]
    assert main(argv) == 0
    assert outputs.owner(workdir / "o.jsonl") == ("data convert", "")
    code, err = _run(argv, "", capsys)
    assert code != 0 and "--overwrite" in err[-1]
    assert main(argv + ["--overwrite"]) == 0
    (workdir / "o.jsonl").write_text((workdir / "o.jsonl").read_text() + "my edit\n")  # now the user's
    assert outputs.owner(workdir / "o.jsonl")[1] == "was changed after tunesmith wrote it"
    code, err = _run(argv + ["--overwrite"], "", capsys)
    assert code != 0 and "changed after tunesmith wrote it" in err[-1]
    assert (workdir / "o.jsonl").read_text().endswith("my edit\n")


def test_default_output_names_obey_the_policy(workdir, capsys):
    (workdir / "in_lengths.png").write_bytes(b"my plot")
    code, err = _run(["data", "stats", "in.jsonl", "--model", "m"], "", capsys)
    assert code != 0 and "in_lengths.png was not written by tunesmith" in err[-1]
    assert (workdir / "in_lengths.png").read_bytes() == b"my plot"


def _cfg(**kw):
    from types import SimpleNamespace

    return SimpleNamespace(**kw)


def test_plan_rules(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "data.jsonl").write_text("{}\n")
    out = outputs.Output("out", "auto")
    cfg = _cfg(out=str(tmp_path / "model" / "merged"), model=str(tmp_path / "model"))
    with pytest.raises(UserError, match="inside the input folder"):
        outputs.plan("v", (out,), ("model",), cfg)
    cfg = _cfg(out=str(tmp_path), data=str(tmp_path / "data.jsonl"))
    with pytest.raises(UserError, match="holds the input"):
        outputs.plan("v", (outputs.Output("out", "dir"),), ("data",), cfg)
    (tmp_path / "empty").mkdir()  # an empty folder holds nothing to protect
    assert outputs.plan("v", (out,), (), _cfg(out=str(tmp_path / "empty")))[0].kind == "dir"
    assert outputs.plan("v", (out,), (), _cfg(out=None)) == []


def test_marker_recorded_by_the_writer_only_inside_a_claim(tmp_path):
    from tunesmith.fsutil import save_into, write_atomic

    write_atomic(tmp_path / "free.jsonl", "x")  # no claim: nothing recorded
    assert not outputs.file_marker(tmp_path / "free.jsonl").exists()
    cfg = _cfg(out=str(tmp_path / "run"), f=str(tmp_path / "a.jsonl"))
    claims = outputs.plan("train", (outputs.Output("out", "dir"), outputs.Output("f", "file")), (), cfg)
    with outputs.claimed(claims):
        save_into(tmp_path / "run", lambda d: (d / "w.bin").write_bytes(b"1"))
        write_atomic(tmp_path / "a.jsonl", "rows\n")
    assert json.loads((tmp_path / "run" / outputs.FOLDER_MARKER).read_text())["verb"] == "train"
    mark = json.loads(outputs.file_marker(tmp_path / "a.jsonl").read_text())
    assert mark["sha256"] == hashlib.sha256(b"rows\n").hexdigest()
    assert outputs.owner(tmp_path / "run") == ("train", "")


def test_a_failed_run_leaves_no_marker_where_nothing_was_written(tmp_path):
    cfg = _cfg(out=str(tmp_path / "o.jsonl"))
    claims = outputs.plan("v", (outputs.Output("out", "file"),), (), cfg)
    with pytest.raises(UserError):
        with outputs.claimed(claims):
            raise UserError("bad row")
    assert sorted(os.listdir(tmp_path)) == []


def test_an_appended_output_is_ours_while_it_grows(tmp_path):
    from tunesmith.fsutil import will_append

    p = tmp_path / "answers.jsonl"
    claims = outputs.plan("predict", (outputs.Output("out", "file", resumes=True),), (), _cfg(out=str(p)))
    with pytest.raises(KeyboardInterrupt):  # killed mid-run: the marker says "being appended"
        with outputs.claimed(claims):
            will_append(p)
            p.write_text('{"id": 1}\n')
            raise KeyboardInterrupt
    assert outputs.owner(p) == ("predict", "")
    claims = outputs.plan("predict", (outputs.Output("out", "file", resumes=True),), (), _cfg(out=str(p)))
    with outputs.claimed(claims):
        will_append(p)
        with p.open("a") as f:
            f.write('{"id": 2}\n')
    assert json.loads(outputs.file_marker(p).read_text())["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()


def test_older_run_folders_count_as_ours(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"tunesmith_version": "0.1", "kind": "sft"}))
    assert outputs.owner(tmp_path / "run") == ("sft", "")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "manifest.json").write_text("{}")
    assert outputs.owner(tmp_path / "theirs")[0] is None


def test_neighbours_of_a_file_output_are_claimed(tmp_path):
    (tmp_path / "o.errors.jsonl").write_text("the user's\n")
    claims = outputs.plan("synth distill", (outputs.Output("out"),), (), _cfg(out=str(tmp_path / "o.jsonl")))
    with outputs.claimed(claims):
        with pytest.raises(UserError, match="o.errors.jsonl was not written by tunesmith"):
            outputs.claim_beside([tmp_path / "o.errors.jsonl"])
