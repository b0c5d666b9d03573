"""Conversation → ``input_ids`` and ``labels``, rendered by the tokenizer's own chat template.

The text is exactly what ``tokenizer.apply_chat_template`` makes, tokenized the same way,
so training sees what inference will. Labels are -100 except on assistant turns: each
turn's span runs from the end of the template's generation prompt (what the model is given
at inference) to the end-of-turn token included (``<|im_end|>``, not the newline after it).
Spans are found by rendering the prefix before each assistant turn, so no template is
written by hand here; a token is trained when it starts inside a span.
"""
from __future__ import annotations

import gc
import json
import multiprocessing
import os
from bisect import bisect_left
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import UserError
from ..models.template import end_of_turn_ids, ensure_chat_template, supports_thinking, template_kwargs
from .types import Conversation

IGNORE = -100


@dataclass(frozen=True)
class TemplateFacts:
    eot: str | None          # text of the token that ends an assistant turn, when the template has one
    native_reasoning: bool   # the template reads ``reasoning_content`` itself (Qwen3 style)
    thinking_switch: bool    # the template has ``enable_thinking``


def template_facts(tokenizer) -> TemplateFacts:
    """What rendering needs to know about a template. Raises UserError when there is none."""
    ensure_chat_template(tokenizer, None, "tokenizer")
    marker = "Qx9Marker"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": marker}], tokenize=False)
    tail = text.split(marker, 1)[1] if marker in text else ""
    eot = None
    ids = end_of_turn_ids(tokenizer)
    if ids:
        candidate = tokenizer.decode(ids[:1])
        eot = candidate if candidate and tail.startswith(candidate) else None
    template = tokenizer.chat_template or ""
    return TemplateFacts(eot, "reasoning_content" in template, supports_thinking(tokenizer))


def template_messages(conv: Conversation, tokenizer, facts: TemplateFacts | None = None) -> tuple[list[dict], dict]:
    """The messages and template kwargs a conversation is rendered with.

    Reasoning goes in ``reasoning_content`` for templates that read it, else inline as
    ``<think>\\n…\\n</think>\\n\\n`` before the answer. A template with a thinking switch
    renders rows without reasoning in its non-thinking form."""
    facts = facts or template_facts(tokenizer)
    msgs = conv.to_messages()
    if not facts.native_reasoning:
        for m in msgs:
            if "reasoning_content" in m:
                m["content"] = f"<think>\n{m.pop('reasoning_content')}\n</think>\n\n{m['content']}"
    thinking = any(t.reasoning for t in conv.turns)
    return msgs, template_kwargs(tokenizer, thinking) if facts.thinking_switch else {}


def render(conv: Conversation, tokenizer, cutoff_len: int | None, mask_history: bool = False) -> dict | None:
    """One conversation → ``{"input_ids", "labels"}``; None when no trainable token is left
    within ``cutoff_len``. Raises UserError when the template refuses the conversation."""
    rows, errors = render_many([conv], tokenizer, cutoff_len, mask_history)
    if errors:
        raise UserError(f"{conv.source or 'conversation'}: template: {errors[0]}")
    return rows[0]


def render_many(convs: list[Conversation], tokenizer, cutoff_len: int | None, mask_history: bool = False,
                num_workers: int = 1, batch_size: int = 512) -> tuple[list[dict | None], dict[int, str]]:
    """Render many conversations in batches (in ``num_workers`` processes when > 1).

    Returns the rendered rows (None where nothing trainable is left) and, by index, the
    error of each row the chat template refused (those rows are None too)."""
    facts = template_facts(tokenizer)
    chunks = [convs[i:i + batch_size] for i in range(0, len(convs), batch_size)]
    args = [(chunk, cutoff_len, mask_history) for chunk in chunks]
    with _no_gc():
        if num_workers > 1 and len(chunks) > 1:
            with _quiet_fork():
                ctx = multiprocessing.get_context("fork")  # workers inherit the tokenizer: nothing to pickle
                with ctx.Pool(num_workers, initializer=_init_worker, initargs=(tokenizer, facts)) as pool:
                    results = pool.map(_worker_chunk, args, chunksize=1)
        else:
            results = [_render_chunk(*a, tokenizer, facts) for a in args]
    rows: list[dict | None] = []
    errors: dict[int, str] = {}
    for chunk_rows, chunk_errors in results:
        errors.update({len(rows) + i: e for i, e in chunk_errors.items()})
        rows += chunk_rows
    return rows, errors


@contextmanager
def _no_gc():
    """Rendering builds millions of small int lists and no reference cycles; the cyclic GC
    would rescan them over and over (about 9% of the time at 30k rows)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def _quiet_fork():
    """tokenizers warns when a process forks after using its Rust thread pool (and turns
    the pool off in the child). Each worker is one process anyway: say so up front."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


_WORKER: dict = {}


def _init_worker(tokenizer, facts: TemplateFacts) -> None:
    _WORKER["tok"], _WORKER["facts"] = tokenizer, facts


def _worker_chunk(args):
    return _render_chunk(*args, _WORKER["tok"], _WORKER["facts"])


