"""The one engine: its greedy answers are transformers' own, token for token; named adapters answer per
row in one batch; a per-row constraint limits the next token; the queue is bounded and a cancelled
row frees its slot; an engine nobody holds is freed with its decode thread."""
from __future__ import annotations

import gc
import json
import queue
import subprocess
import sys
import time
import weakref

import pytest

from tunesmith.errors import UserError
from tunesmith.infer import Engine, GenParams, Job, QueueFull

CONVS = [[{"role": "user", "content": "What is the capital of France?"}],
         [{"role": "system", "content": "Answer in one long paragraph."},
          {"role": "user", "content": "Name three fruits, and explain why they are good for you."}],
         [{"role": "user", "content": "hi"}],
         [{"role": "user", "content": "Write a haiku about the sea."}]]


@pytest.fixture(scope="module")
def base(embedded_dir):
    return Engine.load(str(embedded_dir), dtype="fp32", device="cpu", max_batch=8)


def run_jobs(engine: Engine, *specs: dict) -> list[list]:
    """Submit one job per ``specs`` (Job's arguments) together — one prefill — and collect each job's
    rows: ``[[(ids, text, finish), …n], …]``."""
    q = queue.Queue()
    jobs = [Job(events=q, **s) for s in specs]
    engine.submit(*jobs)
    got = {id(j): [[[], "", None] for _ in range(j.n)] for j in jobs}
    left = sum(j.n for j in jobs)
    while left:
        ev = q.get(timeout=300)
        assert ev.finish != "error", ev.text
        row = got[id(ev.job)][ev.index]
        row[0] += ev.ids
        row[1] += ev.text
        row[2] = ev.finish
        left -= ev.finish is not None
    return [[tuple(r) for r in got[id(j)]] for j in jobs]


def engine_ids(engine: Engine, prompts: list[list[int]], max_new: int) -> list[list[int]]:
    rows = run_jobs(engine, *[dict(prompt=p, params=GenParams(max_new_tokens=max_new)) for p in prompts])
    return [r[0][0] for r in rows]


def hf_ids(engine: Engine, prompts: list[list[int]], max_new: int) -> list[list[int]]:
    """transformers' ``generate`` (greedy) on the same rows, left-padded as the engine pads them."""
    import torch

    width, pad = max(map(len, prompts)), engine.tok.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = engine.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new,
                                    eos_token_id=engine.stop_ids, pad_token_id=pad)
    rows = []
    for row in out[:, width:].tolist():
        end = next((i for i, t in enumerate(row) if t in engine.stop_ids), len(row))
        rows.append(row[:end])
    return rows


def test_greedy_equals_transformers_generate_single_and_batched(base):
    prompts = [base.prompt_ids(c) for c in CONVS]
    assert len({len(p) for p in prompts}) == len(prompts)  # rows of different lengths: real left padding
    for p in prompts:
        assert engine_ids(base, [p], 32) == hf_ids(base, [p], 32)
    base.stats["max_rows"] = 0
    together = engine_ids(base, prompts, 32)
    assert base.stats["max_rows"] == len(prompts)  # they were decoded as one batch
    assert together == hf_ids(base, prompts, 32)
    lengths = sorted(len(x) for x in together)
    assert lengths[0] < lengths[-1] == 32  # some rows ended early (and left the batch), one ran to the limit


def test_stop_strings_cut_sync_answers_and_streams(base):
    q, p = CONVS[1], GenParams(max_new_tokens=24)
    full = base.generate([q], p)[0]
    word = full.split()[3]
    cut = p.model_copy(update={"stop": [word, "zzqq"]})
    assert base.generate([q], cut) == [full[:full.index(word)].strip()]
    assert "".join(base.stream(q, cut)).strip() == full[:full.index(word)].strip()


class OnlyThen:
    """A hand-written constraint: allows exactly ``ids`` in order, then only ``end``."""

    def __init__(self, ids: list[int], end: int):
        self.ids, self.end, self.at = list(ids), end, 0

    def allowed(self) -> int:
        return self.ids[self.at] if self.at < len(self.ids) else self.end

    def mask(self, logits):
        import torch

        out = torch.full_like(logits, float("-inf"))
        out[self.allowed()] = logits[self.allowed()]
        return out

    def advance(self, token_id: int) -> None:
        assert token_id == self.allowed()
        self.at += 1

    def fork(self) -> "OnlyThen":
        return OnlyThen(self.ids, self.end)


class Repeat:
    """One token again and again, until ``is_done`` says three were taken; no ``fork``: one row only."""

    def __init__(self, token: int):
        self.token, self.at = token, 0

    def mask(self, logits):
        import torch

        out = torch.full_like(logits, float("-inf"))
        out[self.token] = logits[self.token]
        return out

    def advance(self, token_id: int) -> None:
        self.at += 1

    def is_done(self) -> bool:
        return self.at == 3


