"""LLaMA-Factory YAMLs run as they are; ms-swift's self-cognition flags work on `tunesmith identity`."""
import json
from pathlib import Path

import pytest
import yaml

from tunesmith import cli
from tunesmith.config import build_config, validate
from tunesmith.compat.lf import TABLES, translate
from tunesmith.compat.swift import swift_argv

ALPACA = [{"instruction": f"Say the word number {i}.", "input": "", "output": f"Word {i} is {w}."}
          for i, w in enumerate("amber birch cedar delta ember fjord grove harbor".split())]
IDENTITY = [{"instruction": "Who are you?", "input": "", "output": "I am {{name}}, made by {{author}}."},
            {"instruction": "What is your name?", "input": "", "output": "My name is {{name}}."},
            {"instruction": "Who made you?", "input": "", "output": "{{author}} made me."}]


def lf_folder(root: Path) -> Path:
    """A LLaMA-Factory style data folder: dataset_info.json, an alpaca file with duplicate rows
    (as LLaMA-Factory's own alpaca demo has) and identity rows with unfilled placeholders."""
    d = root / "lfdata"
    d.mkdir()
    (d / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"},
                                                     "alpaca_demo": {"file_name": "alpaca_demo.json"}}))
    (d / "identity.json").write_text(json.dumps(IDENTITY, ensure_ascii=False))
    (d / "alpaca_demo.json").write_text(json.dumps(ALPACA[:2] + ALPACA[:2] + ALPACA))  # rows 3-4 duplicate 1-2
    return d


def lf_train_yaml(root: Path, model, **over) -> Path:
    cfg = {"model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
           "lora_rank": 4, "lora_target": "all", "dataset": "identity,alpaca_demo", "dataset_dir": "lfdata",
           "template": "llama3", "cutoff_len": 64, "max_samples": 6, "overwrite_cache": True,
           "preprocessing_num_workers": 1, "output_dir": "saves/tiny/lora/sft", "logging_steps": 1, "save_steps": 500,
           "plot_loss": True, "overwrite_output_dir": True, "per_device_train_batch_size": 2,
           "gradient_accumulation_steps": 1, "learning_rate": 1.0e-3, "max_steps": 2, "lr_scheduler_type": "cosine",
           "warmup_ratio": 0.1, "ddp_timeout": 180000000, "report_to": "wandb",
           "deepspeed": "examples/deepspeed/ds_z3_config.json", **over}
    f = root / "lf_sft.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return f


def test_lf_sft_yaml_trains_then_chats_and_merges(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # dataset_dir is relative to the current folder, as in LLaMA-Factory
    lf_folder(tmp_path)
    f = lf_train_yaml(tmp_path, tiny_model)
    assert cli.main(["train", f.name, "progress=false", "device=cpu", "train.lr=2e-3"]) == 0
    out = capsys.readouterr().out
    unmapped = out.split("# no equivalent in tunesmith:")[1].split("\nmodel:")[0]
    for key in ("deepspeed", "report_to", "plot_loss", "overwrite_output_dir", "ddp_timeout", "template"):
        assert f"#   {key} (" in unmapped, key
    run = tmp_path / "saves/tiny/lora/sft"
    for name in ("adapter_model.safetensors", "adapter_config.json", "lf_translation.yaml", "lf_original.yaml"):
        assert (run / name).is_file(), name
    assert (run / "lf_original.yaml").read_bytes() == f.read_bytes()
    translated = yaml.safe_load((run / "lf_translation.yaml").read_text())
    from tunesmith.train.config import TrainConfig

    validate(TrainConfig, translated)  # the saved translation is itself a valid recipe
    assert translated["data"]["datasets"] == [{"dataset_info": "lfdata", "name": "identity", "max_samples": 6},
                                              {"dataset_info": "lfdata", "name": "alpaca_demo", "max_samples": 6}]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["lora"]["r"] == 4 and cfg["lora"]["alpha"] == 8 and cfg["lora"]["target_modules"] == ["all-linear"]
    assert cfg["train"]["lr"] == 2e-3 and cfg["train"]["max_steps"] == 2 and cfg["train"]["warmup"] == 0.1
    manifest = json.loads((run / "manifest.json").read_text())
    rows = {d["name"]: d["rows"] for d in manifest["datasets"]}
    assert rows == {"identity": 3, "alpaca_demo": 6}  # max_samples: the first 6 of 12 rows
    assert manifest["status"] == "done"

    infer = tmp_path / "lf_infer.yaml"
    infer.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model), "adapter_name_or_path": str(run),
                                     "template": "llama3", "finetuning_type": "lora", "infer_backend": "huggingface"}))
    assert cli.main(["chat", infer.name, "--prompt", "hi", "gen.max_new_tokens=3", "device=cpu"]) == 0
    merge = tmp_path / "lf_merge.yaml"
    merge.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model), "adapter_name_or_path": str(run),
                                     "template": "llama3", "finetuning_type": "lora", "export_dir": "merged",
                                     "export_size": 1, "export_device": "cpu", "export_legacy_format": False}))
    assert cli.main(["export", "merge", merge.name]) == 0
    assert (tmp_path / "merged" / "config.json").is_file() and list((tmp_path / "merged").glob("*.safetensors"))


