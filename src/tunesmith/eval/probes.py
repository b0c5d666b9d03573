"""``tunesmith eval probes``: task accuracy on held-out prompts with expected answers.

A probe file is JSONL: ``{"prompt": "...", "expect": "substring"}`` (or ``"expect_any": [...]``).
A probe passes when the greedy answer contains the expected text (case-insensitive)."""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from ..config import AdaptedModelSection, Replaceable
from ..fsutil import write_atomic
from ..errors import UserError
from ..infer import Engine, GenParams
from ..jsonl import read_jsonl


class EvalProbesConfig(AdaptedModelSection, Replaceable):
    model: str = Field(..., description="model: alias, HF folder (a merged stage too), .gguf, hub id or run folder")
    probes: str = Field(..., description="JSONL file of {prompt, expect} rows")
    out: str | None = Field(None, description="write probes.json (answers and the score) here")
    batch_size: int = Field(16, gt=0, description="most prompts decoded together")
    max_new_tokens: int = Field(64, gt=0, description="answer length")


def read_probes(path: str | Path) -> list[dict]:
    p = Path(path)
    rows = []
    for n, r in read_jsonl(p, "probe file"):
        if not isinstance(r, dict):
            raise UserError(f"{p}:{n}: a probe needs 'prompt' and 'expect' (or 'expect_any')")
        expect = r.get("expect_any") or ([r["expect"]] if isinstance(r.get("expect"), str) else None)
        if not isinstance(r.get("prompt"), str) or not expect:
            raise UserError(f"{p}:{n}: a probe needs 'prompt' and 'expect' (or 'expect_any')")
        rows.append({"prompt": r["prompt"], "expect": expect})
    if not rows:
        raise UserError(f"{p}: no probes")
    return rows


def passed(answer: str, expect: list[str]) -> bool:
    a = answer.casefold()
    return any(e.casefold() in a for e in expect)


def run_probes(cfg: EvalProbesConfig) -> dict:
    from ..fsutil import check_writable_dir

    probes = read_probes(cfg.probes)
    if cfg.out:
        check_writable_dir(cfg.out, "out")
    engine = Engine.load(cfg.model, cfg.adapter or None, cfg.dtype, cfg.device, cfg.trust_remote_code,
                         max_batch=cfg.batch_size)
    answers = engine.generate([[{"role": "user", "content": p["prompt"]}] for p in probes],
                              GenParams(max_new_tokens=cfg.max_new_tokens))
    flags = [passed(a, p["expect"]) for p, a in zip(probes, answers)]
    result = {"model": cfg.model, "adapter": cfg.adapter, "probes": cfg.probes, "accuracy": sum(flags) / len(flags),
              "passed": sum(flags), "total": len(flags),
              "answers": [{**p, "answer": a, "pass": f} for p, a, f in zip(probes, answers, flags)]}
    if cfg.out:
        write_atomic(Path(cfg.out) / "probes.json", json.dumps(result, indent=1, ensure_ascii=False))
    return result


def eval_probes(cfg: EvalProbesConfig) -> int:
    r = run_probes(cfg)
    for a in r["answers"]:
        print(f"[{'ok' if a['pass'] else '--'}] {a['prompt']} → {a['answer'][:100]}")
    print(f"accuracy {r['accuracy']:.0%} ({r['passed']}/{r['total']})")
    return 0
