"""Bad input → one line on stderr, exit ≠ 0, no traceback, nothing on disk changed or left behind.

Each case is one row of ``CASES``: ``(id, argv, setup, expected text)``. ``argv`` may name the
fixtures below as ``{tiny}``, ``{adapter}`` (a LoRA adapter of tiny), ``{foreign_adapter}`` (an
adapter of a tiny model with another hidden size) and ``{gguf}`` (the embedded GGUF); ``setup``
(or None) makes files in the case's own empty working folder. Every case runs as a real
``python -m tunesmith`` subprocess, several at a time, so adding a case costs ~4 s of one core.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest


def _write(name: str, text: str | bytes):
    def setup(cwd: Path, fx: dict) -> None:
        p = cwd / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


def _all(*setups):
    def setup(cwd: Path, fx: dict) -> None:
        for s in setups:
            s(cwd, fx)
    return setup


def _mkdir(name: str):
    return lambda cwd, fx: (cwd / name).mkdir(parents=True)


def _symlink(name: str, target: str):
    return lambda cwd, fx: (cwd / name).symlink_to(target)


def _truncated_gguf(cwd: Path, fx: dict) -> None:
    (cwd / "cut.gguf").write_bytes(Path(fx["gguf"]).read_bytes()[:200_000])


def _adapter_with_wrong_hash(cwd: Path, fx: dict) -> None:
    """A copy of tiny's adapter whose run manifest records a base with another content hash."""
    import shutil

    dst = cwd / "run"
    shutil.copytree(fx["adapter"], dst)
    (dst / "manifest.json").write_text(json.dumps(
        {"kind": "sft", "status": "done", "base_model": {"spec": fx["tiny"], "path": fx["tiny"], "hash": "0" * 64}}))


IN = _write("in.jsonl", '{"id": "a", "prompt": "hi"}\n{"id": "b", "prompt": "yo"}\n')
PROBES = _write("probes.jsonl", '{"prompt": "hi", "expect": "x"}\n')
PREDICT = ["predict", "--model", "{tiny}", "--input", "in.jsonl"]
GGUF = ["export", "gguf", "--model", "{tiny}"]
LM_EVAL_TASK = _all(_write("tasks/mc.jsonl", '{"q": "2+2=", "choices": ["3", "4"], "a": 1}\n'),
                    _write("tasks/mc.yaml", "task: tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                           "    test: tasks/mc.jsonl\ntest_split: test\noutput_type: multiple_choice\n"
                           "doc_to_text: '{{q}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: a\n"))

