"""GRPO: the loss and its gradient equal TRL's GRPOTrainer on one fixed batch (grpo, dr_grpo and
dapo; with and without the KL term; ratio 1 as in training, and old log-probabilities that make
the clip bite), the advantages equal TRL's formula, a GRPO run resumes bit-identically after
SIGKILL, and a reward that only learning can earn is earned."""
import json
import math

import pytest
import torch
import yaml

from tests.train.test_dpo import _base_and_lora
from tests.train.test_train import train_cli, weights

PROMPTS = ["What is 2 + 3?", "Name a colour.", "Say hello to the team in one short sentence, please."]
G, L, T = 2, 7, 0.7


def _cfg(loss_type, beta, **over):
    from tunesmith.train.config import TrainConfig

    return TrainConfig(model="x", objective="grpo",
                       grpo={"loss_type": loss_type, "beta": beta, "num_generations": G, "max_completion_length": L,
                             "temperature": T, "epsilon": 0.2, "epsilon_high": 0.28, "rewards": [{"name": "label"}],
                             **over})


def _items(tokenizer):
    """Three prompts of different lengths, G completions each (random tokens of 1..L, some ending
    with the end-of-turn token), and fixed advantages of both signs."""
    g = torch.Generator().manual_seed(0)
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    items = []
    for k, q in enumerate(PROMPTS):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                            tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        for j in range(G):
            n = 1 + (3 * k + 2 * j) % L
            comp = torch.randint(100, 5000, (n,), generator=g).tolist()
            if j == 0:
                comp[-1] = eot
            adv = [1.3, -0.7, 0.4, -1.1, 2.0, -0.2][2 * k + j]
            items.append({"prompt_ids": ids, "completion_ids": comp, "advantage": adv, "masked": False})
    tokens = sum(len(i["completion_ids"]) for i in items)
    return [dict(i, batch_tokens=tokens) for i in items]


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta,correct_kl", [(0.0, True), (0.1, True), (0.1, False)])
@pytest.mark.parametrize("old", ["current", "shifted"])
def test_loss_and_gradient_equal_trl(loss_type, beta, correct_kl, old, tiny_model, tokenizer, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tunesmith.train.objectives import get

    base, lora = _base_and_lora(tiny_model)
    args = GRPOConfig(output_dir=str(tmp_path), loss_type=loss_type, beta=beta, use_bias_correction_kl=correct_kl,
                      epsilon=0.2, epsilon_high=0.28,
                      temperature=T, max_completion_length=L, num_generations=G, per_device_train_batch_size=G * 3,
                      report_to="none", use_cpu=True, bf16=False)  # TRL's default bf16 autocasts on CPU too
    trainer = GRPOTrainer(model=base, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=args,
                          train_dataset=Dataset.from_list([{"prompt": q} for q in PROMPTS]), processing_class=tokenizer,
                          peft_config=lora)
    model = trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # one micro-batch makes the step, as the Trainer would set

    obj = get("grpo")
    obj._configure(_cfg(loss_type, beta, kl_bias_correction=correct_kl))
    items = _items(tokenizer)
    batch = obj.collate(items, tokenizer.pad_token_id)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width = batch["completion_ids"].shape[1]
    inputs = {k: batch[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages")}
    inputs["num_items_in_batch"] = batch["completion_mask"].sum()
    with torch.no_grad():
        theirs_logps = trainer._get_per_token_logps_and_entropies(model, ids, mask, width)[0]
        if beta:
            with model.disable_adapter():
                inputs["ref_per_token_logps"] = trainer._get_per_token_logps_and_entropies(model, ids, mask, width)[0]
    if old == "shifted":  # ratios from 0.5 to 2: both clip bounds bite on tokens of both advantage signs
        shift = torch.linspace(-0.7, 0.7, theirs_logps.numel()).view_as(theirs_logps)
        inputs["old_per_token_logps"] = batch["old_logps"] = theirs_logps + shift

    model.zero_grad()
    theirs = trainer._compute_loss(model, inputs)
    theirs.backward()
    g_theirs = _grads(model)
    model.zero_grad()
    ours, metrics = obj.loss(model, batch, obj.count(items))
    ours.backward()
    g_ours = _grads(model)

    loss_diff = abs(float(ours) - float(theirs))
    grad_diff = max(float((g_ours[n] - g_theirs[n]).abs().max()) for n in g_theirs)
    print(f"TRL {loss_type} beta={beta} kl_correction={correct_kl} old={old}: loss {float(theirs):.6f}, "
          f"|Δloss| {loss_diff:.2e}, max |Δgrad| {grad_diff:.2e}")
    assert loss_diff < 1e-5 and grad_diff < 1e-5
    assert max(float(g.abs().max()) for g in g_theirs.values()) > 1e-3  # a real gradient was compared
    if beta:
        assert abs(float(metrics["kl"]) - trainer._metrics["train"]["kl"][-1]) < 1e-6
        assert float(metrics["kl"]) > 1e-4  # the adapter moved the policy from the reference


def test_advantages_equal_trls_formula():
    from tunesmith.train.rollout import advantages

    nan = math.nan
    per = torch.tensor([[1.0, nan], [0.0, nan], [nan, nan], [0.5, 1.0], [0.5, 1.0], [0.5, 1.0]])
    w = torch.tensor([1.0, 0.5])
    adv, rewards, zero = advantages(per, w, 3, "group")
    # group 1: rewards 1, 0, unscorable; mean .5, std sqrt(.5) → ±.5/(.7071+1e-4); the unscorable one 0
    s = math.sqrt(0.5) + 1e-4
    assert adv.tolist() == pytest.approx([0.5 / s, -0.5 / s, 0.0, 0.0, 0.0, 0.0], abs=1e-6)
    assert zero.tolist() == [False, False, False, True, True, True] and math.isnan(float(rewards[2]))
    adv, _, _ = advantages(per, w, 3, "none")
    assert adv.tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.0, 0.0])
    adv, _, _ = advantages(per[:2].clone(), w, 2, "batch")
    assert adv.tolist() == pytest.approx([0.5 / s, -0.5 / s], abs=1e-6)


def _grpo_recipe(tmp_path, base, out, prompts, **over):
    cfg = {"model": str(base), "output_dir": str(tmp_path / out), "progress": False, "objective": "grpo",
           "grpo": {"num_generations": 4, "max_completion_length": 6, "beta": 0.05, "temperature": 1.0,
                    "rewards": [{"name": "prefix", "options": {"text": "A"}}, {"name": "length",
                                                                               "options": {"max_chars": 12}}]},
           "data": {"datasets": [{"path": str(prompts)}], "cutoff_len": 64},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
           "train": {"lr": 5e-3, "max_steps": 6, "batch_size": 2, "grad_accum": 2, "save_every": 1, "keep_last": 2,
                     "seed": 7, "warmup": 1}}
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    f = tmp_path / f"{out}.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return f


def _write_prompts(path, n=8):
    path.write_text("".join(json.dumps({"instruction": f"Question {i}: say something.", "input": "",
                                        "output": "A"}) + "\n" for i in range(n)))
    return path


@pytest.mark.parametrize("autocast", ["off", "bf16"])
def test_grpo_sigkill_then_resume_is_bit_identical(tiny_model, tmp_path, autocast):
    """Also under ``train.autocast: bf16`` on the CPU, where the frozen weights are held in bf16 and the
    engine's rollouts run under the step's autocast (in its own thread: without it they could not run)."""
    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    train_cli(_grpo_recipe(tmp_path, tiny_model, "straight", prompts, train={"autocast": autocast}))
    broken = _grpo_recipe(tmp_path, tiny_model, "broken", prompts, train={"autocast": autocast})
    assert train_cli(broken, fault="step:3", check=False).returncode == -9
    train_cli(broken, "--resume")
    a, b = weights(tmp_path / "straight", "lora"), weights(tmp_path / "broken", "lora")
    assert a.keys() == b.keys() and a and all((a[k] == b[k]).all() for k in a)
    la = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()]
    keys = ("loss", "reward", "rewards/prefix/mean", "rewards/length/mean", "kl", "completions/mean_length",
            "frac_reward_zero_std")
    assert [[r.get(k) for k in keys] for r in la] == [[r.get(k) for k in keys] for r in lb]
    assert len(la) == 6 and all(k in la[-1] for k in keys + ("reward_std", "rewards/prefix/std"))
    assert la[-1]["kl"] > 0  # the adapter moved: the KL term to the adapter-off reference is live
    manifest = json.loads((tmp_path / "straight" / "manifest.json").read_text())
    assert manifest["kind"] == "grpo" and manifest["status"] == "done"
    assert manifest["schedule"]["autocast"] == autocast


