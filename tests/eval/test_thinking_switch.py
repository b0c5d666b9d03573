"""The thinking switch end to end on the embedded SmolLM2 (issue 26): a short LoRA run on reasoning rows
with ``data.template: qwen3`` makes the model answer with a think block when ``enable_thinking`` is on
and without one when it is off; ``eval tasks --thinking both`` reports it; the merged model carries
the template and answers the same; the GGUF carries it too and llama.cpp, rendering the template
stored in the file, follows the switch."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunesmith.cli import main
from tunesmith.eval.tasks import EvalTasksConfig, evaluate, read_task
from tunesmith.tasks.arith import make_rows

STEPS = 32  # two epochs of 64 rows (32 questions, each with and without its think block); 24 steps left a
# quarter of the thinking answers looping without closing the block


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def switched(tmp_path_factory, embedded_dir):
    root = tmp_path_factory.mktemp("think")
    rows = _jsonl(root / "rows.jsonl", make_rows("add", [1, 1], 64, think="both", lang="en"))
    test = _jsonl(root / "test.jsonl", make_rows("add", [1, 1], 8, split="test", think="off", lang="en"))
    recipe = root / "train.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": "smollm2-135m-instruct", "output_dir": str(root / "run"), "progress": False,
        "data": {"datasets": [{"path": str(rows)}], "template": "qwen3", "cutoff_len": 96},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"lr": 3e-3, "max_steps": STEPS, "batch_size": 4, "warmup": 1, "save_every": None,
                  "autocast": "off"}}))
    assert main(["train", str(recipe)]) == 0
    assert main(["export", "merge", "--adapter", str(root / "run"), "--out", str(root / "merged")]) == 0
    assert main(["export", "gguf", "--model", str(root / "merged"), "--out", str(root / "gguf"), "--quant", "f16"]) == 0
    return root, test


def _modes(engine, test: Path) -> dict:
    """Each mode's switch share and answers (no base run: eval tasks' own base-vs-adapter is tested elsewhere)."""
    run = evaluate(engine, [read_task(str(test))], EvalTasksConfig(model="m", thinking="both", retention=False,
                                                                   max_new_tokens=80))
    return {mode: (run["tasks"][f"test (thinking {mode})"]["switch"],
                   [a["output"] for a in run["answers"][f"test (thinking {mode})"]]) for mode in ("on", "off")}


def test_trained_model_follows_the_switch_and_merge_keeps_it(switched):
    from tunesmith.infer import Engine

    root, test = switched
    tuned = _modes(Engine.load(str(root / "run"), dtype="fp32", device="cpu"), test)
    for mode, (share, answers) in tuned.items():
        assert share == 1.0, answers
    assert all(a.startswith("<think>\n") and "\n</think>\n\n" in a for a in tuned["on"][1])
    assert (root / "merged" / "chat_template.jinja").read_text() == (root / "run" / "chat_template.jinja").read_text()
    merged = _modes(Engine.load(str(root / "merged"), dtype="fp32", device="cpu"), test)
    assert merged == tuned  # the same greedy answers, so the same shares


def test_gguf_carries_the_switch_and_llama_cpp_follows_it(switched):
    from tunesmith.infer.gguf import GgufEngine

    root, test = switched
    m = json.loads((root / "gguf" / "manifest.json").read_text())
    assert m["verification"]["thinking_switch"]["template_carried"] is True
    engine = GgufEngine.load(root / "gguf" / "model-f16.gguf")
    try:
        assert engine.tok.chat_template == (root / "run" / "chat_template.jinja").read_text()
        chat = [{"role": "user", "content": "Compute 3+4"}]
        assert engine.prompt(chat, False) == engine.prompt(chat, True) + "<think>\n\n</think>\n\n"
        for mode, (share, answers) in _modes(engine, test).items():
            assert share == 1.0, answers
    finally:
        engine.close()
