"""The engine's decode loop: continuous batching, one token per step for every running row.

One background thread owns the model (started by the first ``submit``, ended when no work is left).
Running rows share one ``DynamicCache``; new requests are prefilled (left-padded, up to
``prefill_rows`` prompts per step; the n rows of one request share its prompt's prefill) and
joined to the running rows between two steps; a row that ends — or whose caller cancelled —
leaves the batch at once. Each row has its own sampling (``RowSampler``:
seed, temperature, top-k/top-p, repetition penalty, constraint), stop strings, logprobs and, when
the engine holds named adapters, its own adapter (PEFT's mixed-batch ``adapter_names``).

Why not transformers' continuous batching (``generate_batch``)? It returns only the chosen token's
logprob (no ``top_logprobs``), samples with one shared generator (no per-request ``seed``) and has
no stop strings; docs/serve.md has the measured comparison.
"""
from __future__ import annotations

import asyncio
import inspect
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .graphs import decode as decode_static
from .graphs import wanted as static_wanted
from .sampling import GenParams, RowSampler, check_constraint, draw_batch, token_logprobs

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class QueueFull(Exception):
    """More rows are waiting than the engine accepts (the server answers 503)."""


@dataclass
class Event:
    """One row's progress: new text (stop strings already cut), the tokens behind it, or its end."""
    index: int                          # the row's place among its job's n
    text: str = ""
    logprobs: list[dict] = field(default_factory=list)   # {"id", "logprob", "top": [(id, logprob)]} per token
    finish: str | None = None           # "stop" | "length" | "error" (then ``text`` is the message)
    tokens: int = 0                     # completion tokens (set on finish)
    ids: list[int] = field(default_factory=list)         # token ids behind this event (end of turn excluded)
    job: Any = field(default=None, repr=False)


class Job:
    """One request: ``n`` rows answering one prompt (token ids) with ``params``, on ``adapter`` (a
    name given to ``Engine.load``; None: the base), ``logprobs``: None, or how many alternatives to
    return beside each chosen token's logprob; ``stream``: False sends each row's text in one event, when
    it ends (the verbs: no per-token traffic). With ``loop`` (the server) events arrive on that
    asyncio loop in ``events`` (an asyncio.Queue) and ``started`` is an asyncio.Event; without, in a
    ``queue.Queue`` (``events``, which several jobs may share) and ``started`` is a threading.Event."""

    def __init__(self, prompt: list[int], params: GenParams | None = None, n: int = 1, adapter: str | None = None,
                 logprobs: int | None = None, loop: asyncio.AbstractEventLoop | None = None,
                 events: queue.Queue | None = None, stream: bool = True):
        self.prompt, self.params, self.n = list(prompt), params or GenParams(), n
        self.adapter, self.logprobs, self.loop, self.stream = adapter, logprobs, loop, stream
        if n < 1:
            raise ValueError("n must be at least 1")
        check_constraint(self.params, n)
        if loop is not None:
            self.events: Any = asyncio.Queue()
            self.started: Any = asyncio.Event()
        else:
            self.events = events if events is not None else queue.Queue()
            self.started = threading.Event()
        self.cancelled = threading.Event()
        self.enqueued = time.monotonic()

    def _call(self, fn, *args) -> None:
        if self.loop is None:
            fn(*args)
            return
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed (server shutting down): nobody is listening any more
            self.cancelled.set()

    def push(self, ev: Event) -> None:
        ev.job = self
        self._call(self.events.put_nowait, ev)

    def fail(self, message: str) -> None:
        for i in range(self.n):
            self.push(Event(i, message, finish="error"))

    def cancel(self) -> None:
        self.cancelled.set()


class _Row:
    def __init__(self, job: Job, index: int, tok, device):
        self.job, self.index, self.tok = job, index, tok
        self.ids: list[int] = []
        self.emitted = 0            # characters of the decoded text already sent
        self.scanned = 0            # characters already searched for stop strings (less ``hold``)
        self.pending_lp: list[dict] = []
        self.pending_ids: list[int] = []
        self.done = False
        self.hold = max((len(x) for x in job.params.stop), default=1) - 1
        self.sampler = RowSampler(job.params, index, device)

    def _push(self, text: str, finish: str | None = None) -> None:
        self.job.push(Event(self.index, text, self.pending_lp, finish, len(self.ids) if finish else 0,
                            self.pending_ids))
        self.pending_lp, self.pending_ids = [], []

    def finish(self, reason: str, text: str | None = None) -> None:
        full = self.tok.decode(self.ids, skip_special_tokens=True) if text is None else text
        self._push(full[self.emitted:], reason)
        self.done = True

    def fail(self, message: str) -> None:
        self.job.push(Event(self.index, message, finish="error"))
        self.done = True

    def advance(self, token: int, lp: dict | None, stop_ids: set[int]) -> None:
        s = self.job.params
        constraint_done = self.sampler.advance(token)
        if token in stop_ids:
            self.finish("stop")
            return
        self.ids.append(token)
        self.pending_ids.append(token)
        if lp is not None:
            self.pending_lp.append(lp)
        if not (s.stop or self.job.stream):  # no text to look at before the end: decode once, then
            if constraint_done or len(self.ids) >= s.max_new_tokens:
                self.finish("stop" if constraint_done else "length")
            return
        full = self.tok.decode(self.ids, skip_special_tokens=True)
        # A stop string may end inside this token; search only where it could start anew.
        start = max(0, self.scanned - self.hold)
        cuts = [i for i in (full.find(x, start) for x in s.stop) if i >= 0]
        if cuts:
            self.finish("stop", full[:min(cuts)])
        elif constraint_done:
            self.finish("stop", full)
        elif len(self.ids) >= s.max_new_tokens:
            self.finish("length", full)
        elif not full.endswith("\ufffd"):  # an incomplete UTF-8 character waits for its next byte
            safe = len(full) - self.hold   # text that might be the start of a stop string waits too
            self.scanned = max(self.scanned, safe)
            if self.job.stream and safe > self.emitted:
                self._push(full[self.emitted:safe])
                self.emitted = safe


