"""Static-cache decoding, replayed as one CUDA graph a step.

On a GPU a small model's decode step is bound by launching its ~1,000 kernels (the LoRA layers
add four each), not by their work: SmolLM2-135M at 32 rows spends ~100 ms a step eager. Captured
once as a CUDA graph (``torch.cuda.CUDAGraph``, no compiler) over fixed buffers — transformers'
``StaticCache``, a 4-D attention mask, the next tokens and positions — a step is one replay.
LoRA weights are read at replay time, so a training loop's optimizer steps are seen by the next
rollout without a new capture (the autocast casts are kernels inside the graph).

The batch is fixed while it decodes: rows that end feed a padding token until the last one ends,
and new requests wait for the batch to end (no joins). The verbs and GRPO submit their rows at
once, so they lose nothing; the server keeps the joining loop unless told otherwise
(``serve --cuda_graphs``). ``StaticDecoder`` also runs eagerly (no capture: the CPU, tests).
"""
from __future__ import annotations

import inspect

BUCKET = 128  # cache lengths are rounded up to this, so nearby lengths share one capture


def unusable(model, device, adapters: bool) -> str | None:
    """Why static decoding cannot serve ``model`` (None: it can)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    if adapters:
        return "named adapters (a mixed batch) decode with the joining loop"
    if getattr(cfg, "_attn_implementation", None) != "sdpa":
        return f"attention {getattr(cfg, '_attn_implementation', None)!r} (static decoding uses sdpa)"
    if getattr(cfg, "sliding_window", None) or any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or []):
        return "sliding-window attention"
    if getattr(cfg, "is_encoder_decoder", False):
        return "encoder-decoder model"
    if getattr(base, "is_quantized", False) or getattr(base, "is_loaded_in_4bit", False):
        return "quantized weights"
    if any(p.device != device for p in model.parameters()):
        return "weights held off the device"
    return None


def wanted(model, device, adapters: bool, graphs: bool | None) -> bool:
    """Whether the scheduler decodes fixed batches: ``graphs`` (None: on CUDA) where the model allows it."""
    return (device.type == "cuda" if graphs is None else graphs) and unusable(model, device, adapters) is None


def round_up(n: int, to: int) -> int:
    return -(-n // to) * to


class StaticDecoder:
    """A fixed batch of ``rows`` rows and a ``length``-token cache; ``graph``: capture the step
    (CUDA) or run it eagerly. ``prefill`` starts a batch, ``step`` decodes one token for every row."""

    def __init__(self, model, rows: int, length: int, device, cache_kw: str, graph: bool):
        import torch
        from transformers import StaticCache

        self.model, self.rows, self.length, self.device = model, rows, length, device
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.config = base.config
        params = inspect.signature(type(base).forward).parameters
        # transformers before the cache kept its own length took the write position as ``cache_position``
        self.positional = "cache_position" in params
        self.cache_kw = cache_kw
        self.cache = StaticCache(config=self.config, max_cache_len=length)
        self.ids = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.pos = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.where = torch.zeros((1,), dtype=torch.long, device=device)
        self.mask = torch.zeros((rows, 1, 1, length), dtype=torch.bool, device=device)
        self.col = 0
        self.graph = None
        self.out = None
        self.pointers: list[int] = []
        if graph:
            self._capture()

    def stale(self) -> bool:
        """Whether a weight moved since the capture (the graph would read freed memory): capture anew."""
        return self.graph is not None and [p.data_ptr() for p in self.model.parameters()] != self.pointers

    def fits(self, rows: int, length: int) -> bool:
        return rows <= self.rows <= max(8, 2 * rows) and length <= self.length

    def _forward(self, ids, pos, mask, where, **kw):
        extra = {"cache_position": where} if self.positional else {}
        out = self.model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=True,
                         **{self.cache_kw: self.cache}, **extra, **kw)
        return out.logits[:, -1].float()

    def _capture(self) -> None:
        import torch

        # Warm up on a side stream (first-use allocations, the cache's own), then record one step.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward(self.ids, self.pos, self.mask, self.where)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.pointers = [p.data_ptr() for p in self.model.parameters()]
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._forward(self.ids, self.pos, self.mask, self.where)

    def prefill(self, prompts: list[list[int]], pad: int, keep: dict):
        """Fill the cache with ``prompts`` (one a row, ``len(prompts) <= rows``; the rest are padding
        rows), left-padded as ``generate`` pads; returns each prompt's next-token logits."""
        import torch

        n = len(prompts)
        width = max(len(p) for p in prompts)
        if width >= self.length:
            raise ValueError(f"prompt of {width} tokens does not fit a {self.length}-token cache")
        prompts = list(prompts) + [[pad]] * (self.rows - len(prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        valid = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in prompts], device=self.device)
        pos = (valid.long().cumsum(-1) - 1).masked_fill(~valid, 1)  # padding sits at position 1, as in generate
        q = torch.arange(width, device=self.device)[:, None]
        k = torch.arange(self.length, device=self.device)[None, :]
        keys = torch.zeros((self.rows, self.length), dtype=torch.bool, device=self.device)
        keys[:, :width] = valid
        # A padding position attends to itself alone, so no query row is all -inf (its state is never read).
        mask = ((k <= q)[None] & keys[:, None, :]) | (k == q)[None]
        self.cache.reset()
        logits = self._forward(ids, pos, mask[:, None], torch.arange(width, device=self.device), **keep)
        self.mask.copy_(keys[:, None, None, :])
        self.pos.copy_(pos[:, -1:])
        self.col = width
        return logits[:n]

    def step(self, tokens):
        """One token for every row (``tokens``: [rows] on the device); the next logits [rows, vocab]."""
        self.ids.copy_(tokens.view(-1, 1))
        self.pos.add_(1)
        self.mask[:, 0, 0, self.col] = True
        self.where.fill_(self.col)
        self.col += 1
        if self.graph is None:
            return self._forward(self.ids, self.pos, self.mask, self.where)
        self.graph.replay()
        return self.out