# LLaMA-Factory's three example kinds (train_lora / merge_lora / inference), as their YAMLs have them.
TRAIN_YAML = {"model_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct", "trust_remote_code": True, "stage": "sft",
              "do_train": True, "finetuning_type": "lora", "lora_rank": 8, "lora_target": "all",
              "dataset": "identity,alpaca_en_demo", "template": "llama3", "cutoff_len": 2048, "max_samples": 1000,
              "overwrite_cache": True, "preprocessing_num_workers": 16, "output_dir": "saves/llama3-8b/lora/sft",
              "logging_steps": 10, "save_steps": 500, "plot_loss": True, "overwrite_output_dir": True,
              "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "learning_rate": 1.0e-4,
              "num_train_epochs": 3.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True,
              "ddp_timeout": 180000000, "val_size": 0.1, "eval_steps": 500}
MERGE_YAML = {"model_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct", "adapter_name_or_path": "saves/a,saves/b",
              "template": "llama3", "trust_remote_code": True, "export_dir": "output/llama3_lora_sft",
              "export_size": 2, "export_device": "cpu", "export_legacy_format": False}
INFER_YAML = {"model_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct", "adapter_name_or_path": "saves/a",
              "template": "llama3", "finetuning_type": "lora", "trust_remote_code": True, "infer_backend": "vllm"}


def convert(tmp_path, capsys, data: dict, *args) -> tuple[int, str, str]:
    f = tmp_path / "lf.yaml"
    f.write_text(yaml.safe_dump(data))
    code = cli.main(["convert-recipe", str(f), *args])
    got = capsys.readouterr()
    return code, got.out, got.err


def test_convert_recipe_maps_the_three_kinds(tmp_path, capsys):
    code, out, _ = convert(tmp_path, capsys, TRAIN_YAML)
    r = yaml.safe_load(out)  # the notes are YAML comments: the printed text is the recipe
    assert code == 0 and "run it with `tunesmith train`" in out
    assert r["model"] == "meta-llama/Meta-Llama-3-8B-Instruct" and r["trust_remote_code"] is True
    assert r["method"] == "lora"
    assert r["lora"] == {"r": 8, "target_modules": ["all-linear"], "dropout": 0.0, "alpha": 16}
    assert r["data"]["datasets"][1] == {"dataset_info": "data", "name": "alpaca_en_demo", "max_samples": 1000}
    assert r["data"]["cutoff_len"] == 2048 and r["data"]["val_size"] == 0.1 and r["data"]["num_workers"] == 16
    assert "template" not in r["data"] and "uses the model's own chat template" in out
    assert r["train"] == {"log_every": 10, "save_every": 500, "batch_size": 1, "grad_accum": 8, "lr": 1e-4,
                          "epochs": 3.0, "scheduler": "cosine", "warmup": 0.1, "eval_every": 500}
    assert r["dtype"] == "bf16"  # the model section's dtype (train.dtype is the deprecated spelling)
    assert r["output_dir"] == "saves/llama3-8b/lora/sft"

    code, out, _ = convert(tmp_path, capsys, MERGE_YAML)
    assert code == 0 and "tunesmith export merge" in out
    assert yaml.safe_load(out) == {"model": "meta-llama/Meta-Llama-3-8B-Instruct", "adapter": ["saves/a", "saves/b"],
                                   "trust_remote_code": True, "out": "output/llama3_lora_sft", "shard_size": "2GB",
                                   "device": "cpu"}
    code, out, _ = convert(tmp_path, capsys, INFER_YAML)
    assert code == 0 and "tunesmith chat" in out and "#   infer_backend (\"vllm\") — " in out
    assert yaml.safe_load(out) == {"model": "meta-llama/Meta-Llama-3-8B-Instruct", "adapter": ["saves/a"],
                                   "trust_remote_code": True}


