"""Preference objectives: the numbers equal TRL's (DPO, IPO in DPOTrainer; SimPO in CPOTrainer),
and a DPO run goes through the same loop as SFT (exact resume, eval metrics, bad data)."""
import json
import math

import pytest
import torch
import yaml

from tests.train.test_train import train_cli, weights

PAIRS = [("What is your name?", "I am Nova, made by Acme.", "I am an AI assistant."),
         ("Who built you?", "Acme built me.", "I was trained by a large company, and I am happy to help."),
         ("Say something about yourself.", "I'm Nova.", "I am a language model with no name.")]


def write_pairs(path, n=12):
    rows = [{"messages": [{"role": "user", "content": f"{q} ({i})"}],
             "chosen": {"role": "assistant", "content": c}, "rejected": {"role": "assistant", "content": r}}
            for i in range(n) for q, c, r in PAIRS[i % 3:i % 3 + 1]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(kind, beta=0.3, gamma=0.7, smoothing=0.0):
    from tunesmith.train.config import TrainConfig

    return TrainConfig(model="x", objective=kind,
                       pref={"beta": beta, "gamma": gamma, "label_smoothing": smoothing})


def _base_and_lora(tiny_model):
    """The tiny base model and a LoRA config with random A and B (init_lora_weights=False), so
    the policy differs from the reference. TRL wraps the model itself: given an already
    wrapped PeftModel it would take a copy of the adapter as the reference instead."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    return base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)


def _ours(kind, tiny_model, tokenizer):
    from tunesmith.data.types import Conversation, PreferencePair, Turn
    from tunesmith.train.objectives import get

    obj = get(kind)
    obj.pref = _cfg(kind).pref
    from tunesmith.data.render import render

    rows = []
    for q, c, r in PAIRS:
        prompt = Conversation([Turn("user", q)])
        pair = PreferencePair(prompt, Turn("assistant", c), Turn("assistant", r))
        rows.append({k: render(Conversation(prompt.turns + [t]), tokenizer, None, True)
                     for k, t in (("chosen", pair.chosen), ("rejected", pair.rejected))})
    return obj, rows


def _trl_examples(rows):
    """Our rendered rows as TRL's tokenized examples: prompt_ids, then the scored answer tokens
    (the template's newline after the end-of-turn token is not scored and, the model being
    causal, does not change the scores before it)."""
    out = []
    for r in rows:
        ex = {}
        for k in ("chosen", "rejected"):
            ids, labels = r[k]["input_ids"], r[k]["labels"]
            first = next(i for i, t in enumerate(labels) if t != -100)
            last = max(i for i, t in enumerate(labels) if t != -100)
            ex["prompt_ids"] = ids[:first]
            ex[f"{k}_ids"] = ids[first:last + 1]
        out.append(ex)
    return out


@pytest.mark.parametrize("kind", ["dpo", "ipo"])
def test_dpo_and_ipo_equal_trl(kind, tiny_model, tokenizer, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    base, lora = _base_and_lora(tiny_model)
    obj, rows = _ours(kind, tiny_model, tokenizer)
    args = DPOConfig(output_dir=str(tmp_path), beta=0.3, loss_type=["sigmoid" if kind == "dpo" else "ipo"],
                     report_to="none", use_cpu=True, per_device_train_batch_size=len(rows))
    data = Dataset.from_list([{"prompt": q, "chosen": c, "rejected": r} for q, c, r in PAIRS])
    trainer = DPOTrainer(model=base, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    trainer.model.eval()
    inputs = trainer.data_collator(_trl_examples(rows))
    with torch.no_grad():
        theirs = float(trainer.compute_loss(trainer.model, inputs))
        batch = obj.collate(rows, tokenizer.pad_token_id)
        loss, metrics = obj.loss(trainer.model, batch, obj.count(rows))
    assert abs(float(loss) - theirs) < 1e-5, (float(loss), theirs)
    logged = trainer._metrics["eval"]  # the model is in eval mode (no dropout), so TRL files them as eval
    for name in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"):
        assert abs(float(metrics[name]) - logged[name][-1]) < 1e-5, name
    assert abs(float(metrics["rewards/margins"])) > 1e-3  # the adapter moved the policy: a real comparison


def test_simpo_equals_trl_cpo(tiny_model, tokenizer, tmp_path):
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    base, lora = _base_and_lora(tiny_model)
    obj, rows = _ours("simpo", tiny_model, tokenizer)
    args = CPOConfig(output_dir=str(tmp_path), beta=0.3, loss_type="simpo", simpo_gamma=0.7, cpo_alpha=0.0,
                     report_to="none", use_cpu=True)
    data = Dataset.from_list([{"prompt": q, "chosen": c, "rejected": r} for q, c, r in PAIRS])
    trainer = CPOTrainer(model=base, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    trainer.model.eval()
    batch = obj.collate(rows, tokenizer.pad_token_id)
    half = len(rows)
    theirs_in = {}
    for k, sl in (("chosen", slice(0, half)), ("rejected", slice(half, None))):
        theirs_in[f"{k}_input_ids"] = batch["input_ids"][sl]
        theirs_in[f"{k}_attention_mask"] = batch["attention_mask"][sl]
        theirs_in[f"{k}_labels"] = batch["labels"][sl]
    with torch.no_grad():
        theirs, their_metrics = trainer.get_batch_loss_metrics(trainer.model, theirs_in)
        loss, metrics = obj.loss(trainer.model, batch, obj.count(rows))
    assert abs(float(loss) - float(theirs)) < 1e-5
    for name in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"):
        assert abs(float(metrics[name]) - their_metrics[name]) < 1e-5, name


def _dpo_recipe(tmp_path, base, out, **over):
    cfg = {"model": str(base), "output_dir": str(tmp_path / out), "progress": False, "objective": "dpo",
           "pref": {"beta": 0.5, "sft_weight": 0.2},
           "data": {"datasets": [{"path": str(write_pairs(tmp_path / "pairs.jsonl"))}], "cutoff_len": 64,
                    "val_size": 0.25},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
           "train": {"lr": 5e-3, "max_steps": 8, "batch_size": 2, "grad_accum": 2, "save_every": 1, "keep_last": 3,
                     "seed": 7, "warmup": 2, "eval_every": 4}}
    cfg.update(over)
    f = tmp_path / f"{out}.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return f


def test_dpo_sigkill_then_resume_is_bit_identical(tiny_model, tmp_path):
    train_cli(_dpo_recipe(tmp_path, tiny_model, "straight"))
    broken = _dpo_recipe(tmp_path, tiny_model, "broken")
    assert train_cli(broken, fault="step:3", check=False).returncode == -9
    train_cli(broken, "--resume")
    a, b = weights(tmp_path / "straight", "lora"), weights(tmp_path / "broken", "lora")
    assert a.keys() == b.keys() and a and all((a[k] == b[k]).all() for k in a)
    la = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("loss") for r in la] == [r.get("loss") for r in lb]
    first = la[0]
    # Step 1: LoRA's B starts at zero, so the policy is the reference: rewards 0, DPO loss ln 2
    # plus the SFT term (0.2 × the chosen answers' per-token NLL, > 0).
    assert first["rewards/chosen"] == 0 and first["rewards/margins"] == 0 and first["loss"] > math.log(2)
    assert any("eval_rewards/accuracies" in r for r in la)
    manifest = json.loads((tmp_path / "straight" / "manifest.json").read_text())
    assert manifest["kind"] == "dpo" and manifest["status"] == "done" and "eval_rewards/margins" in manifest["metrics"]


def test_full_method_reference_is_a_frozen_copy(tiny_model, tmp_path):
    run = tmp_path / "full"
    train_cli(_dpo_recipe(tmp_path, tiny_model, "full", method="full", pref={"beta": 0.5},
                          train={"lr": 1e-3, "max_steps": 3, "batch_size": 4, "seed": 1, "warmup": 0}))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert abs(rows[0]["loss"] - math.log(2)) < 1e-6  # step 1: policy == frozen copy
    train = [r for r in rows if "loss" in r]
    assert train[-1]["rewards/margins"] > 0  # the policy moved away from the copy, toward the chosen answers


@pytest.mark.parametrize("over,message", [
    ({"objective": "dpo", "data": {"datasets": [{"path": "SFT"}]}}, "no chosen/rejected answers"),
    ({"method": "qlora", "device": "cpu"}, "qlora needs a CUDA GPU with bitsandbytes; use method: lora on CPU"),
    ({"objective": "ipo", "pref": {"label_smoothing": 0.1}}, "IPO has no label smoothing"),
])
def test_bad_preference_recipes_are_one_line(tiny_model, tmp_path, over, message):
    from tests.train.test_train import write_toy

    sft = write_toy(tmp_path / "toy.jsonl")
    if "data" in over:
        over["data"]["datasets"][0]["path"] = str(sft)
    f = _dpo_recipe(tmp_path, tiny_model, "bad", **over)
    r = train_cli(f, check=False)
    assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad").exists()

