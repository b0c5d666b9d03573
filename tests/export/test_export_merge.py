"""``export merge``: merged logits match the unmerged model, chains follow manifests, and
every refusal is one line that leaves nothing on disk."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunesmith.cli import main
from tunesmith.export import merge as M
from tunesmith.manifest import model_hash, read_manifest

TEXT = "<|im_start|>user\nWho are you, and what is 17 times 23?<|im_end|>\n<|im_start|>assistant\n"


def make_adapter(base: Path, out: Path, seed: int, targets="all-linear", manifest: bool = True,
                 base_name: str | None = None) -> Path:
    """A LoRA adapter saved as a training run would: peft files, tokenizer, manifest.json.
    lora_B is random (init_lora_weights=False), so the adapter really changes the model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(seed)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    pm.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    if manifest:
        (out / "manifest.json").write_text(json.dumps({
            "kind": "sft", "status": "done", "method": "lora", "parent": None,
            "base_model": {"spec": str(base), "path": str(Path(base).resolve()), "hash": model_hash(base)}}))
    if base_name is not None:
        cfg = json.loads((out / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = base_name
        (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def build_model(path: Path, tokenizer_dir: Path, **shape) -> Path:
    """A random llama with a shape other than the shared tiny model's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    dims = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1) | shape
    cfg = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=True, **dims)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def logits_of(model, tok) -> torch.Tensor:
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits[0].float()


def plain_load(folder: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()


def run(*args) -> int:
    return main(["export", "merge", *map(str, args)])


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("merge")


@pytest.fixture(scope="module")
def adapter_a(work, tiny_model):
    return make_adapter(tiny_model, work / "a", seed=1)


@pytest.fixture(scope="module")
def merged_a(work, tiny_model, adapter_a):
    """tiny + A, in small shards; `model` left out, so it comes from A's manifest."""
    assert run("--adapter", adapter_a, "--out", work / "m1", "--shard_size", "1MB") == 0
    return work / "m1"


def test_merged_logits_equal_base_plus_adapter(merged_a, tiny_model, adapter_a, tokenizer, capsys):
    from peft import PeftModel

    ref = logits_of(PeftModel.from_pretrained(plain_load(tiny_model), str(adapter_a)), tokenizer)
    base = logits_of(plain_load(tiny_model), tokenizer)
    got = logits_of(plain_load(merged_a), tokenizer)  # plain transformers, no tunesmith
    assert (got - base).abs().max() > 0.05  # the adapter matters, so a dropped one could not pass
    assert torch.allclose(got, ref, atol=1e-4, rtol=0)
    files = {p.name for p in merged_a.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
            "chat_template.jinja", "config.yaml", "manifest.json"} <= files
    assert len([f for f in files if f.endswith(".safetensors")]) >= 2  # 1MB shards
    man = read_manifest(merged_a)
    assert man["kind"] == "merge" and man["status"] == "done"
    assert man["base_model"]["hash"] == model_hash(tiny_model)
    assert man["adapters"][0]["path"] == str(adapter_a) and man["adapters"][0]["manifest"]["kind"] == "sft"
    assert man["parent"] == str(adapter_a) and man["output_hash"] == model_hash(merged_a)
    v = man["verification"]
    assert v["dtype"] == "fp32" and v["probes"] == 4 and 0 <= v["max_abs_diff"] <= v["tolerance"] < 1e-3


def test_two_adapters_in_sequence_equal_both_applied(work, tiny_model, adapter_a, merged_a, tokenizer, capsys):
    from peft import PeftModel

    b = make_adapter(merged_a, work / "b", seed=2)  # B trained on the merge of tiny + A
    out = work / "m2"
    assert run("--model", tiny_model, "--adapter", f"{adapter_a},{b}", "--out", out) == 0
    summary = capsys.readouterr().out.strip()
    assert summary.startswith(f"merged 2 adapters into {tiny_model} → {out} (max |Δlogit| = ")
    # Independent reference: for LoRA, folding A then B is W + ΔA + ΔB, i.e. both adapters active at once.
    pm = PeftModel.from_pretrained(plain_load(tiny_model), str(adapter_a), adapter_name="a")
    pm.load_adapter(str(b), adapter_name="b")
    pm.base_model.set_adapter(["a", "b"])
    ref = logits_of(pm, tokenizer)
    assert torch.allclose(logits_of(plain_load(out), tokenizer), ref, atol=1e-4, rtol=0)
    # The same chain from the intermediate merge gives the same weights.
    assert run("--model", merged_a, "--adapter", b, "--out", work / "m2b") == 0
    assert torch.allclose(logits_of(plain_load(work / "m2b"), tokenizer), ref, atol=1e-4, rtol=0)
    # The lineage walks back: m2 → parent B → B's base m1 → m1's base tiny (+ A).
    man = read_manifest(out)
    assert [a["path"] for a in man["adapters"]] == [str(adapter_a), str(b)] and man["parent"] == str(b)
    m1 = Path(read_manifest(Path(man["parent"]))["base_model"]["path"])
    assert m1 == merged_a and read_manifest(m1)["base_model"]["path"] == str(tiny_model.resolve())
    assert read_manifest(m1)["adapters"][0]["path"] == str(adapter_a)
    # B without A, or B before A, is not the chain B was trained on.
    for adapters in (str(b), f"{b},{adapter_a}"):
        assert run("--model", tiny_model, "--adapter", adapters, "--out", work / "bad") == 1
        line = error_line(capsys)
        assert f"adapter {b} was trained on {tiny_model.resolve()} + {adapter_a}" in line and "--model" in line
        assert not (work / "bad").exists()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("how", ["tamper", "zero-tolerance-bf16", "tied-lm-head"])
def test_wrong_merge_fails_and_leaves_nothing(how, work, tiny_model, adapter_a, monkeypatch, capsys):
    out = work / "new" / f"wrong-{how}"  # its parent is made for it, and removed again
    args = ["--model", tiny_model, "--adapter", adapter_a, "--out", out]
    if how == "tamper":
        save = M._save_model

        def perturbed(model, folder, size):  # a merge bug: one weight off by 1%
            with torch.no_grad():
                model.model.layers[0].mlp.down_proj.weight.mul_(1.01)
            save(model, folder, size)

        monkeypatch.setattr(M, "_save_model", perturbed)
    elif how == "tied-lm-head":  # a real wrong merge: tiny ties lm_head to the embeddings
        with torch.random.fork_rng():
            args[3] = make_adapter(tiny_model, work / "tied", seed=4, targets=["q_proj", "lm_head"])
    else:
        args += ["--dtype", "bf16", "--tolerance", "0"]
    assert run(*args) == 1
    line = error_line(capsys)
    assert "merge verification failed: max |Δlogit| = " in line
    assert ("which this base ties together" in line) == (how == "tied-lm-head")
    assert not (work / "new").exists() and _leftovers(work) == []


def test_adapter_manifest_names_another_base(work, tiny_model, adapter_a, capsys):
    bad = work / "other-base"
    shutil.copytree(adapter_a, bad)
    man = json.loads((bad / "manifest.json").read_text())
    man["base_model"] = {"spec": "x", "path": str(work / "gone"), "hash": "0" * 64}
    (bad / "manifest.json").write_text(json.dumps(man))
    assert run("--model", tiny_model, "--adapter", bad, "--out", work / "nope") == 1
    line = error_line(capsys)
    assert f"adapter {bad} was trained on {work / 'gone'} (hash 0000000000…, no longer on disk)" in line
    assert not (work / "nope").exists()
    # check_base: false skips the lineage check; shapes fit, so this merge goes through.
    assert run("--model", tiny_model, "--adapter", bad, "--out", work / "forced", "--check_base", "false") == 0


@pytest.mark.parametrize("shape,name,expect", [
    ({"hidden_size": 32, "intermediate_size": 64}, "some-org/wider-model", "size mismatch for"),
    ({"num_hidden_layers": 3}, "some-org/deeper-model", "of its weights match no layer"),
    ({"hidden_size": 32, "intermediate_size": 64}, None, "was trained on"),  # names a local folder
])
def test_adapter_for_another_shape_without_manifest(shape, name, expect, work, tiny_model, embedded_dir, capsys):
    key = "-".join(f"{k}{v}" for k, v in shape.items()) + ("-hub" if name else "-local")
    other = build_model(work / f"base-{key}", embedded_dir, **shape)
    ad = make_adapter(other, work / f"ad-{key}", seed=3, manifest=False, base_name=name)
    assert run("--model", tiny_model, "--adapter", ad, "--out", work / "nope") == 1
    line = error_line(capsys)
    assert f"adapter {ad}" in line and expect in line
    if name:
        assert f"does not fit {tiny_model.resolve()}" in line
    assert not (work / "nope").exists() and _leftovers(work) == []


def test_quantized_base_is_refused_in_one_line(work, tiny_model, adapter_a):
    q = work / "quantized"
    q.mkdir()
    for f in tiny_model.iterdir():
        (q / f.name).symlink_to(f)
    (q / "config.json").unlink()
    cfg = json.loads((tiny_model / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (q / "config.json").write_text(json.dumps(cfg))
    p = subprocess.run([sys.executable, "-m", "tunesmith.cli", "export", "merge", "--model", str(q),
                        "--adapter", str(adapter_a), "--out", str(work / "nope")], capture_output=True, text=True)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "quantized model (bitsandbytes)" in p.stderr
    assert "merge into the unquantized base" in p.stderr and not (work / "nope").exists()


def test_out_must_be_new_unless_overwrite(work, tiny_model, adapter_a, capsys):
    taken = work / "taken"  # a user's folder: never replaced, not even with --overwrite
    taken.mkdir()
    (taken / "old.txt").write_text("x")
    for extra in ((), ("--overwrite", "true")):
        assert run("--model", tiny_model, "--adapter", adapter_a, "--out", taken, *extra) == 1
        assert "holds files tunesmith did not write" in error_line(capsys) and (taken / "old.txt").exists()
    out = work / "merged"  # an earlier merge: replaced only with --overwrite
    assert run("--model", tiny_model, "--adapter", adapter_a, "--out", out) == 0
    capsys.readouterr()
    assert run("--model", tiny_model, "--adapter", adapter_a, "--out", out) == 1
    assert "holds what an earlier `export merge` run wrote: pass --overwrite" in error_line(capsys)
    assert run("--model", tiny_model, "--adapter", adapter_a, "--out", out, "--overwrite", "true") == 0
    assert read_manifest(out)["kind"] == "merge" and (out / ".tunesmith.json").is_file()
    assert run("--model", tiny_model, "--adapter", adapter_a, "--out", tiny_model.parent, "--overwrite", "true") == 1
    assert "holds the input" in error_line(capsys)
    assert run("--model", tiny_model, "--adapter", tiny_model, "--out", work / "nope") == 1
    assert "use it as --model" in error_line(capsys)
    assert run("--model", tiny_model, "--adapter", adapter_a, "--out", work / "nope", "--shard_size", "big") == 2
    assert "shard_size" in error_line(capsys)


def test_a_rerun_removes_the_build_folder_a_killed_run_left(tmp_path, tiny_model, adapter_a):
    """A SIGKILLed merge leaves ``.<out>.tmp-<pid>@<host>`` (half a model); the rerun for the same
    out removes it once its process is gone, and keeps one whose process still runs."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = tmp_path / "m"
    host = M.build_dir_for(out).name.rpartition("@")[2]
    stale, running = tmp_path / f".m.tmp-{gone.pid}@{host}", tmp_path / f".m.tmp-{os.getppid()}@{host}"
    for d in (stale, running):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"\0" * 1000)  # cut off by the kill
    assert run("--model", tiny_model, "--adapter", adapter_a, "--out", out) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, "m"])
    assert read_manifest(out)["kind"] == "merge"


@pytest.mark.slow
def test_embedded_model_bf16_merge_passes(tmp_path, embedded_dir, tokenizer, capsys):
    ad = make_adapter(embedded_dir, tmp_path / "ad", seed=0, targets=["q_proj", "v_proj"])
    out = tmp_path / "merged"
    assert run("--model", embedded_dir, "--adapter", ad, "--out", out, "--probes", "2") == 0
    man = read_manifest(out)
    v = man["verification"]
    assert v["dtype"] == "bf16" and json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert v["max_abs_diff"] <= v["tolerance"]
    # The adapter moves the logits by more than the tolerance: verification would catch it missing.
    base = logits_of(plain_load(embedded_dir, torch.bfloat16), tokenizer)
    merged = logits_of(plain_load(out, torch.bfloat16), tokenizer)
    assert (merged - base).abs().max() > v["tolerance"]