def test_a_constraint_limits_every_row_before_greedy_and_sampling(base):
    yes = base.tok("yes", add_special_tokens=False)["input_ids"]
    c = OnlyThen(yes, base.stop_ids[0])
    q = [[{"role": "user", "content": "What is the capital of France?"}]]
    assert base.generate(q, GenParams(max_new_tokens=10)) != ["yes"]  # the model would not say it on its own
    assert base.generate(q, GenParams(max_new_tokens=10).with_constraint(c)) == ["yes"]
    hot = GenParams(max_new_tokens=10, temperature=1.5, top_k=50, seed=1).with_constraint(c)
    assert base.generate(q * 3, hot) == ["yes"] * 3  # one fork per row
    (rows,) = run_jobs(base, dict(prompt=base.prompt_ids(q[0]), params=hot, n=2))
    assert [(ids, text, finish) for ids, text, finish in rows] == [(yes, "yes", "stop")] * 2
    assert c.at == 0  # the caller's object is never advanced: each row has its own fork


def test_is_done_ends_the_row_with_stop_and_a_constraint_without_fork_serves_one_row(base):
    no = base.tok(" no", add_special_tokens=False)["input_ids"][0]
    p = GenParams(max_new_tokens=10).with_constraint(Repeat(no))
    ((row,),) = run_jobs(base, dict(prompt=base.prompt_ids(CONVS[0]), params=p))
    assert row == ([no] * 3, " no no no", "stop")
    with pytest.raises(ValueError, match="no fork"):
        Job(base.prompt_ids(CONVS[0]), p, n=2)
    with pytest.raises(ValueError, match="no fork"):
        base.generate(CONVS[:2], p)