def _render_chunk(convs: list[Conversation], cutoff_len: int | None, mask_history: bool, tok,
                  facts: TemplateFacts) -> tuple[list[dict | None], dict[int, str]]:
    prepared = [(*template_messages(c, tok, facts), c.tools) for c in convs]
    texts: list[str | None] = [None] * len(convs)
    spans: list[list[tuple[int, int]]] = [[] for _ in convs]
    errors: dict[int, str] = {}
    groups: dict[str, list[int]] = defaultdict(list)  # one template call per (kwargs, tools)
    for i, (_, kwargs, tools) in enumerate(prepared):
        groups[json.dumps([kwargs, tools], sort_keys=True)].append(i)
    for idx in groups.values():
        try:
            done = _texts_and_spans([prepared[i] for i in idx], tok, facts)
        except Exception:  # one row broke the batched call: find it by rendering one at a time
            done = []
            for i in idx:
                try:
                    done += _texts_and_spans([prepared[i]], tok, facts)
                except Exception as e:  # noqa: BLE001 — a template raising is about this row
                    errors[i] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
                    done.append((None, []))
        for i, (text, sp) in zip(idx, done):
            texts[i], spans[i] = text, sp
    ok = [i for i, t in enumerate(texts) if t is not None]
    rows: list[dict | None] = [None] * len(convs)
    for i, (ids, offsets) in zip(ok, _encode(tok, [texts[i] for i in ok])):
        rows[i] = _labelled(ids, offsets, spans[i][-1:] if mask_history else spans[i], cutoff_len)
    return rows, errors


def _encode(tok, texts: list[str]):
    """(ids, char offsets) per text, tokenized as ``apply_chat_template(tokenize=True)`` does.
    The Rust tokenizer's batch call is used directly when nothing in the Python wrapper
    changes the result: it skips building a dict per row (~15% of rendering time)."""
    if not texts:
        return []
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None and not getattr(tok, "split_special_tokens", False):
        return [(e.ids, e.offsets) for e in backend.encode_batch(texts, add_special_tokens=False)]
    enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
    return list(zip(enc["input_ids"], enc["offset_mapping"]))


def _labelled(ids: list[int], offsets, spans: list[tuple[int, int]], cutoff_len: int | None) -> dict | None:
    starts = [a for a, _ in offsets]
    labels = [IGNORE] * len(ids)
    for s, e in spans:
        lo, hi = bisect_left(starts, s), bisect_left(starts, e)
        labels[lo:hi] = ids[lo:hi]
    if cutoff_len is not None:
        ids, labels = ids[:cutoff_len], labels[:cutoff_len]
    if all(x == IGNORE for x in labels):
        return None
    return {"input_ids": list(ids), "labels": labels}


def _apply(tok, convs: list[list[dict]], tools, gen: bool, kwargs: dict) -> list[str]:
    return tok.apply_chat_template(convs, tools=tools, tokenize=False, add_generation_prompt=gen, **kwargs)


def _texts_and_spans(items, tok, facts: TemplateFacts) -> list[tuple[str, list[tuple[int, int]]]]:
    """Rendered text and assistant spans (char offsets) for rows sharing kwargs and tools.

    Usually the full text starts with the prefix rendered up to each assistant turn plus the
    generation prompt, and the turn starts right there. Where it doesn't (a template that
    renders history differently, like Qwen3 dropping old reasoning), the turn is found after
    the prefix without the prompt, skipping whichever header the template put there."""
    _, kwargs, tools = items[0]
    fulls = _apply(tok, [m for m, _, _ in items], tools, False, kwargs)
    jobs = [(r, i) for r, (msgs, _, _) in enumerate(items) for i, m in enumerate(msgs) if m["role"] == "assistant"]
    if not jobs:
        return [(full, []) for full in fulls]
    prompted = _apply(tok, [items[r][0][:i] for r, i in jobs], tools, True, kwargs)
    starts = [len(p) if fulls[r].startswith(p) else None for (r, _), p in zip(jobs, prompted)]
    odd = [j for j, s in enumerate(starts) if s is None]
    if odd:
        prefixes = [items[jobs[j][0]][0][:jobs[j][1]] for j in odd]
        before = _apply(tok, prefixes, tools, False, kwargs)
        headers = [prompted[j] for j in odd]
        alt = None
        if kwargs.get("enable_thinking") is False:  # history turns use the thinking form's plain header
            alt = _apply(tok, prefixes, tools, True, {**kwargs, "enable_thinking": True})
        for k, j in enumerate(odd):
            r = jobs[j][0]
            full, pre = fulls[r], before[k]
            options = [h[len(pre):] for h in (headers[k], alt[k] if alt else "") if h.startswith(pre)]
            if full.startswith(pre):
                start = len(pre)
            else:  # search after this row's previous turn
                earlier = [starts[j2] for j2 in range(j) if jobs[j2][0] == r]
                start = _find_any(full, options, earlier[-1] if earlier else 0)
            for h in sorted(options, key=len, reverse=True):
                if h and full.startswith(h, start):
                    start += len(h)
                    break
            starts[j] = start
    spans: list[list[tuple[int, int]]] = [[] for _ in items]
    for j, (r, i) in enumerate(jobs):
        end = _turn_end(fulls[r], starts[j], facts.eot, items[r][0][i].get("content") or "")
        spans[r].append((starts[j], end))
    return [(full, sp) for full, sp in zip(fulls, spans)]


def _find_any(text: str, headers: list[str], pos: int) -> int:
    """Fallback for templates whose prefix renders differ from the full render."""
    hits = [text.find(h, pos) for h in headers if h]
    hits = [h for h in hits if h >= 0]
    return min(hits) if hits else pos


def _turn_end(full: str, start: int, eot: str | None, content: str) -> int:
    if eot:
        e = full.find(eot, start)
        if e >= 0:
            return e + len(eot)
    c = full.find(content.strip(), start) if content.strip() else -1
    return c + len(content.strip()) if c >= 0 else start
