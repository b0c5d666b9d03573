"""synth distill against the fault-injecting teacher: kill the client midway, rerun, lose nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fake_teacher import default_answer, reasoning_for

from tunesmith.data.config import DatasetConfig
from tunesmith.data.load import load_conversations

CLI = [sys.executable, "-m", "tunesmith"]


def write_prompts(path: Path, n: int) -> list[str]:
    prompts = [f"question number {i}: what is {i} squared?" for i in range(n)]
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return prompts


def distill_cmd(prompts: Path, out: Path, url: str, *extra: str) -> list[str]:
    return CLI + ["synth", "distill", "--prompts", str(prompts), "--out", str(out), "--teacher.base_url", url,
                  "--teacher.concurrency", "16", "--teacher.timeout", "1.5", "--teacher.max_retries", "3", *extra]


def test_killed_midway_and_rerun_gives_every_prompt_once(tmp_path, fake):
    prompts = write_prompts(tmp_path / "p.jsonl", 200)
    out = tmp_path / "out"
    journal = out / "distill.journal.jsonl"
    proc = subprocess.Popen(distill_cmd(tmp_path / "p.jsonl", out, fake.url), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (journal.is_file() and journal.read_bytes().count(b"\n") >= 40):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = journal.read_bytes().count(b"\n")
    assert 40 <= before < 200 and not (out / "data.jsonl").exists()   # nothing half-written
    with journal.open("ab") as f:  # as if the kill had cut a line in half
        f.write(b'{"key": "torn", "content": "hal')
    sent_before = len(fake.requests)

    r = subprocess.run(distill_cmd(tmp_path / "p.jsonl", out, fake.url), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # The rerun asked only for what was not finished (plus the injected failures' retries).
    assert len(fake.requests) - sent_before < 2 * (200 - before) + 20
    keys = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 200            # none twice in the journal
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert sorted(r["messages"][0]["content"] for r in rows) == sorted(prompts)   # every prompt once
    convs, problems = load_conversations(DatasetConfig(path=str(out / "data.jsonl")))
    assert problems == [] and len(convs) == 200
    kinds = {"field": 0, "inline": 0, "none": 0}
    for c in convs:
        msgs = [{"role": "user", "content": c.turns[0].content}]
        kind, thought = reasoning_for(msgs)
        kinds[kind] += 1
        assert c.turns[-1].content == default_answer(msgs)
        assert c.turns[-1].reasoning == thought          # from reasoning_content or inline <think>, or none
    assert min(kinds.values()) > 30
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "done" and man["rows"] == 200 and man["with_reasoning"] == kinds["field"] + kinds["inline"]
    assert not (out / "errors.jsonl").exists()


def test_reasoning_renders_as_think_through_the_template(tmp_path, fake, tokenizer):
    from tunesmith.data.render import template_messages

    write_prompts(tmp_path / "p.jsonl", 12)
    out = tmp_path / "d.jsonl"
    r = subprocess.run(distill_cmd(tmp_path / "p.jsonl", out, fake.url, "--format", "alpaca"), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "d.manifest.json").is_file()
    convs, _ = load_conversations(DatasetConfig(path=str(out)))
    thinking = [c for c in convs if c.turns[-1].reasoning]
    assert thinking
    for c in thinking:
        msgs, _ = template_messages(c, tokenizer)
        text = tokenizer.apply_chat_template(msgs, tokenize=False)
        assert f"<think>\n{c.turns[-1].reasoning}\n</think>\n\n{c.turns[-1].content}" in text
