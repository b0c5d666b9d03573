import subprocess
import sys

import pytest

from tunesmith.cli import VERBS, main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], capture_output=True, text=True)


def test_top_help_lists_every_verb():
    r = run_cli("--help")
    assert r.returncode == 0
    for verb in ["data", "synth", "train", "eval", "export", "chat", "predict", "serve"]:
        assert f"\n    {verb} " in r.stdout


@pytest.mark.parametrize("verb", [v.name for v in VERBS])
def test_verb_help_lists_options_with_defaults(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main(verb.split() + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--" in out and ("(default:" in out or "(required" in out)


def test_config_typo_is_one_line_exit_2():
    r = run_cli("chat", "gen.temprature=0.5")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: unknown config key 'gen.temprature'; did you mean 'gen.temperature'?"]
    assert "Traceback" not in r.stderr


def test_missing_model_is_one_line(tmp_path):
    r = run_cli("chat", str(tmp_path / "no-such-model"), "--prompt", "hi")
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "not found" in r.stderr


def test_hub_id_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = run_cli("chat", "someorg/some-model", "--prompt", "hi")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pass a local model folder or a .gguf file" in lines[0]


def test_a_group_lists_its_verbs_from_the_registry():
    r = run_cli("synth")
    names = {v.name.split()[1] for v in VERBS if v.name.startswith("synth ")}
    assert r.returncode == 2 and names and all(n in r.stdout for n in names)


def test_repeated_list_option_accumulates(monkeypatch):
    from tunesmith import registry

    seen = {}
    real = registry.load
    monkeypatch.setattr(registry, "load", lambda ref: (lambda cfg: seen.setdefault("cfg", cfg) and 0)
                        if ref.endswith(":chat") else real(ref))
    assert main(["chat", "--adapter", "a1", "--adapter", "a2,a3", "--prompt", "x"]) == 0
    assert seen["cfg"].adapter == ["a1", "a2", "a3"]


def test_train_lora_typo_suggests_lora_r():
    r = run_cli("train", "lora.rr=8")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["error: unknown config key 'lora.rr'; did you mean 'lora.r'?"]


def test_every_default_is_said_once_in_help():
    from tunesmith.cli import _verb_parser

    for v in VERBS:
        for action in _verb_parser(v)[0]._actions:
            h = (action.help or "").lower()
            # the default is said once: by the description ("default: …" / "unset: …") or by the CLI
            assert h.count("default:") + h.count("unset:") <= 1, (v.name, action.help)


def test_habits_any_order_dashes_and_a_run_folder_as_model(tiny_model, tmp_path):
    """Options before and after YAML files and overrides, dashed names; then the LoRA run folder
    itself is the model of chat and predict (its base comes from the run's manifest)."""
    import json

    import yaml

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(4)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(tiny_model), "data": {"datasets": [{"path": str(data)}]},
                                      "output_dir": str(tmp_path / "run")}))
    r = run_cli("train", "--train.max-steps", "2", str(recipe), "data.cutoff_len=96", "--train.batch-size", "2",
                "--progress", "false", "lora.r=2")
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (cfg["train"]["max_steps"], cfg["train"]["batch_size"], cfg["data"]["cutoff_len"], cfg["lora"]["r"]) == \
        (2, 2, 96, 2)
    r = run_cli("chat", str(tmp_path / "run"), "--prompt", "hi", "--gen.max-new-tokens", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    (tmp_path / "in.jsonl").write_text('{"prompt": "hi"}\n')
    r = run_cli("predict", "--model", str(tmp_path / "run"), "--input", str(tmp_path / "in.jsonl"),
                "--output", str(tmp_path / "out.jsonl"), "--gen.max_new_tokens", "3", "--progress", "false")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "out.jsonl").read_text())["id"] == "1"
