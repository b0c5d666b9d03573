"""``tunesmith synth chunks``: a long text (a novel) → training pairs.

Without a teacher: continuation pairs — instruction "continue the passage", input = one chunk,
output = the next. Chunks end on sentence boundaries (``.!?…`` followed by a space, or
``。！？…``), are packed up to ``chunk_tokens`` tokens of the named tokenizer, and prefer to
end where a paragraph does; only a single sentence longer than ``chunk_tokens`` is cut inside.
With ``generate: true`` (seed 003) a teacher writes one Q/A pair from each chunk, and with
``judge: true`` a second pass scores each pair for faithfulness to its chunk and keeps the good
ones.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..config import DEFAULT_MODEL, Section
from ..data.types import Conversation, Turn
from ..errors import UserError
from ..fsutil import sha256_file
from .judge import RUBRIC, TEMPLATE, score_all
from .runner import Item, Outputs, item_key, run_items, teacher_info, to_row, write_rows
from .style import language_of
from .teacher import TeacherConfig

SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)|[。！？…]+[」』”’）]*")
INSTRUCTION = {"en": "Continue the passage.", "zh": "续写下面的段落。"}
GENERATE = {
    "en": ("Read the passage and write one question a reader could ask about it, with a full answer that uses "
           "only the passage. Reply with JSON only: {\"question\": \"...\", \"answer\": \"...\"}\n\n"
           "Passage:\n{chunk}"),
    "zh": ("阅读下面的段落，写出一个读者可能提出的问题，并只根据段落内容给出完整回答。只回复 JSON："
           "{\"question\": \"...\", \"answer\": \"...\"}\n\n段落：\n{chunk}"),
}


class ChunksConfig(Section):
    text: str = Field(..., description="the long text: a UTF-8 .txt or .md file, zh or en")
    out: str = Field(..., description="output .jsonl file, or a folder (data.jsonl + manifest.json inside)")
    tokenizer: str = Field(DEFAULT_MODEL, description="the tokenizer that counts chunk tokens (a model name or "
                                                      "folder; use the model you will train)")
    chunk_tokens: int = Field(256, ge=8, description="most tokens per chunk")
    language: Literal["auto", "en", "zh"] = Field("auto", description="for the default prompts (auto: from the "
                                                                      "text)")
    instruction: str | None = Field(None, description="the continuation instruction (default: zh or en)")
    generate: bool = Field(False, description="a teacher writes a Q/A pair from each chunk instead of "
                                              "continuation pairs")
    generate_template: str | None = Field(None, description="the generator's prompt with {chunk} (default: zh or "
                                                            "en; it must ask for JSON {question, answer})")
    judge: bool = Field(False, description="score the generated pairs and keep those ≥ min_score")
    min_score: float = Field(7.0, ge=1, le=10, description="with judge: keep pairs scoring at least this")
    rubric: dict[str, str] = Field(default_factory=lambda: {"faithfulness": RUBRIC["faithfulness"]},
                                   description="with judge: criterion → what it means")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    format: Literal["messages", "alpaca"] = Field("alpaca", description="output rows: alpaca or messages")
    max_items: int | None = Field(None, ge=1, description="use only the first N chunks (a cheap trial run)")


def read_text(path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"text: {path} not found")
    try:
        return p.read_bytes().decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise UserError(f"text: {path} is not UTF-8 (byte {e.start}); save it as UTF-8") from None


def sentences(paragraph: str) -> list[str]:
    """The paragraph cut after each sentence end; the pieces join back to the paragraph."""
    cuts = [m.end() for m in SENTENCE_END.finditer(paragraph)]
    bounds = [0] + [c for c in cuts if c < len(paragraph)] + [len(paragraph)]
    return [paragraph[a:b] for a, b in zip(bounds, bounds[1:]) if paragraph[a:b].strip()]


def chunk_text(text: str, tokenizer, chunk_tokens: int) -> list[str]:
    """Greedy packing of whole sentences; a chunk closes early at a paragraph end once it is half full."""
    units: list[tuple[str, bool]] = []   # (sentence, ends a paragraph)
    for para in re.split(r"\n\s*\n", text):
        sents = sentences(para.strip())
        units += [(s, k == len(sents) - 1) for k, s in enumerate(sents)]
    if not units:
        return []
    counts = [len(ids) for ids in tokenizer([s for s, _ in units], add_special_tokens=False)["input_ids"]]
    chunks: list[str] = []
    cur, n = "", 0

    def close():
        nonlocal cur, n
        if cur.strip():
            chunks.append(cur.strip())
        cur, n = "", 0

    for (sent, para_end), size in zip(units, counts):
        if size > chunk_tokens:  # one sentence too long for any chunk: cut it by tokens
            close()
            ids = tokenizer(sent, add_special_tokens=False)["input_ids"]
            chunks += [tokenizer.decode(ids[i:i + chunk_tokens]).strip() for i in range(0, len(ids), chunk_tokens)]
            continue
        if n + size > chunk_tokens:
            close()
        cur += sent
        n += size
        if para_end:
            if n >= chunk_tokens // 2:
                close()
            else:
                cur = cur.rstrip() + "\n\n"
    close()
    return chunks


def _pair(reply: str) -> tuple[str, str] | None:
    """The {question, answer} object in a generator's reply (code fences and chatter around it allowed)."""
    m = re.search(r"\{.*\}", reply, re.S)
    try:
        obj = json.loads(m.group(0)) if m else None
    except ValueError:
        return None
    if isinstance(obj, dict) and all(isinstance(obj.get(k), str) and obj[k].strip() for k in ("question", "answer")):
        return obj["question"].strip(), obj["answer"].strip()
    return None


