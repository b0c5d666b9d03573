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


def test_unbuilt_group_says_so():
    r = run_cli("serve")
    assert r.returncode == 2 and "not built yet" in r.stderr


def test_repeated_list_option_accumulates(monkeypatch):
    from tunesmith import cli

    seen = {}
    monkeypatch.setattr(cli, "_load", lambda ref: (lambda cfg: seen.setdefault("cfg", cfg) and 0)
                        if ref.endswith(":chat") else cli.importlib.import_module(ref.split(":")[0]).__dict__[ref.split(":")[1]])
    assert main(["chat", "--adapter", "a1", "--adapter", "a2,a3", "--prompt", "x"]) == 0
    assert seen["cfg"].adapter == ["a1", "a2", "a3"]


def test_train_lora_typo_suggests_lora_r():
    r = run_cli("train", "lora.rr=8")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["error: unknown config key 'lora.rr'; did you mean 'lora.r'?"]
