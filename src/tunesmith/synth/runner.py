"""Resumable teacher runs: every request is an item keyed by a hash of what is sent.

Kill the client at any moment and rerun the same command: finished items are in the journal
(one whole JSON line each, flushed and fsynced before the item counts as done), so they are
skipped; a torn last line is cut off; items that failed (errors.jsonl, with the reason) and
items in flight when the process died are asked again. The dataset file itself is written
whole (temp + rename) only once every item has an answer, so nothing is ever half-written.

Where files go (``out``): a ``.jsonl``/``.json`` name is the dataset file, with
``NAME.errors.jsonl``, ``NAME.manifest.json`` and ``NAME.<step>.journal.jsonl`` beside it;
any other name is a folder (what a pipeline stage gets) holding ``data.jsonl``,
``errors.jsonl``, ``manifest.json`` and ``<step>.journal.jsonl``.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fsutil import check_writable_file, write_atomic
from ..manifest import write_manifest
from .teacher import BadReply, BudgetSpent, Teacher, TeacherConfig, TeacherDown

FORMATS = ("messages", "alpaca")


def item_key(messages: list[dict], teacher: TeacherConfig, sample: int = 0) -> str:
    """What makes a request the same request: its messages (system prompt included), the sample
    index, the model and the sampling parameters."""
    blob = json.dumps([messages, sample, teacher.model, teacher.params()], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


@dataclass
class Item:
    key: str
    messages: list[dict]
    meta: dict[str, Any] = field(default_factory=dict)


class Outputs:
    """The files of one synth output (see the module docstring)."""

    def __init__(self, out: str):
        p = Path(out).expanduser()
        self.folder_mode = p.is_dir() or p.suffix.lower() not in (".jsonl", ".json")
        if self.folder_mode:
            self.data, self._base = p / "data.jsonl", p / ""
            self.errors, self.manifest_dir = p / "errors.jsonl", p
        else:
            self.data, self._base = p, p.with_suffix("")
            self.errors, self.manifest_dir = Path(f"{self._base}.errors.jsonl"), None
        check_writable_file(self.data, "out")
        self.claim()

    def beside(self, name: str) -> Path:
        """``<folder>/NAME`` or ``<out stem>.NAME``."""
        return self._base / name if self.folder_mode else Path(f"{self._base}.{name}")

    def journal(self, step: str) -> Path:
        return self.beside(f"{step}.journal.jsonl")

    def claim(self, *steps: str) -> None:
        """A file output's neighbours (errors, manifest, each step's journal) are outputs too: one
        that exists must be tunesmith's (the output policy, ``tunesmith.outputs``)."""
        if not self.folder_mode:
            from ..outputs import claim_beside

            claim_beside([self.errors, self.beside("manifest.json"), *(self.journal(s) for s in steps)])

    def write_manifest(self, manifest: dict) -> None:
        if self.manifest_dir is not None:
            write_manifest(self.manifest_dir, manifest)
        else:
            from .. import __version__
            from ..manifest import git_commit

            base = {"tunesmith_version": __version__, "git_commit": git_commit()}
            write_atomic(self.beside("manifest.json"), json.dumps({**base, **manifest}, indent=2, ensure_ascii=False))


class Journal:
    """Append-only JSONL of finished items. The file is opened (and so created) on the first
    answer, so a run that never got one leaves nothing behind."""

    def __init__(self, path: Path):
        self.path = path
        self.f = None
        # One writer thread: lines never interleave, and fsync does not block the event loop.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")

    def load(self) -> dict[str, dict]:
        done: dict[str, dict] = {}
        if not self.path.is_file():
            return done
        with self.path.open("rb") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a torn last line from a killed run: that item is asked again
                if isinstance(rec, dict) and "key" in rec:
                    done.setdefault(rec["key"], rec)
        return done

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "ab")
        size = self.f.seek(0, os.SEEK_END)
        if size:  # cut a torn last line off, or the next line would be glued to it
            with open(self.path, "rb") as r:
                data = r.read()
            keep = data.rfind(b"\n") + 1
            if keep != size:
                self.f.truncate(keep)

    def _write(self, line: bytes) -> None:
        if self.f is None:
            from ..fsutil import will_append

            will_append(self.path)  # the output policy records it as ours before the first line
            self._open()
        self.f.write(line)
        self.f.flush()
        os.fsync(self.f.fileno())

    async def append(self, rec: dict) -> None:
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
        await asyncio.get_running_loop().run_in_executor(self.pool, self._write, line)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self.f is not None:
            self.f.close()


@dataclass
class RunResult:
    answers: dict[str, dict]            # key → {"content", "reasoning", "finish_reason", "tokens"}
    failures: dict[str, str]            # key → reason
    requests: int = 0
    tokens: int = 0
    skipped: int = 0                    # already in the journal
    seconds: float = 0.0