def test_convert_recipe_out_is_written_whole_and_never_over_a_foreign_file(tmp_path, capsys):
    dest = tmp_path / "recipe.yaml"
    code, out, _ = convert(tmp_path, capsys, TRAIN_YAML, "--out", str(dest))
    assert code == 0 and yaml.safe_load(dest.read_text())["train"]["lr"] == 1e-4
    assert out.endswith(f"# written to {dest}\n")
    code, _, err = convert(tmp_path, capsys, INFER_YAML, "--out", str(dest))  # its own output: only with --overwrite
    assert code != 0 and "--overwrite" in err and "lr: 0.0001" in dest.read_text()
    assert convert(tmp_path, capsys, INFER_YAML, "--out", str(dest), "--overwrite")[0] == 0
    assert "tunesmith chat" in dest.read_text()
    foreign = tmp_path / "mine.yaml"
    foreign.write_text("keep: me\n")
    code, _, err = convert(tmp_path, capsys, TRAIN_YAML, "--out", str(foreign), "--overwrite")
    assert code != 0 and "mine.yaml" in err and foreign.read_text() == "keep: me\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temp file left


@pytest.mark.parametrize("out,needle", [("/proc/recipe.yaml", "cannot write"), (".", "is a folder")])
def test_convert_recipe_refuses_an_unwritable_out_before_any_work(tmp_path, capsys, out, needle):
    code, stdout, err = convert(tmp_path, capsys, TRAIN_YAML, "--out", out)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and needle in lines[0] and stdout == ""
    from tunesmith.compat.recipe import ConvertRecipeConfig, convert_recipe
    from tunesmith.errors import UserError

    with pytest.raises(UserError, match=needle):  # called directly too: --out first, before the YAML is read
        convert_recipe(ConvertRecipeConfig(path=str(tmp_path / "no-such.yaml"), out=out))


def test_defaults_unknown_keys_and_warmup_follow_llamafactory():
    tr = translate({"model_name_or_path": "m", "stage": "sft", "dataset": "a", "my_custom_flag": 3,
                    "warmup_ratio": 0.2, "warmup_steps": 5, "max_steps": -1, "seed": 7}, "x.yaml")
    v = tr.values
    assert v["lora.r"] == 8 and v["lora.alpha"] == 16 and v["lora.dropout"] == 0.0  # LLaMA-Factory's defaults
    assert v["train.lr"] == 5e-5 and v["train.scheduler"] == "linear" and v["train.batch_size"] == 8
    assert v["data.cutoff_len"] == 2048 and v["train.warmup"] == 5  # warmup_steps wins, as in transformers
    assert "train.max_steps" not in v and v["train.seed"] == v["data.seed"] == 7
    assert ("my_custom_flag", 3, "not in tunesmith's LLaMA-Factory table (ignored)") in tr.unmapped
    assert [k for k, _, _ in tr.unmapped] == ["my_custom_flag", "warmup_ratio"]
    assert translate(yaml.safe_load("dataset: a\nlearning_rate: 5e-5\n")).values["train.lr"] == 5e-5  # text in YAML
    full = translate({"model_name_or_path": "m", "dataset": "a", "finetuning_type": "full"}, "x.yaml").values
    assert full["method"] == "full" and not any(k.startswith("lora.") for k in full)


