"""``tunesmith predict``: answer every line of a JSONL file, batched by the engine and resumable.

Each input line is ``{"messages": [...]}`` or ``{"prompt": "..."}`` with an optional
``id`` (else its line number). Output lines keep the input fields and add ``response``.
Answers are written in input order as they come. A rerun skips ids already answered; a torn last line
(killed mid-write) is cut off first.
An existing output that predict did not write for this input is refused, never touched.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pydantic import Field

from ..config import AdaptedModelSection, Replaceable
from ..errors import UserError
from ..jsonl import read_jsonl
from .context import ContextExceeded, model_context, room_for_answer
from .engine import Engine
from .sampling import GenParams


class PredictConfig(AdaptedModelSection, Replaceable):
    input: str = Field(..., description="JSONL file: one {messages: [...]} or {prompt: ...} per line")
    output: str = Field(..., description="JSONL file to write (appended to on a rerun)")
    batch_size: int = Field(8, gt=0, description="most prompts decoded together")
    system: str | None = Field(None, description="system prompt added to rows that have none")
    progress: bool = Field(True, description="show a progress bar")
    gen: GenParams = Field(default_factory=GenParams, description="generation parameters")


def read_requests(path: str | Path, system: str | None = None) -> list[tuple[str, dict, list[dict]]]:
    """``(id, row, messages)`` for each line. Raises UserError naming file:line for a bad row."""
    return [r[1:] for r in read_rows(path, system)]


def read_rows(path: str | Path, system: str | None = None) -> list[tuple[int, str, dict, list[dict]]]:
    """``(line number, id, row, messages)`` for each line, as ``read_requests``."""
    out, seen = [], set()
    for n, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: expected an object with 'messages' or 'prompt'")
        if isinstance(row.get("messages"), list) and row["messages"]:
            msgs = row["messages"]
            for i, m in enumerate(msgs):
                if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                    raise UserError(f"{path}:{n}: messages[{i}]: needs a role and a string content, got "
                                    f"{json.dumps(m, ensure_ascii=False)[:80]}")
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
        out.append((n, rid, row, msgs))
    return out


def done_ids(path: str | Path, input_ids: set[str], input_path: str | Path = "the input") -> set[str]:
    """Ids already answered in ``path``, which predict wrote for this input.

    Only a file whose every line is a JSON object with an ``id`` of this input and a ``response``
    is resumed; a torn LAST line (a kill mid-write) after such lines is cut off. Anything else is
    someone else's file: refused untouched."""
    path = Path(path)
    if not path.exists():
        return set()
    if not path.is_file():
        raise UserError(f"output {path} is not a file: choose another --output")
    data = path.read_bytes()
    refuse = UserError(f"output {path} exists and was not written by predict for this input ({input_path}); "
                       "choose another --output or remove it")
    ids: set[str] = set()
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" for a whole file, else a torn line
    good_end = 0
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1 and not tail and ids:
                break  # an unparseable last line after lines of ours: torn, cut it
            raise refuse from None
        if not (isinstance(row, dict) and "id" in row and str(row["id"]) in input_ids and "response" in row):
            raise refuse
        ids.add(str(row["id"]))
        good_end += len(line) + 1
    else:
        if tail and not ids:
            raise refuse  # one unterminated line and nothing of ours before it: not ours to cut
    if good_end < len(data):
        with path.open("r+b") as f:
            f.truncate(good_end)
        print(f"note: cut a torn last line off {path} (a run was killed mid-write)", file=sys.stderr)
    return ids


def check_fits(engine: Engine, rows: list[tuple[int, str, dict, list[dict]]], cfg: PredictConfig) -> None:
    """Every row's prompt renders and, with ``gen.max_new_tokens``, fits the model's context:
    checked for all rows before the first answer, so a bad row costs one line, not a run."""
    context = model_context(engine.model)
    for n, _, _, msgs in rows:
        try:
            ids = engine.prompt_ids(msgs, cfg.gen.enable_thinking)
        except Exception as e:  # noqa: BLE001 — a template that rejects the conversation (roles, order)
            raise UserError(f"{cfg.input}:{n}: messages: the chat template rejects them "
                            f"({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None
        try:
            room_for_answer(len(ids), context, cfg.gen.max_new_tokens, "max_new_tokens")
        except ContextExceeded as e:
            raise UserError(f"{cfg.input}:{n}: {e}; shorten the row or lower --gen.max_new_tokens") from None


def predict(cfg: PredictConfig) -> int:
    from ..fsutil import check_writable_file, same_file, will_append

    if same_file(cfg.input, cfg.output):
        raise UserError(f"output {cfg.output} is the input file: choose another --output")
    requests = read_rows(cfg.input, cfg.system)
    if not requests:
        raise UserError(f"input {cfg.input} has no rows")
    check_writable_file(cfg.output, "output")
    # --overwrite (an output of ours for another input, or a fresh start): begin again.
    done = set() if cfg.overwrite else done_ids(cfg.output, {r[1] for r in requests}, cfg.input)
    left = [r for r in requests if r[1] not in done]
    if not left:
        print(f"all {len(requests)} rows already answered in {cfg.output}")
        return 0
    engine = Engine.load(cfg.model, cfg.adapter, cfg.dtype, cfg.device, cfg.trust_remote_code,
                         max_batch=cfg.batch_size)
    check_fits(engine, left, cfg)
    todo = [r[1:] for r in left]
    from tqdm import tqdm

    Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(requests), initial=len(requests) - len(todo), disable=not cfg.progress, unit="row")
    # Appending is the resume mechanism: the file holds only predict's own whole lines (checked above).
    will_append(cfg.output)  # recorded as ours (the output policy) before the first line
    with open(cfg.output, "w" if cfg.overwrite else "a", encoding="utf-8") as out:
        written, ready = 0, {}
        for k, answer in engine.answers([m for _, _, m in todo], cfg.gen):
            bar.update(1)
            ready[k] = answer
            lines = []
            while written in ready:  # in input order: the answers that end the written prefix
                rid, row, _ = todo[written]
                lines.append(json.dumps({**row, "id": rid, "response": ready.pop(written)}, ensure_ascii=False) + "\n")
                written += 1
            if lines:  # each line whole; fsync so a kill can tear at most the last line
                out.write("".join(lines))
                out.flush()
                os.fsync(out.fileno())
    bar.close()
    print(f"wrote {len(todo)} answers to {cfg.output} ({len(requests)} in all)")
    return 0
