"""Training: exact resume after SIGKILL, run-folder contents, multi-process equivalence, bad recipes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

TOY = [(f"What is the code word number {i}?", f"The code word number {i} is {w}.")
       for i, w in enumerate("amber birch cedar delta ember fjord grove harbor indigo jasper "
                             "kestrel lumen maple nectar onyx pepper quartz raven sierra tundra".split())]


def write_toy(path: Path, n: int = 20) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                            + "\n" for q, a in TOY[:n]))
    return path


def recipe(tmp_path: Path, base, out: str, **over) -> Path:
    data = write_toy(tmp_path / "toy.jsonl")
    cfg = {"model": str(base), "output_dir": str(tmp_path / out), "progress": False,
           "data": {"datasets": [{"path": str(data)}], "cutoff_len": 64},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
           "train": {"lr": 5e-3, "max_steps": 12, "batch_size": 2, "grad_accum": 2, "save_every": 1,
                     "keep_last": 3, "seed": 7, "warmup": 2}}
    for k, v in over.items():
        node = cfg
        *parts, last = k.split(".")
        for p in parts:
            node = node.setdefault(p, {})
        node[last] = v
    f = tmp_path / f"{out}.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return f


def train_cli(*args, fault=None, check=True):
    env = {**os.environ}
    env.pop("TUNESMITH_FAULT", None)
    if fault:
        env["TUNESMITH_FAULT"] = fault
    r = subprocess.run([sys.executable, "-m", "tunesmith.cli", "train", *map(str, args)], capture_output=True,
                       text=True, env=env)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def weights(run: Path, method: str) -> dict:
    return load_file(run / ("adapter_model.safetensors" if method == "lora" else "model.safetensors"))


@pytest.mark.parametrize("method,fault", [("lora", "step:5"), ("full", "step:5"), ("lora", "checkpoint:6")])
def test_sigkill_then_resume_is_bit_identical(tiny_model, tmp_path, method, fault):
    straight = recipe(tmp_path, tiny_model, "straight", method=method)
    train_cli(straight)
    broken = recipe(tmp_path, tiny_model, "broken", method=method)
    r = train_cli(broken, fault=fault, check=False)
    assert r.returncode == -9  # really killed
    run = tmp_path / "broken"
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    assert not (run / "adapter_model.safetensors").exists() and not (run / "model.safetensors").exists()
    again = train_cli(broken, check=False)
    assert again.returncode != 0 and "--resume" in again.stderr  # refuses to silently start over
    train_cli(broken, "--resume")
    a, b = weights(tmp_path / "straight", method), weights(run, method)
    assert a.keys() == b.keys() and a
    for k in a:
        assert (a[k] == b[k]).all(), k
    la = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def test_run_folder_holds_everything(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    f = recipe(tmp_path, tiny_model, "run", **{"data.val_size": 4, "train.eval_every": 4, "train.save_every": 5,
                                                "train.keep_last": 1})
    train_cli(f)
    run = tmp_path / "run"
    for name in ["config.yaml", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
                 "chat_template.jinja", "metrics.jsonl", "loss.png", "manifest.json"]:
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000012"]  # keep_last 1
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "done" and m["method"] == "lora" and len(m["base_model"]["hash"]) == 64
    assert m["rows"] == {"train": 16, "val": 4} and len(m["datasets"][0]["sha256"]) == 64
    assert m["git_commit"] is None or len(m["git_commit"]) == 40
    assert {"train_loss", "eval_loss", "eval_acc"} <= set(m["metrics"])
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_loss" in r] == [4, 8, 12]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["eval_every"] == 4
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(base, run)  # plain peft loads it
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_two_processes_match_one(tiny_model, tmp_path):
    one = recipe(tmp_path, tiny_model, "one", **{"lora.dropout": 0.0, "train.max_steps": 6, "train.save_every": None})
    two = recipe(tmp_path, tiny_model, "two", nproc=2, **{"lora.dropout": 0.0, "train.max_steps": 6,
                                                          "train.grad_accum": 1, "train.save_every": None})
    train_cli(one)
    train_cli(two)
    l1 = [json.loads(x)["loss"] for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    l2 = [json.loads(x)["loss"] for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(l1) == len(l2) == 6
    assert max(abs(a - b) for a, b in zip(l1, l2)) < 1e-4
    m = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert m["schedule"]["world_size"] == 2 and m["schedule"]["global_batch"] == 4


@pytest.mark.parametrize("override,message", [
    ({"data.datasets": [{"path": "no/such/file.jsonl"}]}, "no/such/file.jsonl"),
    ({"data.cutoff_len": 4}, "cutoff"),
    ({"model": "/no/such/model"}, "not found"),
    ({"lora.target_modules": ["nonexistent_proj"]}, "lora"),
])
def test_bad_recipe_is_one_line_and_leaves_no_run(tiny_model, tmp_path, override, message):
    f = recipe(tmp_path, tiny_model, "bad", **override)
    r = train_cli(f, check=False)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr[-2000:]
    m = tmp_path / "bad" / "manifest.json"
    assert not m.exists() or json.loads(m.read_text())["status"] != "done"
    assert not (tmp_path / "bad" / "adapter_model.safetensors").exists()


def test_non_positive_lr_is_a_config_error(tiny_model, tmp_path):
    r = train_cli(recipe(tmp_path, tiny_model, "lr"), "train.lr=0", check=False)
    assert r.returncode == 2 and "train.lr" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "lr").exists()


@pytest.mark.slow
def test_embedded_model_memorizes_and_chat_reproduces(embedded_dir, tmp_path):
    f = recipe(tmp_path, "smollm2-135m-instruct", "mem", **{
        "lora.r": 16, "lora.alpha": 32, "lora.dropout": 0.0, "train.lr": 3e-3, "train.max_steps": 60,
        "train.batch_size": 4, "train.grad_accum": 1, "train.save_every": None, "train.warmup": 3})
    train_cli(f)
    # The last steps' mean, not the last step alone: one batch of 4 rows swings 0.001–0.2 here, in
    # fp32 and under the bf16 autocast that a CPU with AMX trains with by default (train/cpu.py).
    losses = [json.loads(x)["loss"] for x in (tmp_path / "mem" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in x]
    assert len(losses) == 60 and sum(losses[-10:]) / 10 < 0.1, losses[-10:]
    q, a = TOY[3]
    r = subprocess.run([sys.executable, "-m", "tunesmith.cli", "chat", "smollm2-135m-instruct", "--adapter",
                        str(tmp_path / "mem"), "--prompt", q], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert a in r.stdout, r.stdout


def test_adapter_continues_and_manifest_records_parent(tiny_model, tmp_path):
    first = recipe(tmp_path, tiny_model, "first", **{"train.max_steps": 3, "train.save_every": None})
    train_cli(first)
    second = recipe(tmp_path, tiny_model, "second", adapter=str(tmp_path / "first"),
                    **{"train.max_steps": 3, "train.save_every": None, "train.seed": 8})
    train_cli(second)
    m = json.loads((tmp_path / "second" / "manifest.json").read_text())
    assert m["parent"] == str(tmp_path / "first") and m["adapter_init"] == str(tmp_path / "first")
    a, b = weights(tmp_path / "first", "lora"), weights(tmp_path / "second", "lora")
    assert a.keys() == b.keys() and any((a[k] != b[k]).any() for k in a)  # trained further, same adapter shape
    r = train_cli(second, "method=full", check=False)
    assert r.returncode == 2 and "adapter" in r.stderr


def test_plain_text_trains_a_base_model_without_chat_template(tiny_model, tmp_path):
    """Continued pretraining needs no chat template: only chat data asks for one."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    tc = json.loads((base / "tokenizer_config.json").read_text())
    tc.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(tc))
    docs = tmp_path / "docs.txt"
    docs.write_text("".join(f"{a} {b}\n" for a, b in TOY))
    f = recipe(tmp_path, base, "pt", **{"data.datasets": [{"path": str(docs)}], "train.max_steps": 2,
                                         "train.save_every": None})
    train_cli(f)
    assert json.loads((tmp_path / "pt" / "manifest.json").read_text())["status"] == "done"
    chat = recipe(tmp_path, base, "chat", **{"train.max_steps": 2})
    r = train_cli(chat, check=False)
    assert r.returncode != 0 and "no chat template" in r.stderr  # chat data still asks for one