def decode(sched, jobs) -> None:
    """The scheduler's loop for one fixed batch: ``jobs`` admitted together, decoded with a
    ``StaticDecoder`` (kept on the scheduler and reused while the batch fits it) until every row ends."""
    import warnings

    import torch

    rows = sched._admit(jobs)
    sched._active = rows
    if not rows:
        return
    sched.stats["max_rows"] = max(sched.stats["max_rows"], len(rows))
    need = max(len(r.job.prompt) for r in rows) + max(r.job.params.max_new_tokens for r in rows) + 1
    dec = sched._static
    if dec is None or not dec.fits(len(rows), need) or dec.stale():
        sched._static = dec = None  # the old capture's memory goes before the new one is taken
        graph = sched.device.type == "cuda" and sched.capture
        try:
            dec = StaticDecoder(sched.model, round_up(len(rows), 8), round_up(need, BUCKET), sched.device,
                                sched.cache_kw, graph)
        except Exception as e:  # noqa: BLE001 — a model the capture cannot take decodes with the joining loop
            warnings.warn(f"tunesmith: decoding without CUDA graphs for this model ({type(e).__name__}: {e})",
                          stacklevel=1)
            sched.static = False
            sched._decode(jobs, rows)
            return
        sched._static = dec
        sched.stats["captures"] = sched.stats.get("captures", 0) + int(graph)
    sched.stats["static_batches"] = sched.stats.get("static_batches", 0) + 1
    pad = sched.tok.pad_token_id or 0
    logits = dec.prefill([r.job.prompt for r in rows], pad, sched.keep_kw)
    tokens = torch.full((dec.rows,), pad, dtype=torch.long)
    while True:
        if sched._stop.is_set():
            for r in rows:
                if not r.done:
                    r.fail("the engine is shutting down")
            return
        live = [i for i, r in enumerate(rows) if not r.done]
        if live:
            sched._step([rows[i] for i in live], logits if len(live) == len(rows) else logits[live])
        live = [i for i in live if not rows[i].done]
        if not live:
            return
        for i in live:
            tokens[i] = rows[i].ids[-1]
        logits = dec.step(tokens.to(sched.device, non_blocking=True))[: len(rows)]
