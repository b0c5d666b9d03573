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
     "output notes.jsonl was not written by tunesmith"),
    # predict's own output (its marker says so) for another input: resumed only for the same ids
    ("predict-over-other-ids", PREDICT + ["--output", "o.jsonl"],
     _all(IN, _write("o.jsonl", '{"id": "zz", "response": "r"}\n'),
          _write(".o.jsonl.tunesmith.json", '{"verb": "predict", "sha256": null}')),
     "was not written by predict for this input"),
    ("predict-over-json-without-ids", PREDICT + ["--output", "o.jsonl"],
     _all(IN, _write("o.jsonl", '{"x": 1}\n{"x": 2}\n')), "output o.jsonl was not written by tunesmith"),
    ("predict-output-is-input", PREDICT + ["--output", "in.jsonl"], IN, "output in.jsonl is the input in.jsonl"),
    ("predict-output-links-to-input", PREDICT + ["--output", "link.jsonl"], _all(IN, _symlink("link.jsonl", "in.jsonl")),
     "output link.jsonl is the input in.jsonl"),
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
    ("gguf-out-is-file", GGUF + ["--out", "f.txt"], _write("f.txt", "keep me"), "out f.txt is a file: name a folder"),
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
    ("task-out-existing", ["synth", "task", "multiply", "--n", "4", "--out", "notes.jsonl"],
     _write("notes.jsonl", "mine\n"), "out notes.jsonl was not written by tunesmith"),
    ("task-check-missing-file", ["synth", "task", "multiply", "--check", "nowhere.jsonl"], None, "nowhere.jsonl"),
    ("task-bad-digits", ["synth", "task", "multiply", "--digits", "0,2", "--out", "o.jsonl"], None, "digits"),
    ("preference-out-is-chosen", ["synth", "preference", "--chosen", "a.jsonl", "--rejected", "b.jsonl", "--out",
                                  "a.jsonl"], _all(_write("a.jsonl", '{"id": 1, "response": "x"}\n'),
                                                   _write("b.jsonl", '{"id": 1, "response": "y"}\n')),
     "out a.jsonl is the input a.jsonl"),
    ("preference-only-chosen", ["synth", "preference", "--chosen", "a.jsonl", "--out", "p.jsonl"],
     _write("a.jsonl", '{"id": 1, "response": "x"}\n'), "pass both answer files"),
    ("replay-out-existing", ["synth", "replay", "--model", "{tiny}", "--out", "notes.jsonl"],
     _write("notes.jsonl", "mine\n"), "out notes.jsonl was not written by tunesmith"),
    ("replay-out-inside-model", ["synth", "replay", "--model", "m", "--out", "m/replay.jsonl"],
     lambda cwd, fx: __import__("shutil").copytree(fx["tiny"], cwd / "m"), "is inside the input folder m"),
    ("train-foreign-adapter", ["train", "--model", "{tiny}", "--adapter", "{foreign_adapter}", "--data.path",
                               "d.jsonl", "--output_dir", "r"],
     _write("d.jsonl", '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'),
     "was trained on"),
    ("convert-over-user-txt", ["data", "convert", "in.jsonl", "--to", "alpaca", "notes.txt"],
     _all(IN, _write("notes.txt", "my notes\n")), "OUT notes.txt was not written by tunesmith"),
    ("convert-over-user-json", ["data", "convert", "in.jsonl", "--to", "alpaca", "cfg.json"],
     _all(IN, _write("cfg.json", '{"mine": 1}\n')), "OUT cfg.json was not written by tunesmith"),
    ("convert-overwrite-user-file", ["data", "convert", "in.jsonl", "--to", "alpaca", "o.jsonl", "--overwrite"],
     _all(IN, _write("o.jsonl", '{"mine": 1}\n')), "OUT o.jsonl was not written by tunesmith"),
    ("stats-out-existing", ["data", "stats", "in.jsonl", "--model", "{tiny}", "--out", "plot.png"],
     _all(IN, _write("plot.png", b"png")), "out plot.png was not written by tunesmith"),
    ("stats-out-is-input", ["data", "stats", "in.jsonl", "--model", "{tiny}", "--out", "in.jsonl"], IN,
     "out in.jsonl is the input in.jsonl"),
    ("stats-default-png-exists", ["data", "stats", "in.jsonl", "--model", "{tiny}"],
     _all(IN, _write("in_lengths.png", b"png")), "out in_lengths.png was not written by tunesmith"),
    ("distill-out-existing", ["synth", "distill", "--prompts", "in.jsonl", "--out", "notes.jsonl"],
     _all(IN, _write("notes.jsonl", "my notes\n")), "out notes.jsonl was not written by tunesmith"),
    ("distill-out-is-prompts", ["synth", "distill", "--prompts", "in.jsonl", "--out", "in.jsonl"], IN,
     "out in.jsonl is the input in.jsonl"),
    ("distill-out-folder-with-user-data", ["synth", "distill", "--prompts", "in.jsonl", "--out", "d"],
     _all(IN, _write("d/data.jsonl", "mine\n")), "out d holds files tunesmith did not write"),
    ("distill-errors-file-is-users", ["synth", "distill", "--prompts", "in.jsonl", "--out", "o.jsonl",
                                      "--teacher.base_url", "http://127.0.0.1:9/v1"],
     _all(IN, _write("o.errors.jsonl", "mine\n")), "o.errors.jsonl was not written by tunesmith"),
    ("style-out-is-corpus", ["synth", "style", "--corpus", "c.jsonl", "--out", "c.jsonl"],
     _write("c.jsonl", '{"instruction": "q", "output": "a"}\n'), "out c.jsonl is the input c.jsonl"),
    ("judge-out-is-input", ["synth", "judge", "--input", "in.jsonl", "--out", "in.jsonl", "--min_score", "9"], IN,
     "out in.jsonl is the input in.jsonl"),
    ("chunks-out-existing", ["synth", "chunks", "--text", "n.txt", "--out", "notes.jsonl"],
     _all(_write("n.txt", "A night. A day.\n"), _write("notes.jsonl", "mine\n")),
     "out notes.jsonl was not written by tunesmith"),
    ("probes-out-user-folder", ["eval", "probes", "--model", "{tiny}", "--probes", "probes.jsonl", "--out", "r"],
     _all(PROBES, _write("r/probes.json", "{}")), "out r holds files tunesmith did not write"),
    ("eval-identity-out-user-folder", ["eval", "identity", "--model", "{tiny}", "--name", "Ada", "--author", "Lab",
                                       "--out", "r"], _write("r/report.md", "mine"), "out r holds files tunesmith"),
    ("eval-tasks-out-user-folder", ["eval", "tasks", "--model", "{tiny}", "--tasks", "t.jsonl", "--out", "r"],
     _all(_write("t.jsonl", '{"prompt": "1+1", "answer": "2"}\n'), _write("r/report.json", "{}")),
     "out r holds files tunesmith did not write"),
    ("lm-eval-out-user-folder", ["eval", "lm-eval", "--model", "{tiny}", "--tasks", "tiny_mc", "--include_path",
                                 "tasks", "--out", "r"], _all(LM_EVAL_TASK, _write("r/results.md", "mine")),
     "out r holds files tunesmith did not write"),
    ("merge-out-inside-adapter", ["export", "merge", "--model", "{tiny}", "--adapter", "ad", "--out", "ad/merged"],
     lambda cwd, fx: __import__("shutil").copytree(fx["adapter"], cwd / "ad"), "is inside the input folder ad"),
    ("train-output-dir-user-folder", ["train", "--model", "{tiny}", "--data.path", "in.jsonl", "--output_dir", "r"],
     _all(IN, _write("r/notes.txt", "mine")), "output_dir r holds files tunesmith did not write"),
    # --- teacher replies (issue 23)
    # A teacher nobody answers at (port 9, no retries): every verb stops on one line before writing anything.
    ("synth-distill-teacher-down", ["synth", "distill", "--prompts", "p.jsonl", "--out", "o",
                                    "--teacher.base_url", "http://127.0.0.1:9/v1", "--teacher.max_retries", "0"],
     _write("p.jsonl", '{"prompt": "hi"}\n'), "teacher at http://127.0.0.1:9/v1 is not reachable"),
    ("synth-style-teacher-down", ["synth", "style", "--corpus", "c.jsonl", "--out", "o",
                                  "--teacher.base_url", "http://127.0.0.1:9/v1", "--teacher.max_retries", "0"],
     _write("c.jsonl", "".join(f'{{"instruction": "question {i}?", "input": "", "output": "answer {i}."}}\n'
                               for i in range(5))), "teacher at http://127.0.0.1:9/v1 is not reachable"),
    ("synth-judge-teacher-down", ["synth", "judge", "--input", "rows.jsonl", "--out", "kept.jsonl",
                                  "--teacher.base_url", "http://127.0.0.1:9/v1", "--teacher.max_retries", "0"],
     _write("rows.jsonl", '{"instruction": "2+2?", "input": "", "output": "4"}\n'),
     "teacher at http://127.0.0.1:9/v1 is not reachable"),
    ("synth-chunks-teacher-down", ["synth", "chunks", "--text", "n.md", "--tokenizer", "{tiny}", "--chunk_tokens", "16",
                                   "--generate", "--out", "o", "--teacher.base_url", "http://127.0.0.1:9/v1",
                                   "--teacher.max_retries", "0"],
     _write("n.md", "".join(f"Day {i} began. The keeper lit the lamp. Ship {i} came home.\n\n" for i in range(6))),
     "teacher at http://127.0.0.1:9/v1 is not reachable"),
    # Bad teacher settings: refused before any request.
    ("synth-teacher-concurrency-0", ["synth", "distill", "--prompts", "p.jsonl", "--out", "o",
                                     "--teacher.concurrency", "0"], _write("p.jsonl", '{"prompt": "hi"}\n'),
     "teacher.concurrency: Input should be greater than or equal to 1"),
    ("synth-teacher-key-variable-unset", ["synth", "distill", "--prompts", "p.jsonl", "--out", "o",
                                          "--teacher.api_key_env", "TS_NO_SUCH_KEY_23",
                                          "--teacher.base_url", "http://127.0.0.1:9/v1"],
     _write("p.jsonl", '{"prompt": "hi"}\n'), "the environment variable TS_NO_SUCH_KEY_23 is not set"),
    ("synth-teacher-negative-retries", ["synth", "distill", "--prompts", "p.jsonl", "--out", "o",
                                        "--teacher.max_retries", "-1"], _write("p.jsonl", '{"prompt": "hi"}\n'),
     "teacher.max_retries: Input should be greater than or equal to 0"),
    ("synth-teacher-timeout-0", ["synth", "style", "--corpus", "c.jsonl", "--out", "o", "--teacher.timeout", "0"],
     None, "teacher.timeout: Input should be greater than 0"),
    ("synth-teacher-top-p-2", ["synth", "judge", "--input", "rows.jsonl", "--out", "o", "--teacher.top_p", "2"],
     None, "teacher.top_p: Input should be less than or equal to 1"),
    ("synth-teacher-option-typo", ["synth", "judge", "--input", "rows.jsonl", "--out", "o", "--teacher.modle", "x"],
     None, "did you mean '--teacher.model'"),
    # --- LLaMA-Factory / ms-swift / convert-recipe (issue 23)
    ("convert-recipe-out-in-proc", ["convert-recipe", "lf.yaml", "--out", "/proc/recipe.yaml"],
     _write("lf.yaml", "model_name_or_path: m\nstage: sft\ndataset: identity\n"), "cannot write"),
    ("convert-recipe-over-user-file", ["convert-recipe", "lf.yaml", "--out", "notes.yaml", "--overwrite"],
     _all(_write("lf.yaml", "model_name_or_path: m\ndataset: identity\n"), _write("notes.yaml", "mine: 1\n")),
     "notes.yaml was not written by tunesmith"),
    ("convert-recipe-not-llamafactory", ["convert-recipe", "mine.yaml"],
     _write("mine.yaml", "model: m\ndata:\n  datasets: [{path: d.jsonl}]\n"), "no LLaMA-Factory key"),
    ("lf-unknown-stage", ["train", "lf.yaml"], _write("lf.yaml", "model_name_or_path: m\nstage: orpo\ndataset: a\n"),
     'lf.yaml: stage: "orpo": this stage is not supported by tunesmith train'),
    ("lf-neat-packing-in-dpo", ["train", "lf.yaml"],
     _write("lf.yaml", "model_name_or_path: m\nstage: dpo\ndataset: a\nneat_packing: true\n"),
     "neat_packing: true: neat packing is for stage: sft only"),
    ("lf-dataset-not-in-dataset-info", ["train", "lf.yaml", "device=cpu"],
     lambda cwd, fx: _all(_write("data/dataset_info.json", '{"identity": {"file_name": "identity.json"}}'),
                          _write("data/identity.json", '[{"instruction": "hi", "input": "", "output": "yo"}]'),
                          _write("lf.yaml", f"model_name_or_path: {fx['tiny']}\ndataset: identity,alpaca_demo\n"))(
         cwd, fx), "dataset 'alpaca_demo' is not in data/dataset_info.json"),
    ("lf-dataset-dir-missing", ["train", "lf.yaml"],
     lambda cwd, fx: _write("lf.yaml", f"model_name_or_path: {fx['tiny']}\ndataset: a\ndataset_dir: nowhere\n")(
         cwd, fx), "lf.yaml: dataset_dir: nowhere not found"),
    ("lf-merge-without-adapter", ["export", "merge", "m.yaml"],
     _write("m.yaml", "model_name_or_path: m\nexport_dir: merged\n"), "adapter_name_or_path is missing"),
    ("lf-train-yaml-given-to-chat", ["chat", "lf.yaml", "--prompt", "hi"],
     _write("lf.yaml", "model_name_or_path: m\nstage: sft\ndataset: a\n"), "run it with `tunesmith train lf.yaml`"),
    ("data-check-hub-only-name", ["data", "check", "data:alpaca_en"],
     _write("data/dataset_info.json", '{"alpaca_en": {"hf_hub_url": "llamafactory/alpaca_en"}}'),
     "dataset 'alpaca_en' in data/dataset_info.json: hub-only dataset (hf_hub_url: llamafactory/alpaca_en)"),
    ("data-check-lf-yaml-without-dataset-dir", ["data", "check", "lf.yaml"],
     _write("lf.yaml", "model_name_or_path: m\ndataset: identity\ndataset_dir: nowhere\n"),
     "lf.yaml: dataset_dir: nowhere not found"),
    ("identity-swift-name-without-value", ["identity", "--model_name"], None, "--model_name needs a value"),
    # --- newcomer friction: predict, train, gguf, serve (issue 23)
    ("predict-prompt-past-context", ["predict", "--model", "{tiny}", "--input", "long.jsonl", "--output", "o.jsonl"],
     _write("long.jsonl", '{"prompt": "hi"}\n' + json.dumps({"prompt": "word " * 1900}) + "\n"),
     "long.jsonl:2: prompt is 1,931 tokens; with max_new_tokens 256 it exceeds the model's context of 2,048"),
    ("predict-null-content", ["predict", "--model", "{tiny}", "--input", "n.jsonl", "--output", "o.jsonl"],
     _write("n.jsonl", '{"prompt": "hi"}\n{"messages": [{"role": "user", "content": null}]}\n'),
     'n.jsonl:2: messages[0]: needs a role and a string content, got {"role": "user", "content": null}'),
    ("train-datasets-missing-file", ["train", "--model", "{tiny}", "--data.datasets", "missing.jsonl"], None,
     "data.datasets[0].path: missing.jsonl not found"),
    ("train-data-path-missing-file", ["train", "--model", "{tiny}", "--data.path", "missing.jsonl"], None,
     "data.datasets[0].path: missing.jsonl not found"),
    ("train-datasets-not-a-list", ["train", "r.yaml", "--model", "{tiny}"], _write("r.yaml", "data:\n  datasets: 5\n"),
     "data.datasets: expects a list of datasets, not int: --data.datasets a.jsonl,b.jsonl (or --data.path a.jsonl)"),
    ("train-datasets-item-not-a-dataset", ["train", "--model", "{tiny}", "data.datasets=[a.jsonl, 7]"], None,
     "data.datasets: item 1 (7) is not a dataset"),
    ("train-data-bad-row", ["train", "--model", "{tiny}", "--data.path", "d.jsonl"],
     _write("d.jsonl", '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
            '{"messages": [{"role": "user", "content": "q"}]}\n'), "d.jsonl:2: messages[0]: missing response"),
    ("serve-max-n-past-max-batch", ["serve", "--model", "{tiny}", "--port", "0", "--max_n", "16", "--max_batch", "8"],
     None, "max_n (16) must not exceed max_batch (8)"),
    ("gguf-missing-adapter", GGUF + ["--out", "o", "--adapter", "nowhere"], None, "adapter nowhere not found"),
    # --- jobs: identity and pipeline (issue 23)
    ("pipeline-ref-unknown-stage", ["pipeline", "p.yaml"],
     _write("p.yaml", "stages: [{stage: rows, job: synth_task, task: multiply, n: 5},\n"
                     "  {stage: train, job: train, data: {datasets: [{path: $rowz.dataset}]}},\n"
                     "  {stage: later, job: synth_task, task: add, n: 5}]\noutput_dir: p\n"),
     "stage 2 'train': data.datasets[0].path: $rowz.dataset: no stage is named 'rowz' (earlier stages: rows)"),
    ("pipeline-ref-later-stage", ["pipeline", "p.yaml"],
     _write("p.yaml", "stages: [{stage: rows, job: synth_task, task: multiply, n: 5},\n"
                     "  {stage: train, job: train, data: {datasets: [{path: $later.dataset}]}},\n"
                     "  {stage: later, job: synth_task, task: add, n: 5}]\noutput_dir: p\n"),
     "stage 2 'train': data.datasets[0].path: $later.dataset: stage 3 'later' runs after this one"),
    ("pipeline-ref-not-produced", ["pipeline", "p.yaml"],
     _write("p.yaml", "stages: [{stage: rows, job: synth_task, task: multiply, n: 5},\n"
                     "  {stage: train, job: train, data: {datasets: [{path: $rows.adapter}]}},\n"
                     "  {stage: later, job: synth_task, task: add, n: 5}]\noutput_dir: p\n"),
     "stage 1 'rows' (synth task) produces dataset, not adapter"),
    ("pipeline-ref-not-an-output", ["pipeline", "p.yaml"],
     _write("p.yaml", "stages: [{stage: rows, job: synth_task, task: multiply, n: 5},\n"
                     "  {stage: train, job: train, data: {datasets: [{path: $rows.data}]}},\n"
                     "  {stage: later, job: synth_task, task: add, n: 5}]\noutput_dir: p\n"),
     "$rows.data: 'data' is not an output: write $STAGE.OUTPUT"),
    ("pipeline-missing-input-stage-2", ["pipeline", "p.yaml"],
     _write("p.yaml", "stages: [{stage: rows, job: synth_task, task: multiply, n: 5},\n"
                     "  {stage: train, job: train, data: {datasets: [{path: $rows.dataset}, {path: no.jsonl}]}},\n"
                     "  {stage: later, job: synth_task, task: add, n: 5}]\noutput_dir: p\n"),
     "stage 2 'train': data.datasets[1].path: no.jsonl not found (resolved from the current folder"),
    ("pipeline-old-stage-folder-path", ["pipeline", "p.yaml"],
     _write("p.yaml", "stages: [{stage: rows, job: synth_task, task: multiply, n: 5},\n"
                     "  {stage: train, job: train, data: {datasets: [{path: p/2-rows/data.jsonl}]}},\n"
                     "  {stage: later, job: synth_task, task: add, n: 5}]\noutput_dir: p\n"),
     "stage 2 'train': data.datasets[0].path: p/2-rows/data.jsonl not found"),
    ("identity-no-name", ["identity", "--model", "{tiny}", "--author", "Lab"], None,
     "identity needs a name and an author"),
    ("identity-bad-identity-data-row", ["identity", "--model", "{tiny}", "--name", "Ada", "--author", "Lab",
                                        "--identity_data", "ids.jsonl"],
     _write("ids.jsonl", '{"instruction": "who are you?", "output": "I am {{NAME}}."}\n{"instruction": "hi"}\n'),
     "identity_data: "),
    ("identity-old-and-new-spelling", ["identity", "--name", "Ada", "--author", "Lab", "cutoff_len=256",
                                       "data.cutoff_len=128"], None,
     "cutoff_len: the old spelling of data.cutoff_len, which is set too: set data.cutoff_len only"),
    ("identity-missing-extra-data", ["identity", "--model", "{tiny}", "--name", "Ada", "--author", "Lab",
                                     "--data.datasets", "no.jsonl"], None, "no.jsonl not found"),
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
    assert len({c[0] for c in CASES}) == len(CASES) >= 80