def test_the_constraint_is_no_config_field():
    from tunesmith.config import leaf_fields

    assert "constraint" not in leaf_fields(GenParams) and "constraint" not in GenParams().model_dump()


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, embedded_dir):
    """Two real LoRA adapters with random non-zero weights (they change the answers), saved by peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = {}
    for seed, name in ((1, "a"), (2, "b")):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
        pm = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False))
        out[name] = tmp_path_factory.mktemp("lora") / name
        pm.save_pretrained(out[name])
    return out


def test_named_adapters_answer_per_row_in_one_batch(embedded_dir, adapters):
    e = Engine.load(str(embedded_dir), dtype="fp32", device="cpu", named_adapters={k: str(v) for k, v in
                                                                                    adapters.items()})
    prompt, p = e.prompt_ids(CONVS[0]), GenParams(max_new_tokens=16)
    alone = {a: run_jobs(e, dict(prompt=prompt, params=p, adapter=a))[0][0][1] for a in ("a", "b", None)}
    assert len(set(alone.values())) == 3  # each adapter really changes the answer
    e.stats["max_rows"] = 0
    mixed = run_jobs(e, *[dict(prompt=prompt, params=p, adapter=a) for a in ("a", "b", None)])
    assert e.stats["max_rows"] == 3
    assert {a: rows[0][1] for a, rows in zip(("a", "b", None), mixed)} == alone
    assert e.generate([CONVS[0]], p, adapter="b") == [alone["b"].strip()]
    with pytest.raises(UserError, match="adapter 'c' is not loaded"):
        e.generate([CONVS[0]], p, adapter="c")


def test_a_named_adapter_of_another_base_is_one_line(embedded_dir, tiny_model, adapters, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    pm = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                        LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    pm.save_pretrained(tmp_path / "other")
    with pytest.raises(UserError, match="was trained on .*but would be applied to"):  # its lineage says so
        Engine.load(str(embedded_dir), named_adapters={"a": str(adapters["a"]), "other": str(tmp_path / "other")})
    cfg = tmp_path / "other" / "adapter_config.json"  # no lineage to check: the weights' shapes tell
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "base_model_name_or_path": "someone/else"}))
    with pytest.raises(UserError, match="does not fit .*was it trained on another base model"):
        Engine.load(str(embedded_dir), named_adapters={"a": str(adapters["a"]), "other": str(tmp_path / "other")})


def test_the_queue_is_bounded_and_a_cancelled_row_frees_its_slot(tiny_model):
    tiny = Engine.load(str(tiny_model), max_batch=1, max_queue=1)
    prompt = tiny.prompt_ids(CONVS[0])
    running, waiting = Job(prompt, GenParams(max_new_tokens=2000)), Job(prompt, GenParams(max_new_tokens=2))
    tiny.submit(running)
    assert running.started.wait(60)
    tiny.submit(waiting)
    with pytest.raises(QueueFull):
        tiny.submit(Job(prompt, GenParams(max_new_tokens=2)))
    running.cancel()
    assert waiting.started.wait(60)  # the cancelled row left the batch; the waiting one took its place
    ev = waiting.events.get(timeout=60)
    while ev.finish is None:
        ev = waiting.events.get(timeout=60)
    assert ev.finish in ("stop", "length") and ev.tokens <= 2


def test_an_engine_nobody_holds_is_freed(tiny_model):
    e = Engine.load(str(tiny_model))
    assert len(e.generate(CONVS, GenParams(max_new_tokens=4))) == 4
    ref = weakref.ref(e)
    del e
    deadline = time.monotonic() + 10
    while ref() is not None and time.monotonic() < deadline:  # the decode thread ends once idle
        gc.collect()
        time.sleep(0.05)
    assert ref() is None, "the decode thread keeps the model alive"


def test_a_process_that_ends_right_after_an_answer_exits_cleanly(embedded_dir):
    # As `tunesmith chat --prompt`: the engine is a local of a function that returns the answer, and the
    # process ends. The decode thread, finishing, drops the last reference to the model: Python must wait
    # for it (a daemon thread freeing torch tensors during interpreter exit aborts: "terminate called…").
    code = ("import sys\nfrom tunesmith.infer import Engine, GenParams\n"
            "def answer():\n    e = Engine.load(sys.argv[1])\n"
            "    return ''.join(e.stream([{'role': 'user', 'content': 'hi'}], GenParams(max_new_tokens=3)))\n"
            "print(answer())")
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code, str(embedded_dir)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-300:]


def test_a_job_of_n_rows_prefills_its_prompt_once_and_samples_as_n_single_rows(base):
    """GRPO's groups and ``n`` > 1 requests: the prompt is prefilled once per job, each row gets its own
    copy of the cache, and row i draws exactly what a lone row with seed + i draws."""
    prompt = base.prompt_ids(CONVS[1])
    params = GenParams(max_new_tokens=12, temperature=1.0, seed=11)
    seen: list[int] = []
    sched = base.scheduler
    forward = sched._forward

    def counting(rows, **kw):
        if kw["input_ids"].shape[1] > 1:  # a prefill (decode steps feed one token per row)
            seen.append(kw["input_ids"].shape[0])
        return forward(rows, **kw)

    sched._forward = counting
    try:
        grouped = run_jobs(base, dict(prompt=prompt, params=params, n=3), dict(prompt=base.prompt_ids(CONVS[2]),
                                                                              params=params, n=2))
        assert seen == [2]  # two jobs, five rows: two prompts prefilled
        alone = run_jobs(base, *[dict(prompt=prompt, params=params.model_copy(update={"seed": 11 + i}))
                                 for i in range(3)])
    finally:
        sched._forward = forward
    assert [r[0] for r in grouped[0]] == [a[0][0] for a in alone]
    assert len({tuple(r[0]) for r in grouped[0]}) > 1  # the rows did draw differently


def test_the_prefill_chunk_counts_prompts_not_rows(tiny_model):
    """``prefill_rows`` bounds the prompts prefilled in one step: three jobs of 4 rows each, submitted
    together with a chunk of two, are prefilled as two prompts (8 rows) and then one (a join), not as
    one job a step (two joins)."""
    e = Engine.load(str(tiny_model), max_batch=16, prefill_rows=2)
    prompts = [e.prompt_ids(c) for c in CONVS[:3]]
    seen: list[int] = []
    sched = e.scheduler
    forward = sched._forward

    def counting(rows, **kw):
        if kw["input_ids"].shape[1] > 1:
            seen.append(kw["input_ids"].shape[0])
        return forward(rows, **kw)

    sched._forward = counting
    rows = run_jobs(e, *[dict(prompt=p, params=GenParams(max_new_tokens=6, temperature=1.0, seed=k), n=4)
                         for k, p in enumerate(prompts)])
    assert [len(r) for r in rows] == [4, 4, 4]
    assert seen == [2, 1] and sched.stats["joins"] == 1 and sched.stats["max_rows"] == 12


def test_static_decoding_gives_the_joining_loops_answers(embedded_dir, base):
    """``graphs``: fixed batches over transformers' StaticCache (on CUDA replayed as one CUDA graph a
    step; here eagerly) answer as ``generate`` does, and sampled rows draw what they draw in the
    joining loop; a second batch reuses the first one's decoder."""
    static = Engine.load(str(embedded_dir), dtype="fp32", device="cpu", max_batch=8, graphs=True)
    assert static.scheduler.static and not base.scheduler.static  # on the CPU the joining loop is the default
    prompts = [static.prompt_ids(c) for c in CONVS]
    assert engine_ids(static, prompts, 24) == hf_ids(base, prompts, 24)
    params = GenParams(max_new_tokens=12, temperature=1.0, seed=5)
    specs = [dict(prompt=prompts[1], params=params, n=3), dict(prompt=prompts[3], params=params, n=2)]
    assert run_jobs(static, *specs) == run_jobs(base, *specs)
    assert static.stats["static_batches"] == 2 and static.stats["joins"] == 0
    assert static.scheduler._static.rows == 8  # one decoder of 8 rows served both batches (4 and 5 rows)
