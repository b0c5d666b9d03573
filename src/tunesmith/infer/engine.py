"""The one generation engine: chat, predict, evaluation, synth and the server all decode through ``Engine``.

``Engine.load`` loads a base model (unnamed adapters applied in order, as every verb does) and, beside
it, named adapters a request may pick. Decoding is the engine's own continuous-batching loop
(``scheduler.py``): the sync API (``generate``, ``answers``, ``stream``) submits every row at once and
lets the loop batch them; the server submits ``Job``s and reads their events on its asyncio loop.
"""
from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..models.template import end_of_turn_ids, template_kwargs
from .sampling import GenParams, check_constraint
from .scheduler import BASE, Event, Job, QueueFull, Scheduler

__all__ = ["Engine", "Event", "GenParams", "Job", "QueueFull"]


class Engine:
    """A loaded model and tokenizer and the loop that decodes with them.

    ``max_batch``: most rows decoded together; ``max_queue``: most rows waiting for a bounded
    ``submit`` (the server's 503); ``prefill_rows``: most new prompts prefilled in one step (default
    ``max_batch``); ``adapters``: the names of the named adapters loaded into ``model`` (a PeftModel);
    ``graphs``: decode fixed batches over a static cache, one CUDA graph a step (``graphs.py``;
    None: on CUDA where the model allows it), so rows submitted later wait for the batch to end."""

    def __init__(self, model, tokenizer, *, max_batch: int = 32, max_queue: int = 256,
                 prefill_rows: int | None = None, adapters: tuple[str, ...] = (), autocast=None,
                 graphs: bool | None = None):
        self.model = model
        self.tok = tokenizer
        self.stop_ids = end_of_turn_ids(tokenizer)
        self.adapters = tuple(adapters)
        self.scheduler = Scheduler(model, tokenizer, self.stop_ids, max_batch, max_queue, prefill_rows,
                                   adapters=bool(self.adapters), autocast=autocast, graphs=graphs)

    @classmethod
    def load(cls, model: str, adapter: str | list[str] | None = None, dtype: str | None = None,
             device: str | None = None, trust_remote_code: bool = False, *,
             named_adapters: dict[str, str] | None = None, **limits) -> "Engine":
        """Load ``model`` with ``adapter`` (a list, applied in order) and each of ``named_adapters``
        (``{name: adapter or run folder}``, each trained on ``model`` + ``adapter``), which a request
        picks by name. ``limits``: ``max_batch``, ``max_queue``, ``prefill_rows``, ``graphs``."""
        from ..models import load_model

        named = dict(named_adapters or {})
        if not named:
            m, tok, _ = load_model(model, adapter, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
            return cls(m, tok, **limits)
        from ..models.load import check_adapters

        if BASE in named:
            raise UserError(f"named adapter '{BASE}' is reserved (it means the base model)")
        unnamed = [adapter] if isinstance(adapter, str) else list(adapter or [])
        # The lineage check (one line, before any weights load): each named adapter sits on base + unnamed.
        folders = {name: check_adapters(model, [*unnamed, path])[1][-1] for name, path in named.items()}
        # Named adapters stay apart, so the unnamed ones are all folded into the base first.
        m, tok, model_dir = load_model(model, unnamed, dtype=dtype, device=device,
                                       trust_remote_code=trust_remote_code, merge=True)
        return cls(_add_adapters(m, folders, model_dir), tok, adapters=tuple(named), **limits)

    # ---- prompts ----
    def prompt_ids(self, messages: list[dict[str, Any]], enable_thinking: bool | None = None) -> list[int]:
        out = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           **template_kwargs(self.tok, enable_thinking))
        return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)

    def _check_adapter(self, adapter: str | None) -> None:
        if adapter is not None and adapter not in self.adapters:
            have = ", ".join(self.adapters) or "none"
            raise UserError(f"adapter '{adapter}' is not loaded (named adapters: {have})")

    # ---- the job API (the server) ----
    def submit(self, *jobs: Job, bounded: bool = True) -> None:
        """Queue ``jobs`` for the decode loop (started on first use); jobs submitted together are prefilled
        together (up to ``prefill_rows`` prompts). Raises QueueFull, queueing none, when ``bounded`` and more than
        ``max_queue`` rows would wait; UserError for an adapter that is not loaded."""
        for job in jobs:
            self._check_adapter(job.adapter)
        self.scheduler.submit(*jobs, bounded=bounded)

    def stop(self) -> None:
        """End every running and waiting row (finish "error") and the decode thread."""
        self.scheduler.stop()

    @property
    def stats(self) -> dict:
        return self.scheduler.stats

    # ---- the sync API (the verbs) ----
    def answers(self, batch: list[list[dict[str, Any]]], params: GenParams | None = None,
                adapter: str | None = None) -> Iterator[tuple[int, str]]:
        """``(index in batch, answer)`` for each conversation, as each answer ends. All rows are submitted
        at once; the loop decodes up to ``max_batch`` of them together. Closing the iterator cancels the rest."""
        p = params or GenParams()
        check_constraint(p, len(batch))
        events: queue.Queue[Event] = queue.Queue()
        jobs = [Job(self.prompt_ids(m, p.enable_thinking), p, adapter=adapter, events=events, stream=False)
                for m in batch]
        where = {id(j): k for k, j in enumerate(jobs)}
        texts: list[list[str]] = [[] for _ in jobs]
        try:
            self.submit(*jobs, bounded=False)
            for _ in jobs:
                while True:
                    ev = events.get()
                    if ev.finish == "error":
                        raise RuntimeError(ev.text)
                    k = where[id(ev.job)]
                    texts[k].append(ev.text)
                    if ev.finish:
                        break
                yield k, "".join(texts[k]).strip()
        finally:
            for j in jobs:
                j.cancel()

    def generate(self, batch: list[list[dict[str, Any]]], params: GenParams | None = None,
                 adapter: str | None = None) -> list[str]:
        """The answer to each conversation in ``batch``, in order (decoded together by the loop)."""
        out: list[str] = [""] * len(batch)
        for k, text in self.answers(batch, params, adapter):
            out[k] = text
        return out

    def stream(self, messages: list[dict[str, Any]], params: GenParams | None = None,
               adapter: str | None = None) -> Iterator[str]:
        """Pieces of the answer to ``messages`` as they are decoded (stop strings already cut)."""
        p = params or GenParams()
        job = Job(self.prompt_ids(messages, p.enable_thinking), p, adapter=adapter)
        self.submit(job, bounded=False)
        try:
            while True:
                ev = job.events.get()
                if ev.finish == "error":
                    raise RuntimeError(ev.text)
                if ev.text:
                    yield ev.text
                if ev.finish:
                    return
        finally:
            job.cancel()


