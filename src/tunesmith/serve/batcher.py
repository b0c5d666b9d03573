"""Dynamic batching: requests that arrive together are decoded together, one token per step for all rows.

Why not transformers' continuous batching (``generate_batch`` / its manager)? It runs on CPU, but it
returns only the chosen token's logprob (no ``top_logprobs``), samples with one shared RNG (no per-request
``seed``) and has no stop strings; the server must honour all three or refuse them. This loop is small:
one ``DynamicCache`` for the running rows, new requests prefilled and joined between steps (left-padded to
a common length), finished or abandoned rows dropped from the cache at once. docs/serve.md has the
measured comparison.
"""
from __future__ import annotations

import asyncio
import inspect
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """More rows are waiting than the server accepts (→ 503)."""


@dataclass
class Sampling:
    max_new: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    top_logprobs: int | None = None     # None: no logprobs; 0..20: chosen token's logprob plus the k best


@dataclass
class Event:
    """One row's progress: new text (stop strings already cut), the tokens behind it, or its end."""
    index: int
    text: str = ""
    logprobs: list[dict] = field(default_factory=list)
    finish: str | None = None           # "stop" | "length" | "error"
    tokens: int = 0                     # completion tokens so far (set on finish)


class Job:
    """One HTTP request: ``n`` rows sharing a prompt. Events are delivered on the request's event loop."""

    def __init__(self, prompt: list[int], n: int, sampling: Sampling, loop: asyncio.AbstractEventLoop):
        self.prompt, self.n, self.sampling, self.loop = prompt, n, sampling, loop
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.started = asyncio.Event()
        self.cancelled = threading.Event()
        self.enqueued = time.monotonic()

    def _call(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed (server shutting down): nobody is listening any more
            self.cancelled.set()

    def push(self, ev: Event) -> None:
        self._call(self.events.put_nowait, ev)

    def cancel(self) -> None:
        self.cancelled.set()


class _Row:
    def __init__(self, job: Job, index: int, tok):
        self.job, self.index, self.tok = job, index, tok
        self.ids: list[int] = []
        self.emitted = 0            # characters of the decoded text already sent
        self.pending_lp: list[dict] = []
        self.done = False
        s = job.sampling
        self.hold = max((len(x) for x in s.stop), default=1) - 1
        self.gen = None
        if s.temperature > 0:
            import torch

            self.gen = torch.Generator()
            self.gen.manual_seed(s.seed + index if s.seed is not None else torch.seed())

    def finish(self, reason: str, text: str | None = None) -> None:
        full = self.tok.decode(self.ids, skip_special_tokens=True) if text is None else text
        self.job.push(Event(self.index, full[self.emitted:], self.pending_lp, reason, len(self.ids)))
        self.done = True

    def advance(self, token: int, lp: dict | None, stop_ids: set[int]) -> None:
        s = self.job.sampling
        if token in stop_ids:
            self.finish("stop")
            return
        self.ids.append(token)
        if lp is not None:
            self.pending_lp.append(lp)
        full = self.tok.decode(self.ids, skip_special_tokens=True)
        # A stop string may end inside this token; search only where it could start anew.
        start = max(0, self.emitted - self.hold)
        cuts = [i for i in (full.find(x, start) for x in s.stop) if i >= 0]
        if cuts:
            self.finish("stop", full[:min(cuts)])
        elif len(self.ids) >= s.max_new:
            self.finish("length", full)
        elif not full.endswith("\ufffd"):  # an incomplete UTF-8 character waits for its next byte
            safe = len(full) - self.hold   # text that might be the start of a stop string waits too
            if safe > self.emitted:
                self.job.push(Event(self.index, full[self.emitted:safe], self.pending_lp))
                self.emitted, self.pending_lp = safe, []


class Batcher:
    """Owns the model in one background thread; ``submit`` is called from the event loop."""

    def __init__(self, model, tok, stop_ids: list[int], max_batch: int = 64, max_queue: int = 256,
                 prefill_rows: int = 8):
        self.model, self.tok = model, tok
        self.prefill_rows = prefill_rows
        self.stop_ids = set(stop_ids)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.pending: queue.Queue[Job] = queue.Queue()
        self.waiting_rows = 0
        self.stats = {"max_rows": 0, "joins": 0}   # what tests and the benchmark check batching by
        self._carry: Job | None = None   # taken from the queue, waits for room in the batch
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunesmith-batcher", daemon=True)
        self.device = next(model.parameters()).device
        # transformers renamed forward's ``past_key_values`` to ``cache`` (the old name warns, then goes).
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.cache_kw = "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self.waiting_rows + job.n > self.max_queue:
                raise QueueFull
            self.waiting_rows += job.n
        self.pending.put(job)

    # ---- the generation thread ----
    def _take(self, room: int, block: bool) -> list[Job]:
        """Jobs to admit now, oldest first: their rows fit in ``room`` and, beyond the first job, in one
        prefill chunk (a big prefill would hold every running row's next token back). A job that does not
        fit waits at the head of the queue."""
        jobs: list[Job] = []
        taken = 0
        while room > 0 and taken < self.prefill_rows:
            job, self._carry = self._carry, None
            if job is None:
                try:
                    job = self.pending.get(block=block and not jobs, timeout=0.05)
                except queue.Empty:
                    break
                with self._lock:
                    self.waiting_rows -= job.n
            if job.cancelled.is_set():
                continue
            if job.n > room or (jobs and taken + job.n > self.prefill_rows):
                self._carry = job
                break
            jobs.append(job)
            room -= job.n
            taken += job.n
        return jobs

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while not self._stop.is_set():
                jobs = self._take(self.max_batch, block=True)
                if not jobs:
                    continue
                self._active: list[_Row] = []
                try:
                    self._decode(jobs)
                except Exception as e:  # noqa: BLE001 — fail the running requests, keep the server up
                    for r in self._active:
                        if not r.done:
                            r.job.push(Event(r.index, f"{type(e).__name__}: {e}", finish="error"))

    def _prefill(self, rows: list[_Row]):
        import torch
        from transformers import DynamicCache

        prompts = [r.job.prompt for r in rows]
        width = max(len(p) for p in prompts)
        pad = self.tok.pad_token_id or 0
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         **{self.cache_kw: cache})
        return cache, mask, out.logits[:, -1].float()  # the cache was filled in place

    @staticmethod
    def _join(cache, mask, cache2, mask2):
        """Left-pad the shorter of two caches and stack them: rows of both decode in one step."""
        import torch
        import torch.nn.functional as F

        width = max(mask.shape[1], mask2.shape[1])

        def padl(t, dim_from_end):
            extra = width - t.shape[-dim_from_end]
            return t if extra == 0 else F.pad(t, (0, 0) * (dim_from_end - 1) + (extra, 0))

        for a, b in zip(cache.layers, cache2.layers):
            a.keys = torch.cat([padl(a.keys, 2), padl(b.keys, 2)])
            a.values = torch.cat([padl(a.values, 2), padl(b.values, 2)])
        return cache, torch.cat([padl(mask, 1), padl(mask2, 1)])

    @staticmethod
    def _select(cache, mask, keep: list[int]):
        """Drop finished rows, and the columns that are padding for every row left."""
        import torch

        idx = torch.tensor(keep, device=mask.device)
        mask = mask[idx]
        first = int((mask.sum(0) > 0).nonzero()[0]) if mask.numel() else 0
        for layer in cache.layers:
            layer.keys = layer.keys[idx, :, first:]
            layer.values = layer.values[idx, :, first:]
        return cache, mask[:, first:]

    def _pick(self, rows: list[_Row], logits):
        """Next token per row (greedy or that row's own sampling and RNG), with logprobs where asked."""
        import torch

        logp = torch.log_softmax(logits, dim=-1)
        chosen = logits.argmax(-1).tolist()
        for i, r in enumerate(rows):
            s = r.job.sampling
            if s.temperature > 0:
                x = logits[i] / s.temperature
                if s.top_k:
                    x = x.masked_fill(x < x.topk(min(s.top_k, x.numel())).values[-1], float("-inf"))
                if s.top_p < 1:
                    srt, order = x.sort(descending=True)
                    cum = srt.softmax(-1).cumsum(-1)
                    drop = cum - srt.softmax(-1) > s.top_p  # keep the smallest prefix whose mass reaches top_p
                    x = x.scatter(0, order, srt.masked_fill(drop, float("-inf")))
                chosen[i] = int(torch.multinomial(x.softmax(-1), 1, generator=r.gen))
        out = []
        for i, r in enumerate(rows):
            k = r.job.sampling.top_logprobs
            lp = None
            if k is not None:
                lp = {"id": chosen[i], "logprob": float(logp[i, chosen[i]]), "top": []}
                if k:
                    v, ix = logp[i].topk(k)
                    lp["top"] = list(zip(ix.tolist(), v.tolist()))
            out.append((chosen[i], lp))
        return out

    def _decode(self, jobs: list[Job]) -> None:
        import torch

        rows: list[_Row] = []
        cache = mask = logits = None
        while True:
            if jobs:  # admit: prefill the new rows, then stack them with the running ones
                new = [_Row(j, i, self.tok) for j in jobs for i in range(j.n)]
                for j in jobs:
                    j._call(j.started.set)
                try:
                    c2, m2, l2 = self._prefill(new)
                except Exception as e:  # noqa: BLE001 — fail these requests, keep serving the others
                    for r in new:
                        r.job.push(Event(r.index, f"{type(e).__name__}: {e}", finish="error"))
                    c2 = None
                if c2 is not None:
                    if cache is None:
                        cache, mask, logits = c2, m2, l2
                    else:
                        cache, mask = self._join(cache, mask, c2, m2)
                        logits = torch.cat([logits, l2])
                        self.stats["joins"] += 1
                    rows += new
                    self.stats["max_rows"] = max(self.stats["max_rows"], len(rows))
                self._active = rows
            if not rows:
                return
            if self._stop.is_set():  # shutting down: end the running answers now
                for r in rows:
                    r.job.push(Event(r.index, "the server is shutting down", finish="error"))
                return
            for r, (tok, lp) in zip(rows, self._pick(rows, logits)):
                if r.job.cancelled.is_set():
                    r.done = True
                else:
                    r.advance(tok, lp, self.stop_ids)
            keep = [i for i, r in enumerate(rows) if not r.done]
            tokens = [r.ids[-1] for r in rows if not r.done]
            if len(keep) < len(rows):
                if not keep:
                    rows, cache = [], None
                else:
                    cache, mask = self._select(cache, mask, keep)
                    rows = [rows[i] for i in keep]
            # Sliding-window caches cannot be stacked by left-padding: those models admit between batches.
            joinable = cache is None or all(type(x).__name__ == "DynamicLayer" for x in cache.layers)
            room = self.max_batch - len(rows) if joinable else 0
            jobs = self._take(room, block=False) if room and not self._stop.is_set() else []
            if not rows:
                if not jobs:
                    return
                continue
            ids = torch.tensor(tokens, device=self.device)[:, None]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            pos = mask.sum(-1, keepdim=True) - 1
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                             **{self.cache_kw: cache})
            logits = out.logits[:, -1].float()


def logprob_entry(tok, item: dict[str, Any]) -> dict:
    """OpenAI's chat ``logprobs.content`` item for one generated token."""
    def one(tid: int, lp: float) -> dict:
        text = tok.decode([tid])
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    d = one(item["id"], item["logprob"])
    d["top_logprobs"] = [one(t, v) for t, v in item["top"]]
    return d