def _reason(e: BaseException) -> str:
    import openai

    if isinstance(e, BadReply):
        return str(e)  # already one line, naming what was wrong with the reply
    if isinstance(e, openai.APITimeoutError):
        return "timed out (after the SDK's retries)"
    if isinstance(e, openai.APIStatusError):
        return f"HTTP {e.status_code}: {str(e).splitlines()[0][:300]}"
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


async def _run(items: list[Item], cfg: TeacherConfig, journal: Journal, label: str) -> RunResult:
    import openai

    done = journal.load()
    todo = [it for it in items if it.key not in done]
    res = RunResult({k: done[k] for k in {it.key for it in items} if k in done}, {}, skipped=len(items) - len(todo))
    if not todo:
        return res
    teacher = Teacher(cfg)
    total, t0 = len(items), time.monotonic()
    last = [t0]  # a progress line every 5 s of a long run, none for a short one

    async def one(it: Item) -> None:
        try:
            reply = await teacher.ask(it.messages)
        except BudgetSpent:
            res.failures[it.key] = "not sent: the run's budget (teacher.max_requests / max_total_tokens) was used up"
            return
        except (openai.APIError, BadReply) as e:
            res.failures[it.key] = _reason(e)
            return
        rec = {"key": it.key, **reply.to_json()}
        await journal.append(rec)
        res.answers[it.key] = rec
        now = time.monotonic()
        if now - last[0] > 5:
            last[0] = now
            print(f"  {label}: {len(res.answers)}/{total} answered, {len(res.failures)} failed", file=sys.stderr)

    tasks = [asyncio.create_task(one(it)) for it in todo]
    try:
        await asyncio.gather(*tasks)
    except TeacherDown:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        res.requests, res.tokens, res.seconds = teacher.requests, teacher.tokens, time.monotonic() - t0
        await teacher.close()
    return res


def run_items(items: list[Item], cfg: TeacherConfig, outputs: Outputs, step: str, label: str) -> RunResult:
    """Ask the teacher for every item not yet in the ``step`` journal. Writes errors.jsonl (or
    removes the one an earlier run left) and raises UserError naming how many failed: that
    one line is then all the run prints to stderr at its end."""
    unique = list({it.key: it for it in items}.values())
    outputs.claim(step)
    journal = Journal(outputs.journal(step))
    try:
        res = asyncio.run(_run(unique, cfg, journal, label))
    finally:
        journal.close()
    by_key = {it.key: it for it in unique}
    if res.failures:
        lines = [json.dumps({"key": k, "step": step, "reason": why, "messages": by_key[k].messages,
                             **by_key[k].meta}, ensure_ascii=False) for k, why in res.failures.items()]
        write_atomic(outputs.errors, "\n".join(lines) + "\n")
        raise UserError(_failed_line(res, len(unique), label, outputs.errors))
    print(f"  {label}: {len(res.answers)}/{len(unique)} answered ({res.skipped} from an earlier run), "
          f"{res.requests} requests, {res.tokens} tokens, {res.seconds:.1f}s", file=sys.stderr)
    if outputs.errors.is_file():
        outputs.errors.unlink()  # ours, from an earlier run whose failures are now answered
    return res


def _failed_line(res: RunResult, total: int, label: str, errors: Path) -> str:
    """The one line a run with failures ends on: how many, the first reason, where the rest are."""
    first = " ".join(next(iter(res.failures.values())).split())
    if res.answers:
        head = f"{len(res.failures)} of {total} requests failed"
        n = len(res.answers)
        kept = f" (the {n} answers are kept)" if n > 1 else " (the 1 answer is kept)"
    else:
        head = f"nothing was answered: all {total} requests failed" if total > 1 else \
            "nothing was answered: the one request failed"
        kept = ""
    return (f"{label}: {head} (first: {first}); the reasons are in {errors}; rerun the same command to retry "
            f"them{kept}")


def write_rows(outputs: Outputs, rows: list[dict], manifest: dict) -> None:
    """The dataset, whole, then its manifest (status done: a pipeline skips the stage on a rerun)."""
    write_atomic(outputs.data, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    outputs.write_manifest({"status": "done", "finished": _now(), "data": str(outputs.data), "rows": len(rows),
                            **manifest})
    print(f"wrote {len(rows)} rows to {outputs.data}")


def teacher_info(cfg: TeacherConfig) -> dict:
    """The teacher as the manifest records it: never the key, only the variable's name."""
    return {"base_url": cfg.base_url, "model": cfg.model, "api_key_env": cfg.api_key_env, **cfg.params()}


def _now() -> str:
    from ..manifest import now

    return now()


def to_row(conv, fmt: str) -> dict:
    from ..data.convert import to_alpaca, to_messages

    if fmt not in FORMATS:
        raise UserError(f"format: '{fmt}' is not an output format (choose {', '.join(FORMATS)})")
    return to_alpaca(conv) if fmt == "alpaca" else to_messages(conv)
