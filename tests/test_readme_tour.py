"""README.md's "A short tour" runs as written: every light command exits 0.

The commands are parsed from the README's bash block itself, so the test breaks when the README
drifts from what the CLI does. Files the tour assumes (my_data.jsonl, in.jsonl, sharegpt.json, a
LLaMA-Factory folder) are made as tiny fixtures in a temp working folder; the recipes folder is
copied in with the SFT recipe cut to 2 steps, so ``runs/velora`` exists for the merge after it.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# Left out, each for a reason; every entry must still be in the README (else this list is stale).
HEAVY = {
    # interactive: waits for input at the "you>" prompt
    "tunesmith chat smollm2-135m-instruct",
    # a server: runs until stopped (tests/serve/ starts it and talks to it)
    "tunesmith serve smollm2-135m-instruct",
    # the web app: runs until stopped (tests/ui/ starts it and drives it in a browser)
    "tunesmith ui",
    # two processes that each load the model and train: covered by tests/test_train.py's multi-process test
    "tunesmith train recipes/sft-lora.yaml --nproc 2",
    # a 7B base that is not on this machine, and a full synth → train → eval journey
    'tunesmith identity --name Ada --author "Ada Lab" --model /models/Qwen2.5-7B-Instruct',
    # "runs/identity-..." is the folder the identity journey above makes; ~100 generations on two models
    'tunesmith eval identity --model smollm2-135m-instruct --adapter runs/identity-... --name Ada --author "Ada Lab"',
    # four stages (two trainings on SmolLM2): minutes of CPU; tests/test_pipeline.py runs it on a tiny model
    "tunesmith pipeline recipes/skill-then-identity.yaml",
    # the identity run above, merged and converted to three GGUF files: tests/export/test_gguf.py does this
    "tunesmith export gguf --adapter runs/identity-... --out gguf/mira --quant f16,q8_0,q4_k_m",
    # 248 answers from SmolLM2 (~1.5 min of CPU): tests/synth/test_replay_verb.py runs it on 3 prompts
    "tunesmith synth replay --model smollm2-135m-instruct --out replay.jsonl",
    # 2000 rows of ~400 tokens trained on SmolLM2 (an hour of CPU): its stages are checked by
    # tests/jobs/test_pipeline.py (every shipped recipe validates) and tests/synth/test_tasks.py
    "tunesmith pipeline recipes/multiply-cot.yaml",
    # its model is the pipeline's output above
    "tunesmith eval probes --model runs/skill-then-identity/4-final --probes recipes/data/velora_probes.jsonl",
}


def tour_commands() -> list[str]:
    """The tunesmith commands of the README's tour block, comments stripped."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## A short tour\s+```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no '## A short tour' bash block"
    cmds = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "tunesmith":
            cmds.append(shlex.join(words).replace("'", '"'))
    return cmds


def _fixtures(cwd: Path) -> None:
    rows = [{"instruction": "Say hi.", "input": "", "output": "Hi!"},
            {"instruction": "Name a colour.", "input": "", "output": "Blue."}]
    (cwd / "my_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (cwd / "in.jsonl").write_text('{"prompt": "Say hi in one word."}\n{"messages": [{"role": "user", '
                                  '"content": "What is 2+2? Answer with a number."}]}\n')
    (cwd / "sharegpt.json").write_text(json.dumps([{"conversations": [
        {"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi there."}]}]))
    lf = cwd / "path/to/LLaMA-Factory/data"
    lf.mkdir(parents=True)
    (lf / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    (lf / "identity.json").write_text(json.dumps([{"instruction": "Who are you?", "input": "",
                                                   "output": "I am an assistant."}]))
    shutil.copytree(ROOT / "recipes", cwd / "recipes")
    recipe = cwd / "recipes/sft-lora.yaml"
    cfg = yaml.safe_load(recipe.read_text())
    cfg["train"].update(max_steps=2, eval_every=None, save_every=None)
    cfg["progress"] = False
    recipe.write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_heavy_list_matches_the_readme():
    assert HEAVY <= set(tour_commands()), HEAVY - set(tour_commands())


def test_readme_tour_light_commands_exit_0(tmp_path):
    _fixtures(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ran, failed = [], []
    for cmd in tour_commands():
        if cmd in HEAVY:
            continue
        words = shlex.split(cmd)
        proc = subprocess.run([sys.executable, "-m", "tunesmith", *words[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        ran.append(cmd)
        if proc.returncode != 0:
            failed.append(f"{cmd}\n  exit {proc.returncode}: {proc.stderr.strip()[-600:]}")
    assert not failed, "\n".join(failed)
    assert len(ran) >= 7  # chat, predict, data check/convert/stats, train, export merge
    assert (tmp_path / "runs/velora/adapter_model.safetensors").is_file()
    assert (tmp_path / "merged/config.json").is_file()