CASES = [
    # --- outputs that cannot be written: refused before any model loads
    ("predict-output-is-folder", PREDICT + ["--output", "outdir"], _all(IN, _mkdir("outdir")), "is a folder"),
    ("predict-output-in-proc", PREDICT + ["--output", "/proc/x/out.jsonl"], IN, "cannot write"),
    ("predict-output-under-file", PREDICT + ["--output", "in.jsonl/out.jsonl"], IN, "is a file, not a folder"),
    ("predict-over-foreign-file", PREDICT + ["--output", "notes.jsonl"], _all(IN, _write("notes.jsonl", "my notes\n")),
     "was not written by predict for this input"),
    ("predict-over-other-ids", PREDICT + ["--output", "o.jsonl"],
     _all(IN, _write("o.jsonl", '{"id": "zz", "response": "r"}\n')), "was not written by predict for this input"),
    ("predict-over-json-without-ids", PREDICT + ["--output", "o.jsonl"],
     _all(IN, _write("o.jsonl", '{"x": 1}\n{"x": 2}\n')), "was not written by predict for this input"),
    ("predict-output-is-input", PREDICT + ["--output", "in.jsonl"], IN, "is the input file"),
    ("predict-output-links-to-input", PREDICT + ["--output", "link.jsonl"], _all(IN, _symlink("link.jsonl", "in.jsonl")),
     "is the input file"),
    ("predict-empty-input", ["predict", "--model", "{tiny}", "--input", "e.jsonl", "--output", "o.jsonl"],
     _write("e.jsonl", ""), "e.jsonl has no rows"),
    ("train-output-dir-is-file", ["train", "--model", "{tiny}", "output_dir=f.txt"],
     _write("f.txt", "keep me"), "output_dir f.txt is a file"),
    ("train-output-dir-in-proc", ["train", "--model", "{tiny}", "--output_dir", "/proc/x/run"], None, "cannot write"),
    ("merge-out-is-file", ["export", "merge", "--model", "{tiny}", "--adapter", "{adapter}", "--out", "f.txt"],
     _write("f.txt", "keep me"), "is a file"),
    ("merge-out-in-proc", ["export", "merge", "--model", "{tiny}", "--adapter", "{adapter}", "--out", "/proc/x/m"],
     None, "cannot write"),
    ("probes-out-is-file", ["eval", "probes", "--model", "{tiny}", "--probes", "probes.jsonl", "--out", "f.txt"],
     _all(PROBES, _write("f.txt", "keep")), "out f.txt is a file"),
    ("eval-identity-out-is-file", ["eval", "identity", "--model", "{tiny}", "--name", "Ada", "--author", "Lab",
                                   "--out", "f.txt"], _write("f.txt", "keep"), "out f.txt is a file"),
    ("convert-out-in-proc", ["data", "convert", "in.jsonl", "--to", "alpaca", "/proc/x/o.jsonl"], IN, "cannot write"),
    ("stats-out-is-folder", ["data", "stats", "in.jsonl", "--model", "{tiny}", "--out", "d"], _all(IN, _mkdir("d")),
     "out d is a folder"),
    ("identity-output-dir-is-file", ["identity", "--model", "{tiny}", "--name", "Ada", "--author", "Lab",
                                     "--output_dir", "f.txt"], _write("f.txt", "keep"), "output_dir f.txt is a file"),
    # --- export gguf: checked before any model loads or converts
    ("gguf-unknown-quant", GGUF + ["--out", "o", "--quant", "f16,q9_k"], None, "'q9_k' is not a GGUF type"),
    ("gguf-out-in-proc", GGUF + ["--out", "/proc/x/o"], None, "cannot write"),
    ("gguf-out-is-file", GGUF + ["--out", "f.txt"], _write("f.txt", "keep me"), "f.txt is a file: choose a folder"),
    ("gguf-unsupported-architecture", ["export", "gguf", "--model", "weird", "--out", "o"],
     _write("weird/config.json", '{"architectures": ["WeirdForCausalLM"], "model_type": "weird"}'),
     "is not supported by llama.cpp's converter"),
    # llama-cpp-python absent: a module of that name that fails to import, first on sys.path (the cwd)
    ("gguf-missing-llama-cpp", GGUF + ["--out", "o"],
     _write("llama_cpp.py", "raise ImportError(\"No module named 'llama_cpp'\", name='llama_cpp')\n"),
     "pip install 'tunesmith[gguf]'"),
    # --- files that say .gguf but are not whole GGUF models
    ("chat-gguf-is-text", ["chat", "fake.gguf", "--prompt", "hi"], _write("fake.gguf", "hello\n"),
     "not a GGUF model file"),
    ("chat-gguf-is-empty", ["chat", "empty.gguf", "--prompt", "hi"], _write("empty.gguf", b""), "an empty file"),
    ("chat-gguf-truncated", ["chat", "cut.gguf", "--prompt", "hi"], _truncated_gguf, "GGUF"),
    ("predict-gguf-is-text", ["predict", "--model", "fake.gguf", "--input", "in.jsonl", "--output", "o.jsonl"],
     _all(IN, _write("fake.gguf", "x" * 100)), "not a GGUF model file"),
    ("merge-gguf-is-empty", ["export", "merge", "--model", "e.gguf", "--adapter", "{adapter}", "--out", "m"],
     _write("e.gguf", b""), "an empty file"),
    # --- adapters of another base, or no adapter at all
    ("chat-foreign-adapter", ["chat", "{tiny}", "--adapter", "{foreign_adapter}", "--prompt", "hi"], None,
     "was trained on"),
    ("predict-foreign-adapter", PREDICT + ["--adapter", "{foreign_adapter}", "--output", "o.jsonl"], IN,
     "was trained on"),
    ("probes-foreign-adapter", ["eval", "probes", "--model", "{tiny}", "--adapter", "{foreign_adapter}",
                                "--probes", "probes.jsonl"], PROBES, "was trained on"),
    ("eval-identity-foreign-adapter", ["eval", "identity", "--model", "{tiny}", "--adapter", "{foreign_adapter}",
                                       "--name", "Ada", "--author", "Lab"], None, "was trained on"),
    ("merge-foreign-adapter", ["export", "merge", "--model", "{tiny}", "--adapter", "{foreign_adapter}", "--out", "m"],
     None, "was trained on"),
    ("chat-adapter-hash-mismatch", ["chat", "{tiny}", "--adapter", "run", "--prompt", "hi"], _adapter_with_wrong_hash,
     "was trained on"),
    ("chat-missing-adapter", ["chat", "{tiny}", "--adapter", "nowhere", "--prompt", "hi"], None, "adapter nowhere not found"),
    ("chat-adapter-without-config", ["chat", "{tiny}", "--adapter", "empty", "--prompt", "hi"], _mkdir("empty"),
     "has no adapter_config.json"),
    ("predict-missing-adapter", PREDICT + ["--adapter", "nowhere", "--output", "o.jsonl"], IN, "not found"),
    # --- devices
    ("chat-unknown-device", ["chat", "{tiny}", "device=gpu", "--prompt", "hi"], None, "'gpu' is not a device"),
    ("train-unknown-device", ["train", "--device", "cuda1"], None, "'cuda1' is not a device"),
    ("predict-absent-device", PREDICT + ["--output", "o.jsonl", "--device", "cuda:99"], IN, "device cuda:99"),
    ("merge-unknown-device", ["export", "merge", "--adapter", "{adapter}", "--out", "m", "--device", "tpu"], None,
     "'tpu' is not a device"),
    # --- config and command line
    ("chat-unknown-key", ["chat", "gen.temprature=0.5"], None, "did you mean 'gen.temperature'"),
    ("train-unknown-option", ["train", "--lora.rr", "8"], None, "did you mean '--lora.r'"),
    ("train-bad-yaml", ["train", "bad.yaml"], _write("bad.yaml", "model: [unclosed\n"), "bad.yaml:2: not valid YAML"),
    ("train-yaml-not-mapping", ["train", "list.yaml"], _write("list.yaml", "- a\n- b\n"), "must be a mapping"),
    ("predict-missing-output", ["predict", "--input", "in.jsonl"], IN, "output"),
    # --- lm-evaluation-harness: a task name that is neither local nor one of the harness's
    ("lm-eval-unknown-task", ["eval", "lm-eval", "--model", "{tiny}", "--tasks", "tiny_mcc", "--include_path", "tasks",
                              "--out", "res"], LM_EVAL_TASK, "unknown task 'tiny_mcc'"),
    # --- output policy: foreign files, out = input, out inside an input folder (issue 23)
    # --- teacher replies (issue 23)
    # --- LLaMA-Factory / ms-swift / convert-recipe (issue 23)
    # --- newcomer friction: predict, train, gguf, serve (issue 23)
    # --- jobs: identity and pipeline (issue 23)
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` → its content hash (a folder or link → its kind)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory, tiny_model, embedded_dir) -> dict:
    """tiny + an adapter of it, and an adapter of a tiny model with another hidden size."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tunesmith.models.resolve import embedded_gguf

    root = tmp_path_factory.mktemp("bad-inputs")
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), lora).save_pretrained(root / "adapter")
    cfg = LlamaConfig.from_pretrained(tiny_model)
    cfg.hidden_size, cfg.intermediate_size = 32, 64
    other = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    other.save_pretrained(root / "other")
    other = AutoModelForCausalLM.from_pretrained(root / "other")  # so the adapter records this folder as its base
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(other, lora).save_pretrained(root / "foreign_adapter")
    return {"tiny": str(tiny_model), "adapter": str(root / "adapter"),
            "foreign_adapter": str(root / "foreign_adapter"), "gguf": str(embedded_gguf("smollm2-135m-instruct"))}


@pytest.fixture(scope="module")
def results(fixtures, tmp_path_factory) -> dict:
    """Run every case at once (a few at a time): ``id → (process, before, after)``."""
    root = tmp_path_factory.mktemp("cases")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONDONTWRITEBYTECODE": "1"}  # a module a case writes (llama_cpp.py) leaves no __pycache__

    def one(case):
        cid, argv, setup, _ = case
        cwd = root / cid / "cwd"
        cwd.mkdir(parents=True)
        if setup:
            setup(cwd, fixtures)
        before = _snapshot(cwd)
        args = [a.format(**fixtures) for a in argv]
        proc = subprocess.run([sys.executable, "-m", "tunesmith", *args], cwd=cwd, capture_output=True, text=True,
                              env={**env, "TUNESMITH_HOME": str(root / cid / "home")}, timeout=300)
        return cid, (proc, before, _snapshot(cwd))

    with ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2))) as pool:
        return dict(pool.map(one, CASES))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_disk_alone(case, results):
    cid, _, _, expected = case
    proc, before, after = results[cid]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0], lines[0]
    assert after == before  # nothing changed, nothing left behind (no temp files, no run folders)


def test_there_are_enough_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 25
