"""Stacked stages: train → merge → train on the merge → merge, with lineage and resume."""
import json
from pathlib import Path

import pytest
import yaml

from tunesmith.cli import main


def test_pipeline_chains_stages_and_records_lineage(tiny_model, tmp_path, capsys):
    data = tmp_path / "skill.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"What is code {i}?", "output": f"Code {i} is ready."}) + "\n"
                            for i in range(8)))
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"prompt": "What is code 1?", "expect": "ready"}) + "\n")
    stage_train = {"data": {"datasets": [{"path": str(data)}], "cutoff_len": 64},
                   "lora": {"r": 4, "alpha": 8}, "train": {"max_steps": 3, "batch_size": 4}, "progress": False}
    recipe = tmp_path / "p.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(tiny_model), "output_dir": str(tmp_path / "p"), "stages": [
        {"name": "one", "train": stage_train, "probes": str(probes)},
        {"name": "one-merged", "merge": {"dtype": "fp32"}},
        {"name": "two", "train": stage_train},
        {"name": "final", "merge": {"dtype": "fp32"}},
    ]}))
    assert main(["pipeline", str(recipe)]) == 0
    root = tmp_path / "p"
    m = json.loads((root / "manifest.json").read_text())
    assert [s["stage"] for s in m["stages"]] == ["one", "one-merged", "two", "final"]
    # stage two trained on the merged output of stage one; the final merge folds two into it
    assert m["stages"][2]["model_in"] == str(root / "2-one-merged")
    two = json.loads((root / "3-two" / "manifest.json").read_text())
    assert two["base_model"]["path"] == str((root / "2-one-merged").resolve()) and two["parent"]
    final = json.loads((root / "4-final" / "manifest.json").read_text())
    assert final["kind"] == "merge" and final["base_model"]["path"] == str((root / "2-one-merged").resolve())
    assert m["final_model"] == str((root / "4-final").resolve()) and m["final_adapter"] is None
    assert [p["on"] for p in m["probes"]] == ["eval"] and m["final_probes"][0]["stage"] == "one"
    # plain transformers loads the final model
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(root / "4-final")
    # a rerun skips the finished stages
    capsys.readouterr()
    assert main(["pipeline", str(recipe)]) == 0
    assert "resuming" not in capsys.readouterr().out


def test_an_adapter_after_the_last_merge_is_named_not_lost(tiny_model, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(4)))
    recipe = tmp_path / "p.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(tiny_model), "output_dir": str(tmp_path / "p"), "stages": [
        {"name": "one", "train": {"data": {"datasets": [{"path": str(data)}], "cutoff_len": 64},
                                  "train": {"max_steps": 1, "batch_size": 4}, "progress": False}}]}))
    assert main(["pipeline", str(recipe)]) == 0
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert m["final_model"] == str(Path(tiny_model).resolve())  # no merge: the base
    assert m["final_adapter"] == str((tmp_path / "p" / "1-one").resolve())
    assert "not merged" in capsys.readouterr().out.splitlines()[-1]