QUESTIONS = ["What is the capital of France?", "Name a fruit.", "What colour is the sky?", "Name an animal.",
             "What is 2 + 2?", "Name a country in Asia.", "What do bees make?", "Name a planet."]


def test_a_reward_only_learning_earns(embedded_dir, tmp_path):
    """SmolLM2 rarely opens an answer with "One" (1 of its 16 first samples; "The", its likeliest first
    word at 0.15-0.52 here, would not show learning); rewarded for it, it does so in every sample within a
    few steps. Greedy base answers are not the point: the
    reward is measured on the samples the run itself draws, from the weights of that step."""
    from tunesmith.train import train
    from tunesmith.train.config import TrainConfig

    prompts = tmp_path / "q.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": q, "input": "", "output": "-"}) + "\n" for q in QUESTIONS))
    cfg = TrainConfig(model=str(embedded_dir), output_dir=str(tmp_path / "run"), progress=False, objective="grpo",
                      grpo={"num_generations": 4, "max_completion_length": 4,
                            "rewards": [{"name": "prefix", "options": {"text": "One"}}]},
                      data={"datasets": [{"path": str(prompts)}], "cutoff_len": 64},
                      lora={"r": 8, "alpha": 16, "dropout": 0.0},
                      train={"lr": 2e-3, "max_steps": 7, "batch_size": 4, "seed": 1, "warmup": 0,
                             "scheduler": "constant"})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core, as the suite's workers run: steady on a shared 2-core machine
    try:
        assert train(cfg) == 0
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["rewards/prefix/mean"] for r in rows]
    assert rewards[0] < 0.2 and rewards[-1] > 0.8, rewards