@pytest.mark.parametrize("over,needle", [
    ({"stage": "ppo"}, 'stage: "ppo": PPO is not supported'),
    ({"stage": "kto"}, 'stage: "kto": KTO is not supported'),
    ({"stage": "dpo", "pref_loss": "orpo"}, 'pref_loss: "orpo": must be sigmoid or ipo or simpo'),
    ({"finetuning_type": "freeze"}, 'finetuning_type: "freeze"'),
    ({"lora_target": 5}, "lora_target: 5: must be a comma-separated list"),
    ({"lora_rank": 0}, "lora_rank: 0: must be above 0"),
    ({"do_train": False}, "do_train: false"),
    ({"adapter_name_or_path": "a,b"}, "continues one adapter"),
])
def test_bad_values_are_one_line_config_errors(tiny_model, tmp_path, monkeypatch, capsys, over, needle):
    monkeypatch.chdir(tmp_path)
    f = lf_train_yaml(tmp_path, tiny_model, **over)
    assert cli.main(["train", f.name]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: lf_sft.yaml: ") and needle in err[0], err
    assert not (tmp_path / "saves").exists()


def test_pretraining_stage_reads_its_datasets_as_plain_text():
    v = translate({"model_name_or_path": "m", "stage": "pt", "dataset": "c4_demo,wiki_demo", "dataset_dir": "d",
                   "max_samples": 10}, "pt.yaml").values
    assert v["data.datasets"] == [{"dataset_info": "d", "name": n, "max_samples": 10, "format": "text"}
                                  for n in ("c4_demo", "wiki_demo")]
    sft = translate({"model_name_or_path": "m", "stage": "sft", "dataset": "a"}, "s.yaml").values
    assert "format" not in sft["data.datasets"][0]


def test_a_yaml_of_another_kind_names_the_verb_that_runs_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("m.yaml").write_text(yaml.safe_dump(MERGE_YAML))
    assert cli.main(["train", "m.yaml"]) == 2
    assert "run it with `tunesmith export merge m.yaml`" in capsys.readouterr().err


def test_ms_swift_self_cognition_flags_fill_the_identity_config():
    from tunesmith.jobs.identity import IdentityJobConfig

    argv = swift_argv(["--model_name", "小黄", "Xiao Huang", "--model_author", "魔搭", "ModelScope",
                       "--self_cognition_sample", "500", "train.lr=2e-4"])
    overrides = dict(a.split("=", 1) for a in argv)
    cfg = build_config(IdentityJobConfig, [], overrides)
    n = cfg.names
    assert (n.name_zh, n.name_en, n.author_zh, n.author_en) == ("小黄", "Xiao Huang", "魔搭", "ModelScope")
    assert cfg.identity_samples == 500 and cfg.train.lr == 2e-4
    one = dict(a.split("=", 1) for a in swift_argv(["--model_name=Nova", "--model_author", "Acme"]))
    assert one == {"names.name": "Nova", "names.author": "Acme"}  # one value: every language


def test_identity_verb_reads_ms_swift_flags(tmp_path, capsys):
    # With the names understood, identity gets past its name/author check to the (missing) model.
    code = cli.main(["identity", "--model_name", "小黄", "Xiao Huang", "--model_author", "魔搭", "ModelScope",
                     f"model={tmp_path}/no-such-model", "--self_cognition_sample", "8"])
    err = capsys.readouterr().err
    assert code != 0 and "no-such-model" in err and "name and an author" not in err
    assert cli.main(["identity", "--model_name"]) == 2
    assert "--model_name needs a value" in capsys.readouterr().err


def test_doc_table_matches_the_translation_table():
    from tunesmith.compat.recipe import doc_table

    doc = (Path(__file__).parents[2] / "docs" / "llamafactory.md").read_text(encoding="utf-8")
    assert doc_table() in doc
    assert "## Dataset paths" in doc
    assert set(TABLES["train"]) >= {"deepspeed", "report_to", "max_samples", "dataset_dir", "additional_target"}


def test_dpo_stage_translates_to_a_preference_objective():
    tr = translate({"model_name_or_path": "m", "stage": "dpo", "dataset": "dpo_en_demo", "pref_beta": 0.2,
                    "pref_loss": "simpo", "simpo_gamma": 1.0, "pref_ftx": 0.1, "quantization_bit": 4}, "d.yaml")
    v = tr.values
    assert (v["objective"], v["pref.beta"], v["pref.gamma"], v["pref.sft_weight"], v["method"]) == \
        ("simpo", 0.2, 1.0, 0.1, "qlora")
    assert translate({"model_name_or_path": "m", "stage": "dpo", "dataset": "a"}).values["objective"] == "dpo"
    sft = translate({"model_name_or_path": "m", "stage": "sft", "dataset": "a", "pref_beta": 0.2}, "s.yaml")
    assert "pref.beta" not in sft.values and [k for k, _, _ in sft.unmapped] == ["pref_beta"]


def test_lf_yaml_without_output_dir_trains_into_a_default_run_folder(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    lf_folder(tmp_path)
    f = lf_train_yaml(tmp_path, tiny_model, dataset="alpaca_demo", max_samples=4)
    data = yaml.safe_load(f.read_text())
    del data["output_dir"]
    f.write_text(yaml.safe_dump(data))
    assert cli.main(["train", f.name, "progress=false", "device=cpu"]) == 0, capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()  # runs/<yaml name>-<time>, as for a tunesmith recipe
    assert run.name.startswith("lf_sft-")
    assert json.loads((run / "manifest.json").read_text())["status"] == "done"
    assert (run / "adapter_model.safetensors").is_file() and (run / "lf_original.yaml").read_bytes() == f.read_bytes()
    assert "output_dir" not in yaml.safe_load((run / "lf_translation.yaml").read_text())


@pytest.mark.parametrize("keys,packing,unmapped", [
    ({"packing": True}, True, []),
    ({"packing": False}, False, []),
    ({"neat_packing": True}, True, []),
    ({"neat_packing": True, "packing": False}, True, []),  # neat_packing turns packing on, as in LLaMA-Factory
    ({"neat_packing": False}, None, []),
    ({"stage": "dpo", "packing": True}, None, ["packing"]),  # pairs are never packed
    ({"stage": "pt", "packing": True}, None, []),  # plain text is one stream of cutoff_len blocks anyway
    ({"stage": "pt", "packing": False}, None, ["packing"]),
])
def test_packing_maps_to_train_packing(keys, packing, unmapped):
    from tunesmith.train.config import TrainConfig

    tr = translate({"model_name_or_path": "m", "dataset": "a", **keys}, "p.yaml")
    assert tr.values.get("train.packing") == packing and [k for k, _, _ in tr.unmapped] == unmapped
    cfg = validate(TrainConfig, tr.recipe())  # the translation is a recipe tunesmith accepts
    assert cfg.train.packing == packing


def test_neat_packing_outside_sft_is_refused_as_llamafactory_does():
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match='neat_packing: true: neat packing is for stage: sft only'):
        translate({"model_name_or_path": "m", "dataset": "a", "stage": "dpo", "neat_packing": True}, "p.yaml")


def test_unsloth_offloaded_checkpointing_maps_to_offload():
    values = translate({"model_name_or_path": "m", "stage": "sft", "dataset": "a", "use_unsloth_gc": True}, "x.yaml").values
    assert values["train.gradient_checkpointing"] == "offload"
    off = translate({"model_name_or_path": "m", "stage": "sft", "dataset": "a", "use_unsloth_gc": False}, "x.yaml")
    assert "train.gradient_checkpointing" not in off.values and not off.unmapped