class Scheduler:
    """Owns the model in one background thread; ``submit`` may be called from any thread."""

    def __init__(self, model, tok, stop_ids: list[int], max_batch: int = 32, max_queue: int = 256,
                 prefill_rows: int | None = None, adapters: bool = False, autocast=None,
                 graphs: bool | None = None):
        self.model, self.tok = model, tok
        self.autocast = autocast    # a torch dtype: decode under autocast (a training loop's bf16 model)
        self.stop_ids = set(stop_ids)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.prefill_rows = prefill_rows or max_batch
        self.adapters = adapters    # rows name their adapter (PEFT mixed batch)
        self.pending: queue.Queue[Job] = queue.Queue()
        self.waiting_rows = 0
        self.stats = {"max_rows": 0, "joins": 0}   # what tests and the benchmark check batching by
        self._carry: Job | None = None   # taken from the queue, waits for room in the batch
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active: list[_Row] = []
        # where the model computes: its output head's device (QLoRA keeps the input embedding in CPU memory)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.device = head.weight.device if head is not None else next(model.parameters()).device
        # transformers renamed forward's ``past_key_values`` to ``cache`` (the old name warns, then goes).
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(type(base).forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        # The prompt's last position is all a prefill needs: as ``generate``, skip the rest of the logits.
        self.keep_kw = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.static = static_wanted(model, self.device, adapters, graphs)  # fixed batches (graphs.py)
        self._static = None  # the StaticDecoder kept between batches
        self.capture = True  # on CUDA, record the static step as a CUDA graph (False: run it eagerly)

    def submit(self, *jobs: Job, bounded: bool = True) -> None:
        """Queue ``jobs`` together (jobs submitted together are prefilled together, up to ``prefill_rows`` prompts);
        raises QueueFull, queueing none, when ``bounded`` and the waiting rows would pass ``max_queue``."""
        for job in jobs:
            if job.n > self.max_batch:
                raise ValueError(f"n ({job.n}) is more than the engine decodes together ({self.max_batch})")
        rows = sum(j.n for j in jobs)
        with self._lock:
            if bounded and self.waiting_rows + rows > self.max_queue:
                raise QueueFull
            self.waiting_rows += rows
            for job in jobs:
                self.pending.put(job)
            if self._thread is None:  # the decode thread starts on first use and ends when idle
                # Not a daemon: Python waits for it at exit (it ends once its rows do), so a process never
                # ends with torch mid-step in another thread (an abort, "terminate called…").
                self._thread = threading.Thread(target=self._run, name="tunesmith-engine")
                self._thread.start()

    def stop(self) -> None:
        """End the running and waiting rows (finish "error") and the decode thread."""
        self._stop.set()
        with self._lock:
            t = self._thread
        if t is not None:
            t.join(timeout=30)
        self._stop.clear()

    # ---- the decode thread ----
    def _take(self, room: int) -> list[Job]:
        """Jobs to admit now, oldest first: their rows fit in ``room`` and, beyond the first job, their
        prompts in one prefill chunk of ``prefill_rows`` prompts (a big prefill would hold every running
        row's next token back; a job's n rows share one prefill of its prompt). A job that does not fit
        waits at the head of the queue."""
        jobs: list[Job] = []
        taken = 0
        with self._lock:  # jobs submitted together are taken together
            while room > 0 and taken < self.prefill_rows:
                job, self._carry = self._carry, None
                if job is None:
                    try:
                        job = self.pending.get_nowait()
                    except queue.Empty:
                        break
                    self.waiting_rows -= job.n
                if job.cancelled.is_set():
                    continue
                if job.n > room or (jobs and taken + 1 > self.prefill_rows):
                    self._carry = job
                    break
                jobs.append(job)
                room -= job.n
                taken += 1  # prompts prefilled: the job's n rows copy its one prefill (``_prefill``)
        return jobs

    def _run(self) -> None:
        import contextlib

        import torch

        cast = torch.autocast(self.device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        with torch.inference_mode(), cast:  # autocast is per thread: this one's is set here
            while True:
                jobs = self._take(self.max_batch)
                if not jobs:
                    with self._lock:
                        if self._carry is None and self.pending.empty():
                            self._thread = None
                            return
                    continue
                if self._stop.is_set():
                    for j in jobs:
                        j.fail("the engine is shutting down")
                    continue
                self._active = []
                try:
                    decode_static(self, jobs) if self.static else self._decode(jobs)
                except Exception as e:  # noqa: BLE001 — fail the running requests, keep the engine up
                    for r in self._active:
                        if not r.done:
                            r.fail(f"{type(e).__name__}: {e}")

    def _forward(self, rows: list[_Row], **kw):
        # Rows of different adapters share each step (PEFT's mixed batch): measured faster than a step per
        # adapter group (docs/serve.md, "Named adapters": 230 ms for 4 + 4 rows against 2 × 169 ms).
        names = {"adapter_names": [r.job.adapter or BASE for r in rows]} if self.adapters else {}
        return self.model(use_cache=True, **kw, **names)

    def _prefill(self, rows: list[_Row]):
        import torch
        from transformers import DynamicCache

        # The n rows of a job share its prompt: prefill it once, then give each row its own copy of the
        # cache (GRPO's groups, ``n`` > 1 requests: a G-th of the prefill work).
        firsts, owner = [], []  # a job's rows sit together (``_admit``)
        for i, r in enumerate(rows):
            if i == 0 or r.job is not rows[i - 1].job:
                firsts.append(i)
            owner.append(len(firsts) - 1)
        prompts = [rows[i].job.prompt for i in firsts]
        width = max(len(p) for p in prompts)
        pad = self.tok.pad_token_id or 0
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate: padding sits at position 1
        cache = DynamicCache(config=self.model.config)
        out = self._forward([rows[i] for i in firsts], input_ids=ids, attention_mask=mask, position_ids=pos,
                            **{self.cache_kw: cache}, **self.keep_kw)
        logits = out.logits[:, -1].float()  # the cache was filled in place
        if len(firsts) == len(rows):
            return cache, mask, logits
        idx = torch.tensor(owner, device=self.device)
        for layer in cache.layers:
            layer.keys = layer.keys.index_select(0, idx)
            layer.values = layer.values.index_select(0, idx)
        return cache, mask.index_select(0, idx), logits.index_select(0, idx)

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

    def _step(self, rows: list[_Row], logits) -> None:
        """Pick and take each row's next token (a row whose pick fails ends with an error, alone)."""
        import torch

        chosen = logits.argmax(-1)
        drawn = [i for i, r in enumerate(rows) if r.sampler.batchable]
        if drawn:  # the sampled rows draw together: one host sync a step, not one a row
            idx = torch.tensor(drawn, device=logits.device)
            chosen.index_copy_(0, idx, draw_batch([rows[i].sampler for i in drawn], logits.index_select(0, idx)))
        chosen = chosen.tolist()
        logp = torch.log_softmax(logits, dim=-1) if any(r.job.logprobs is not None for r in rows) else None
        for i, r in enumerate(rows):
            if r.job.cancelled.is_set():
                r.done = True
                continue
            try:
                s = r.sampler
                tok = chosen[i] if s.plain or s.batchable else s.pick(logits[i], r.job.prompt + r.ids if s.penalty else [])
                lp = token_logprobs(logp[i], tok, r.job.logprobs) if r.job.logprobs is not None else None
                r.advance(tok, lp, self.stop_ids)
            except Exception as e:  # noqa: BLE001 — e.g. a constraint that allows nothing: this row only
                r.fail(f"{type(e).__name__}: {e}")

    def _admit(self, jobs: list[Job]) -> list[_Row]:
        new: list[_Row] = []
        for j in jobs:
            try:
                rows = [_Row(j, i, self.tok, self.device) for i in range(j.n)]
            except Exception as e:  # noqa: BLE001 — e.g. a constraint whose fork fails: this job only
                j.fail(f"{type(e).__name__}: {e}")
                continue
            new += rows
            j._call(j.started.set)
        return new

    def _decode(self, jobs: list[Job], admitted: list[_Row] | None = None) -> None:
        import torch

        rows: list[_Row] = []
        cache = mask = logits = None
        while True:
            new = admitted if admitted is not None else self._admit(jobs) if jobs else []
            admitted = None
            if new:  # prefill the new rows, then stack them with the running ones
                try:
                    c2, m2, l2 = self._prefill(new)
                except Exception as e:  # noqa: BLE001 — fail these requests, keep decoding the others
                    for r in new:
                        r.fail(f"{type(e).__name__}: {e}")
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
                    r.fail("the engine is shutting down")
                return
            self._step(rows, logits)
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
            jobs = self._take(room) if room and not self._stop.is_set() else []
            if not rows:
                if not jobs:
                    return
                continue
            ids = torch.tensor(tokens, device=self.device)[:, None]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            pos = mask.sum(-1, keepdim=True) - 1
            out = self._forward(rows, input_ids=ids, attention_mask=mask, position_ids=pos, **{self.cache_kw: cache})
            logits = out.logits[:, -1].float()