def test_prompt_rows_keep_what_the_reward_needs(tokenizer, tmp_path):
    from tunesmith.errors import UserError
    from tunesmith.tasks.arith import make_rows
    from tunesmith.tasks.rewards import build
    from tunesmith.train.config import TrainConfig
    from tunesmith.train.objectives.grpo import build_prompt_data

    rows = make_rows("multiply", [2, 2], 6, lang="en")
    f = tmp_path / "mul.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def cfg(cutoff):
        return TrainConfig(model="x", objective="grpo", grpo={"rewards": [{"name": "multiply"}]},
                           data={"datasets": [{"path": str(f)}], "cutoff_len": cutoff})

    train, val, report = build_prompt_data(cfg(64), tokenizer)
    assert len(train) == 6 and val == [] and report[0]["rows_used"] == 6
    answers, reward = {r["instruction"]: r["output"] for r in rows}, build("multiply")
    for r in train:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}], add_generation_prompt=True,
                                            tokenize=True)
        assert r["prompt_ids"] == list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        assert r["expect"] == answers[r["prompt"]] and reward(r["expect"], r) == 1.0 and reward("12", r) == 0.0
    with pytest.raises(UserError, match="no prompt fits data.cutoff_len=8"):
        build_prompt_data(cfg(8), tokenizer)


@pytest.mark.parametrize("over,message", [
    ({"grpo": {}}, "grpo.rewards: name at least one reward"),
    ({"grpo": {"rewards": [{"name": "multiply", "options": {"x": 1}}]}}, "reward 'multiply' takes step_weight; got x"),
    ({"grpo": {"rewards": [{"name": "multiply", "options": {"step_weight": 2}}]}}, "step_weight must be a number from 0 to 1"),
    ({"nproc": 2}, "grpo runs in one process for now"),
    ({"data": {"val_size": 0.1}}, "grpo has no validation loss"),
    ({"train": {"packing": True}}, "train.packing: grpo")])
def test_bad_grpo_recipes_are_one_line(over, message):
    from pydantic import ValidationError

    from tunesmith.train.config import TrainConfig

    body = {"model": "x", "objective": "grpo", "grpo": {"rewards": [{"name": "label"}]}, **over}
    with pytest.raises(ValidationError, match=message):
        TrainConfig(**body)


@pytest.mark.parametrize("method,adapter,beta,copied", [("lora", None, 0.1, False), ("full", None, 0.1, True),
                                                        ("lora", "ADAPTER", 0.1, True), ("full", None, 0.0, False)])