def _add_adapters(model, folders: dict[str, Path], model_dir: Path):
    """``model`` as a PeftModel holding each named adapter (a batch names one per row). A shape
    mismatch, or saved weights that fit no layer, mean the adapter belongs to another base: one line,
    as ``models.load.apply_adapter`` says it for an adapter applied in order."""
    import warnings

    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict, load_peft_weights

    pm = None
    for name, folder in folders.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # weights that fit no layer are checked below, with a clearer message
                if pm is None:
                    pm = PeftModel.from_pretrained(model, str(folder), adapter_name=name)
                else:
                    pm.load_adapter(str(folder), adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as e:
            lines = str(e).splitlines() or [type(e).__name__]
            first = next((ln.strip() for ln in lines if "size mismatch" in ln), lines[0].strip())
            raise UserError(f"adapter {folder} does not fit {model_dir}: {first[:240]}; "
                            "was it trained on another base model?") from None
        stray = sorted(set(load_peft_weights(str(folder))) - set(get_peft_model_state_dict(pm, adapter_name=name)))
        if stray:
            raise UserError(f"adapter {folder} does not fit {model_dir}: {len(stray)} of its weights match no "
                            f"layer (e.g. {stray[0]}); was it trained on another base model?")
    pm.eval()
    return pm
