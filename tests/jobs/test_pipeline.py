"""Stacked stages: train → merge → train on the merge → merge, with lineage and resume."""
import json

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
    assert m["final_model"] == str((root / "4-final").resolve())
    assert [p["on"] for p in m["probes"]] == ["eval"] and m["final_probes"][0]["stage"] == "one"
    # plain transformers loads the final model
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(root / "4-final")
    # a rerun skips the finished stages
    capsys.readouterr()
    assert main(["pipeline", str(recipe)]) == 0
    assert "resuming" not in capsys.readouterr().out


def test_pipeline_typo_in_a_later_stage_fails_before_training(tiny_model, tmp_path, capsys):
    recipe = tmp_path / "p.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(tiny_model), "output_dir": str(tmp_path / "p"), "stages": [
        {"name": "one", "train": {"data": {"datasets": [{"path": "x.jsonl"}]}}},
        {"name": "two", "merge": {"dtyp": "fp32"}},
    ]}))
    assert main(["pipeline", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "'dtyp'" in err and "stage 2 'two'" in err and "did you mean 'dtype'" in err
    assert not (tmp_path / "p").exists()


# A toy verb, registered here: the pipeline runs it as a stage with no edit to the pipeline.
from pydantic import Field  # noqa: E402

from tunesmith.config import Section  # noqa: E402


class ToyConfig(Section):
    model: str = Field(..., description="the model it is given")
    output_dir: str = Field(..., description="its folder")
    word: str = Field(..., description="what it writes")


def toy(cfg: ToyConfig) -> int:
    from pathlib import Path

    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    (out / "seen.json").write_text(json.dumps({"model": cfg.model, "word": cfg.word}))
    return 0


def test_a_registered_toy_verb_is_a_stage_kind(tmp_path, monkeypatch, capsys):
    from tunesmith import registry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "VERBS", list(registry.VERBS))  # the registration ends with the test
    registry.register(registry.Verb("toy", f"{__name__}:toy", f"{__name__}:ToyConfig", "a toy",
                                    consumes=("model",), produces=("merged",), output_field="output_dir"))
    registry.register(registry.Verb("toy look", f"{__name__}:toy", f"{__name__}:ToyConfig", "a toy that looks",
                                    consumes=("model",), produces=("report",), output_field="output_dir"))
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


def test_every_shipped_pipeline_recipe_validates_and_hands_off_to_earlier_stages():
    """Each recipes/*.yaml with stages: every stage's config is valid for its verb, and every path
    into the recipe's own output_dir names a data.jsonl written by an earlier stage that produces a
    dataset (a renumbered or renamed stage would otherwise fail only hours into a run)."""
    from pathlib import Path

    from tunesmith.config import build_config, validate
    from tunesmith.jobs.pipeline import PipelineConfig, _body
    from tunesmith.registry import by_job

    def strings(x):
        if isinstance(x, str):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from strings(v)
        elif isinstance(x, list):
            for v in x:
                yield from strings(v)

    recipes = [p for p in sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))
               if "stages" in yaml.safe_load(p.read_text())]
    assert {"multiply-cot.yaml", "intent-routing.yaml"} <= {p.name for p in recipes}
    for path in recipes:
        cfg = build_config(PipelineConfig, [str(path)])
        root = cfg.output_dir.rstrip("/")
        made = {}  # folder → the verb that writes a dataset there
        for i, st in enumerate(cfg.stages):
            verb = by_job(st.job)
            folder = f"{root}/{i + 1}-{st.name}"
            validate(verb.load_schema(), _body(verb, st, Path(folder), cfg.model, ("m", "a")), f" ({path.name})")
            for s in strings(st.config):
                if s.startswith(root + "/") and not s.startswith(folder):
                    src = s[len(root) + 1:].split("/")[0]
                    assert f"{root}/{src}" in made, f"{path.name} stage {st.name}: {s} is no earlier stage's data"
                    if "answers" not in s:
                        assert s == f"{root}/{src}/data.jsonl", f"{path.name}: {s}"
            if "dataset" in verb.produces:
                made[folder] = verb.name