def test_the_reference_is_the_starting_policy(tiny_model, tmp_path, method, adapter, beta, copied):
    """The adapter switched off where that is the starting policy; else a frozen copy (and none without KL)."""
    from transformers import AutoModelForCausalLM

    from tunesmith.train.config import TrainConfig
    from tunesmith.train.objectives import get

    if adapter:
        (tmp_path / "adapter_config.json").write_text("{}")
    cfg = TrainConfig(model="x", objective="grpo", method=method, adapter=str(tmp_path) if adapter else None,
                      grpo={"beta": beta, "rewards": [{"name": "label"}]})
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    obj = get("grpo")
    obj.attach(model, cfg)
    assert (obj.ref is not None) is copied
    if copied:
        assert obj.ref is not model and not any(p.requires_grad for p in obj.ref.parameters())
        assert all(torch.equal(a, b) for a, b in zip(obj.ref.parameters(), model.parameters()))


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_the_loss_does_not_depend_on_the_micro_batches(loss_type, tiny_model, tokenizer):
    """Each normaliser is taken over the global batch: one pass over 6 completions, or passes over
    groups of 2 + 4 (as accumulation would cut it), give the same loss and gradient."""
    from peft import get_peft_model

    from tunesmith.train.objectives import get

    base, lora = _base_and_lora(tiny_model)
    model = get_peft_model(base, lora)
    obj = get("grpo")
    obj._configure(_cfg(loss_type, 0.1))
    items = _items(tokenizer)
    norm = obj.count(items)

    def run(parts):
        model.zero_grad()
        total = 0.0
        for part in parts:
            loss, _ = obj.loss(model, obj.collate(part, tokenizer.pad_token_id), norm)
            loss.backward()
            total += float(loss)
        return total, _grads(model)

    whole, g_whole = run([items])
    split, g_split = run([items[:2], items[2:], []])  # an empty micro-batch contributes nothing
    assert abs(whole - split) < 1e-6
    assert max(float((g_whole[n] - g_split[n]).abs().max()) for n in g_whole) < 1e-6


def test_dynamic_sampling_replaces_groups_without_signal(tiny_model, tokenizer, monkeypatch):
    """DAPO's dynamic sampling: the step's two prompts give groups whose rewards are all equal; with
    ``dynamic_sample`` groups of other training prompts whose rewards differ take their places (each
    micro-batch keeps its size; drawn the same way twice: resume), and without it the step keeps them
    (advantage 0 everywhere)."""
    from peft import get_peft_model

    from tunesmith.tasks import rewards
    from tunesmith.train.objectives import get

    def parity(completion, row):  # a "flat" prompt earns the same for every answer: no signal
        return 0.5 if row.get("prompt", "").startswith("flat") else float(len(completion) % 2)

    monkeypatch.setitem(rewards.REWARDS, "parity", parity)
    base, lora = _base_and_lora(tiny_model)
    model = get_peft_model(base, lora)

    def row(q):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        return {"prompt_ids": list(ids["input_ids"] if hasattr(ids, "keys") else ids), "prompt": q, "system": None,
                "expect": None, "think": False}

    flat = [row(f"flat question {i}") for i in range(3)]
    lively = [row(f"lively question {i}") for i in range(4)]
    got = []
    for on in (False, True, True):
        obj = get("grpo")
        obj._configure(_cfg("dapo", 0.0, rewards=[{"name": "parity"}], dynamic_sample=on, num_generations=8,
                            temperature=1.0, max_completion_length=8))
        obj.pool = flat + lively
        parts, metrics = obj.rollout(model, tokenizer, [flat[:1], flat[1:2]], 3, 5)
        assert [len(p) for p in parts] == [8, 8]
        got.append(([[(i["prompt_ids"], i["completion_ids"], i["advantage"]) for i in p] for p in parts], metrics))
    (off, m_off), (on, m_on), (again, _) = got
    assert m_off["frac_reward_zero_std"] == 1.0 and all(a == 0 for p in off for _, _, a in p)
    assert "dynamic/replaced" not in m_off
    assert m_on["dynamic/frac_zero_std_sampled"] == 1.0 and m_on["dynamic/replaced"] == 2
    assert m_on["frac_reward_zero_std"] == 0.0 and m_on["dynamic/extra_prompts"] >= 2
    lively_ids = [r["prompt_ids"] for r in lively]
    assert all(ids in lively_ids for p in on for ids, _, _ in p) and any(a != 0 for p in on for _, _, a in p)
    assert on == again
