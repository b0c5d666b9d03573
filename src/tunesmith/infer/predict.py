"""``tunesmith predict``: answer every line of a JSONL file, batched and resumable.

Each input line is ``{"messages": [...]}`` or ``{"prompt": "..."}`` with an optional
``id`` (else its line number). Output lines keep the input fields and add ``response``.
A rerun skips ids already answered; a torn last line (killed mid-write) is cut off first.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import Field

from ..config import Section
from ..errors import UserError
from ..jsonl import read_jsonl
from ..models import DEFAULT_MODEL
from .engine import Engine, GenParams


class PredictConfig(Section):
    model: str = Field(DEFAULT_MODEL, description="model: built-in alias, HF folder, .gguf file, hub id or run folder")
    adapter: list[str] = Field(default_factory=list, description="PEFT adapter folder(s) applied in order")
    input: str = Field(..., description="JSONL file: one {messages: [...]} or {prompt: ...} per line")
    output: str = Field(..., description="JSONL file to write (appended to on a rerun)")
    batch_size: int = Field(8, gt=0, description="prompts per generation batch")
    system: str | None = Field(None, description="system prompt added to rows that have none")
    dtype: str | None = Field(None, description="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")
    device: str | None = Field(None, description="cpu, cuda … (default: cuda if present)")
    trust_remote_code: bool = Field(False, description="run model code shipped with the model folder")
    progress: bool = Field(True, description="show a progress bar")
    gen: GenParams = Field(default_factory=GenParams, description="generation parameters")


def read_requests(path: str | Path, system: str | None = None) -> list[tuple[str, dict, list[dict]]]:
    """``(id, row, messages)`` for each line. Raises UserError naming file:line for a bad row."""
    out, seen = [], set()
    for n, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: expected an object with 'messages' or 'prompt'")
        if isinstance(row.get("messages"), list) and row["messages"]:
            msgs = row["messages"]
            if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in msgs):
                raise UserError(f"{path}:{n}: messages: each needs a role and a string content")
        elif isinstance(row.get("prompt"), str) and row["prompt"].strip():
            msgs = [{"role": "user", "content": row["prompt"]}]
        else:
            raise UserError(f"{path}:{n}: needs 'messages' (a non-empty list) or 'prompt' (a string)")
        if system and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": system}] + msgs
        rid = str(row.get("id", n))
        if rid in seen:
            raise UserError(f"{path}:{n}: id: '{rid}' appears twice")
        seen.add(rid)
        out.append((rid, row, msgs))
    return out


def done_ids(path: str | Path) -> set[str]:
    """Ids already answered in ``path``; a torn or unparseable tail is cut off the file."""
    path = Path(path)
    if not path.is_file():
        return set()
    data = path.read_bytes()
    ids: set[str] = set()
    good_end = 0
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # no newline: the write was cut off
        try:
            row = json.loads(data[pos:nl])
            ids.add(str(row["id"]))
        except (ValueError, KeyError, TypeError):
            break
        pos = good_end = nl + 1
    if good_end < len(data):
        with path.open("r+b") as f:
            f.truncate(good_end)
    return ids


def predict(cfg: PredictConfig) -> int:
    requests = read_requests(cfg.input, cfg.system)
    done = done_ids(cfg.output)
    todo = [r for r in requests if r[0] not in done]
    if not todo:
        print(f"all {len(requests)} rows already answered in {cfg.output}")
        return 0
    engine = Engine.load(cfg.model, cfg.adapter, cfg.dtype, cfg.device, cfg.trust_remote_code)
    from tqdm import tqdm

    Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(requests), initial=len(requests) - len(todo), disable=not cfg.progress, unit="row")
    with open(cfg.output, "a", encoding="utf-8") as out:
        for i in range(0, len(todo), cfg.batch_size):
            chunk = todo[i:i + cfg.batch_size]
            answers = engine.generate([m for _, _, m in chunk], cfg.gen)
            # One write per batch, each line whole; fsync so a kill can tear at most the last line.
            lines = [json.dumps({**row, "id": rid, "response": a}, ensure_ascii=False) + "\n"
                     for (rid, row, _), a in zip(chunk, answers)]
            out.write("".join(lines))
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(chunk))
    bar.close()
    print(f"wrote {len(todo)} answers to {cfg.output} ({len(requests)} in all)")
    return 0