def chunks(cfg: ChunksConfig) -> int:
    from ..models import load_tokenizer, resolve_model

    outputs = Outputs(cfg.out)
    text = read_text(cfg.text)
    lang = cfg.language if cfg.language != "auto" else language_of([text])
    tok = load_tokenizer(resolve_model(cfg.tokenizer))
    parts = chunk_text(text, tok, cfg.chunk_tokens)
    if len(parts) < 2:
        raise UserError(f"text: {cfg.text} makes {len(parts)} chunk(s) of ≤ {cfg.chunk_tokens} tokens; a pair needs "
                        "two (lower chunk_tokens or give a longer text)")
    parts = parts[:cfg.max_items]
    manifest = {"kind": "synth chunks", "text": cfg.text, "text_sha256": sha256_file(cfg.text), "language": lang,
                "tokenizer": cfg.tokenizer, "chunk_tokens": cfg.chunk_tokens, "chunks": len(parts), "format": cfg.format}
    if not cfg.generate:
        instr = cfg.instruction or INSTRUCTION[lang]
        rows = [{"instruction": instr, "input": a, "output": b} if cfg.format == "alpaca" else
                to_row(Conversation([Turn("user", f"{instr}\n\n{a}"), Turn("assistant", b)]), "messages")
                for a, b in zip(parts, parts[1:])]
        write_rows(outputs, rows, manifest)
        return 0
    template = cfg.generate_template or GENERATE[lang]
    items = []
    for i, chunk in enumerate(parts):
        messages = [{"role": "user", "content": template.replace("{chunk}", chunk)}]
        items.append(Item(item_key(messages, cfg.teacher), messages, {"source": f"{cfg.text}:chunk {i + 1}"}))
    res = run_items(items, cfg.teacher, outputs, "generate", "generate")
    convs, passages, unusable = [], [], 0
    for it, chunk in zip(items, parts):
        pair = _pair(res.answers[it.key]["content"]) if res.answers[it.key]["finish_reason"] != "length" else None
        if pair is None:
            unusable += 1
            continue
        convs.append(Conversation([Turn("user", pair[0]), Turn("assistant", pair[1])], source=it.meta["source"]))
        passages.append(chunk)
    if unusable:
        print(f"  generate: {unusable} of {len(items)} replies held no {{question, answer}} JSON; dropped")
    manifest.update(teacher=teacher_info(cfg.teacher), generated=len(convs), unusable=unusable)
    if cfg.judge and convs:
        # The judge sees the passage with the question, so "faithfulness" means faithful to the chunk.
        shown = [Conversation([Turn("user", f"Passage:\n{p}\n\nQuestion: {c.turns[0].content}"), c.turns[1]],
                              source=c.source) for c, p in zip(convs, passages)]
        scores = score_all(shown, cfg.teacher, cfg.rubric, TEMPLATE, outputs)
        before = len(convs)
        convs = [c for c, (s, _) in zip(convs, scores) if s is not None and s >= cfg.min_score]
        manifest.update(judged=before, kept=len(convs), min_score=cfg.min_score,
                        unparseable=sum(s is None for s, _ in scores))
        print(f"  judge: kept {len(convs)} of {before} pairs scoring ≥ {cfg.min_score}")
    write_rows(outputs, [to_row(c, cfg.format) for c in convs], manifest)
    return 0
