"""Self-distilled replay: the base model answers general prompts before training, and those
answers are mixed into training so the model keeps its own voice without outside data.

Answers are cached per base-model content hash (and prompt set and length), through the
resumable ``predict`` path, so a second run — or a killed one — costs nothing extra."""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

from ..fsutil import write_atomic
from ..infer import GenParams
from ..infer.predict import PredictConfig, predict
from ..manifest import model_hash
from ..models import resolve_model, tunesmith_home
from .identity import general_prompts


SENTENCE_END = re.compile(r"[.!?]['\"”’)]?(?=\s|$)|[。！？]['\"”’）」]?|\n")


def trim_to_sentence(text: str, keep_at_least: float = 0.3) -> str:
    """Cut an answer that ran into the token limit back to its last complete sentence, so
    training never ends a turn mid-sentence; '' when that would keep too little."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    if not ends or ends[-1] < keep_at_least * len(text):
        return ""
    return text[:ends[-1]].strip()


def replay_rows(model: str, languages: list[str], count: int | None, max_new_tokens: int, batch_size: int,
                seed: int = 0, dtype: str | None = None, device: str | None = None,
                trust_remote_code: bool = False, progress: bool = True) -> tuple[list[dict], dict]:
    """``({"messages": [...]}, info)``: the base model's own answers to ``count`` shipped prompts.
    Answers that ran into ``max_new_tokens`` are trimmed to their last full sentence (training
    on a cut-off answer would teach the model to stop mid-sentence)."""
    prompts = general_prompts(languages)
    if count is not None and count < len(prompts):
        prompts = random.Random(seed).sample(prompts, count)
    texts = [p["prompt"] for p in prompts]
    base_hash = model_hash(resolve_model(model))
    key = hashlib.sha256(json.dumps([texts, max_new_tokens, dtype]).encode()).hexdigest()[:16]
    folder = tunesmith_home() / "replay"
    out = folder / f"{base_hash[:16]}-{key}.jsonl"
    inp = folder / f"{base_hash[:16]}-{key}.in.jsonl"
    if not inp.is_file():
        write_atomic(inp, "".join(json.dumps({"id": str(i), "prompt": t}, ensure_ascii=False) + "\n"
                                  for i, t in enumerate(texts)))
    predict(PredictConfig(model=model, input=str(inp), output=str(out), batch_size=batch_size, dtype=dtype,
                          device=device, trust_remote_code=trust_remote_code, progress=progress,
                          gen=GenParams(max_new_tokens=max_new_tokens)))
    from ..models import load_tokenizer

    tok = load_tokenizer(resolve_model(model), trust_remote_code=trust_remote_code)
    rows, trimmed, dropped = [], 0, 0
    for line in Path(out).read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        answer = r["response"].strip()
        if answer and len(tok(answer, add_special_tokens=False)["input_ids"]) >= max_new_tokens - 1:
            answer = trim_to_sentence(answer)
            trimmed += 1
        if not answer:
            dropped += 1
            continue
        rows.append({"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": answer}]})
    info = {"prompts": len(texts), "kept": len(rows), "trimmed": trimmed, "dropped": dropped, "cache": str(out),
            "base_hash": base_hash}
    return rows, info