def test_pipeline_typo_in_a_later_stage_fails_before_training(tiny_model, tmp_path, capsys):
    recipe = tmp_path / "p.yaml"
    (tmp_path / "x.jsonl").write_text(json.dumps({"instruction": "hi", "output": "yo"}) + "\n")
    recipe.write_text(yaml.safe_dump({"model": str(tiny_model), "output_dir": str(tmp_path / "p"), "stages": [
        {"name": "one", "train": {"data": {"datasets": [{"path": str(tmp_path / "x.jsonl")}]}}},
        {"name": "two", "merge": {"dtyp": "fp32"}},
    ]}))
    assert main(["pipeline", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "'dtyp'" in err and "stage 2 'two'" in err and "did you mean 'dtype'" in err
    assert not (tmp_path / "p").exists()


# Toy verbs, registered here: the pipeline runs them as stages with no edit to the pipeline.
from pydantic import Field  # noqa: E402

from tunesmith.config import Section  # noqa: E402
from tunesmith.outputs import Output  # noqa: E402


class ToyConfig(Section):
    model: str = Field(..., description="the model it is given")
    output_dir: str = Field(..., description="its folder")
    word: str = Field(..., description="what it writes")
    source: str | None = Field(None, description="a file it reads")


def toy(cfg: ToyConfig) -> int:
    from pathlib import Path

    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    seen = {"model": cfg.model, "word": cfg.word}
    if cfg.source:
        seen.update(source=cfg.source, read=Path(cfg.source.split(":")[0]).read_text())  # FILE or FILE:KIND
    (out / "seen.json").write_text(json.dumps(seen))
    (out / "data.jsonl").write_text(json.dumps({"word": cfg.word}) + "\n")
    return 0


def _register_toys(monkeypatch):
    from tunesmith import registry

    monkeypatch.setattr(registry, "VERBS", list(registry.VERBS))  # the registrations end with the test
    out = (Output("output_dir", "dir"),)
    registry.register(registry.Verb("toy", f"{__name__}:toy", f"{__name__}:ToyConfig", "a toy",
                                    consumes=("model",), produces=("merged",), writes=out))
    registry.register(registry.Verb("toy data", f"{__name__}:toy", f"{__name__}:ToyConfig", "a toy that makes rows",
                                    consumes=("model",), produces=("dataset",), writes=out, reads=("source",)))
    registry.register(registry.Verb("toy look", f"{__name__}:toy", f"{__name__}:ToyConfig", "a toy that looks",
                                    consumes=("model",), produces=("report",), writes=out, reads=("source",)))


def test_a_registered_toy_verb_is_a_stage_kind(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _register_toys(monkeypatch)
    recipe = tmp_path / "p.yaml"
    recipe.write_text(yaml.safe_dump({"model": "base-model", "output_dir": str(tmp_path / "p"), "stages": [
        {"stage": "make", "job": "toy", "word": "one"},
        {"stage": "look", "job": "toy_look", "word": "two"},
    ]}))
    assert main(["pipeline", str(recipe)]) == 0
    first = json.loads((tmp_path / "p" / "1-make" / "seen.json").read_text())
    second = json.loads((tmp_path / "p" / "2-look" / "seen.json").read_text())
    assert first == {"model": "base-model", "word": "one"}
    assert second == {"model": str(tmp_path / "p" / "1-make"), "word": "two"}  # what stage 1 produced
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert [s["kind"] for s in m["stages"]] == ["toy", "toy_look"]
    assert m["final_model"] == str((tmp_path / "p" / "1-make").resolve())
    # the toy's own schema validates its stage: a typo is one line naming the stage, before any stage runs
    recipe.write_text(yaml.safe_dump({"model": "m", "output_dir": str(tmp_path / "q"), "stages": [
        {"stage": "make", "job": "toy", "word": "one"}, {"stage": "bad", "job": "toy", "wrod": "x"}]}))
    assert main(["pipeline", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "stage 2 'bad'" in err and "did you mean 'word'" in err and not (tmp_path / "q" / "1-make").exists()
    recipe.write_text(yaml.safe_dump({"model": "m", "stages": [{"stage": "x", "job": "nope"}]}))
    assert main(["pipeline", str(recipe)]) == 1
    assert "job 'nope' is not a verb (choose from" in capsys.readouterr().err


def test_a_later_stage_reads_an_earlier_stages_output_by_reference(tmp_path, monkeypatch):
    """``$rows.dataset`` is the data.jsonl of the stage labelled rows, wherever output_dir is and
    whatever its number; a suffix after the reference (``FILE:KIND``) is kept."""
    monkeypatch.chdir(tmp_path)
    _register_toys(monkeypatch)
    for out in ("p", "elsewhere/q"):
        recipe = tmp_path / "p.yaml"
        recipe.write_text(yaml.safe_dump({"model": "base", "output_dir": out, "stages": [
            {"stage": "first", "job": "toy_data", "word": "zero"},
            {"stage": "rows", "job": "toy_data", "word": "one"},
            {"stage": "look", "job": "toy_look", "word": "two", "source": "$rows.dataset"},
            {"stage": "kind", "job": "toy_look", "word": "three", "source": "$first.dataset:label"},
        ]}))
        assert main(["pipeline", str(recipe)]) == 0
        seen = json.loads((tmp_path / out / "3-look" / "seen.json").read_text())
        assert seen["source"] == f"{out}/2-rows/data.jsonl" and json.loads(seen["read"]) == {"word": "one"}
        seen = json.loads((tmp_path / out / "4-kind" / "seen.json").read_text())
        assert seen["source"] == f"{out}/1-first/data.jsonl:label" and json.loads(seen["read"]) == {"word": "zero"}


def test_a_missing_input_in_stage_3_fails_before_stage_1_writes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _register_toys(monkeypatch)
    recipe = tmp_path / "p.yaml"
    stages = [{"stage": "rows", "job": "toy_data", "word": "one"},
              {"stage": "look", "job": "toy_look", "word": "two", "source": "$rows.dataset"},
              {"stage": "late", "job": "toy_look", "word": "three", "source": "data/missing.jsonl"}]
    recipe.write_text(yaml.safe_dump({"model": "m", "output_dir": "p", "stages": stages}))
    assert main(["pipeline", str(recipe)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: stage 3 'late': source: data/missing.jsonl not found (resolved from the current folder "
                   f"{tmp_path}), and no earlier stage writes it")
    assert not (tmp_path / "p").exists()
    # a stage's probes file too, and an old-style path into a stage that runs later
    stages[2] = {"stage": "late", "job": "toy_look", "word": "three", "probes": "probes.jsonl"}
    recipe.write_text(yaml.safe_dump({"model": "m", "output_dir": "p", "stages": stages}))
    assert main(["pipeline", str(recipe)]) == 1
    assert "stage 3 'late': probes: probes.jsonl not found" in capsys.readouterr().err
    stages[1]["source"] = "p/3-late/data.jsonl"
    stages[2] = {"stage": "late", "job": "toy_data", "word": "three"}
    recipe.write_text(yaml.safe_dump({"model": "m", "output_dir": "p", "stages": stages}))
    assert main(["pipeline", str(recipe)]) == 1
    assert "stage 2 'look': source: p/3-late/data.jsonl not found" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("source, message", [
    ("$nope.dataset", "stage 2 'look': source: $nope.dataset: no stage is named 'nope' (earlier stages: rows)"),
    ("$later.dataset", "stage 2 'look': source: $later.dataset: stage 3 'later' runs after this one: a stage can "
                       "only use what an earlier stage produced"),
    ("$look.dataset", "stage 2 'look': source: $look.dataset: stage 2 'look' is this stage itself"),
    ("$rows.adapter", "stage 2 'look': source: $rows.adapter: stage 1 'rows' (toy data) produces dataset, "
                      "not adapter"),
    ("$rows.data", "stage 2 'look': source: $rows.data: 'data' is not an output: write $STAGE.OUTPUT, OUTPUT one "
                   "of adapter, merged, dataset, gguf, report"),
])
def test_a_bad_reference_is_one_line_at_load_time(tmp_path, monkeypatch, capsys, source, message):
    monkeypatch.chdir(tmp_path)
    _register_toys(monkeypatch)
    recipe = tmp_path / "p.yaml"
    recipe.write_text(yaml.safe_dump({"model": "m", "output_dir": "p", "stages": [
        {"stage": "rows", "job": "toy_data", "word": "one"},
        {"stage": "look", "job": "toy_look", "word": "two", "source": source},
        {"stage": "later", "job": "toy_data", "word": "three"}]}))
    assert main(["pipeline", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "p").exists()


def _strings(x):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


def test_every_shipped_pipeline_recipe_validates_and_hands_off_to_earlier_stages(monkeypatch):
    """Each recipes/*.yaml with stages: every stage's config is valid for its verb, every input
    file exists or is an earlier stage's output, no stage names another stage's folder (a renumbered
    stage or another output_dir would otherwise fail hours into a run): hand-offs are references,
    and each resolves to the data.jsonl of an earlier stage that produces a dataset (or to the folder of
    an earlier stage's folder output, such as export gguf's)."""
    from pathlib import Path

    from tunesmith.config import build_config
    from tunesmith.jobs.pipeline import PipelineConfig, plan

    repo = Path(__file__).parents[2]
    monkeypatch.chdir(repo)  # recipes name recipes/data/… from the checkout's root
    recipes = [p for p in sorted((repo / "recipes").glob("*.yaml")) if "stages" in yaml.safe_load(p.read_text())]
    assert {"multiply-cot.yaml", "intent-routing.yaml", "reasoning-distill.yaml"} <= {p.name for p in recipes}
    refs = 0
    for path in recipes:
        cfg = build_config(PipelineConfig, [str(path)])
        written = yaml.safe_load(path.read_text())["stages"]
        assert not [s for st in written for s in _strings(st) if "runs/" in s], f"{path.name}: a stage folder path"
        root = cfg.output_dir.rstrip("/")
        for p in plan(cfg, Path(root)):
            raw = list(_strings(written[p.index]))
            for s in _strings(p.stage.config):
                if s.startswith(root + "/"):
                    refs += 1
                    src = s[len(root) + 1:].split("/")[0]
                    n = int(src.split("-")[0])
                    # a dataset's data.jsonl, or the folder of a folder output ($gguf.gguf, $eval.report)
                    assert n <= p.index and (s.startswith(f"{root}/{src}/data.jsonl") or s == f"{root}/{src}"), \
                        f"{path.name}: {s}"
                    assert any(r.startswith("$") for r in raw), f"{path.name}: {s} is not written as a reference"
    assert refs >= 8
