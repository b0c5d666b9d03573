"""``tunesmith synth preference``: preference pairs (chosen / rejected) for DPO, IPO or SimPO.

Two sources, no teacher needed:

- identity (``--name``, ``--author``): chosen = the shipped identity answer with the names
  filled in; rejected = what the model (the base you will tune) answers to the same question,
  generated greedily in batches. DPO then pushes the new identity up *and* the old one down.
- two answer files of the same prompts (``--chosen A.jsonl --rejected B.jsonl``), e.g. two
  ``tunesmith predict`` outputs (tuned vs base, teacher vs student): rows are matched by id,
  the answer of A is chosen and that of B rejected.

Pairs whose two answers are the same are skipped (they teach nothing). The output is
``{"messages": [...prompt], "chosen": {...}, "rejected": {...}}`` per line, which the data
layer reads as preference rows, plus a manifest; both are written whole (temp + rename).
"""
from __future__ import annotations

from pydantic import Field, model_validator

from ..config import AdaptedModelSection
from ..data.names import LANGS, IdentityNames, Lang
from ..errors import UserError
from ..infer.sampling import GenParams
from .runner import Outputs, write_rows


class PreferenceConfig(AdaptedModelSection):
    out: str = Field(..., description="output .jsonl file, or a folder (data.jsonl + manifest.json inside)")
    chosen: str | None = Field(None, description="answers file whose answers are chosen (a predict output: "
                                                 "id, messages or prompt, response)")
    rejected: str | None = Field(None, description="answers file of the same prompts whose answers are rejected")
    name: str | None = Field(None, description="identity case: the model's new name")
    author: str | None = Field(None, description="identity case: who made it")
    names: IdentityNames = Field(default_factory=IdentityNames, description="per-language names (names.name_zh …)")
    languages: list[Lang] = Field(default_factory=lambda: list(LANGS), description="identity languages: en, zh")
    max_pairs: int | None = Field(None, gt=0, description="identity case: use only the first N questions")
    batch_size: int = Field(16, gt=0, description="identity case: most questions decoded together")
    gen: GenParams = Field(default_factory=lambda: GenParams(max_new_tokens=128),
                           description="identity case: how the model's own (rejected) answers are generated")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.chosen is None) != (self.rejected is None):
            raise ValueError("chosen and rejected: pass both answer files (or neither, for the identity case)")
        if self.chosen and (self.name or self.author):
            raise ValueError("name/author are for the identity case; with chosen/rejected files leave them out")
        return self


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _pair(messages: list[dict], chosen: str, rejected: str) -> dict:
    return {"messages": messages, "chosen": {"role": "assistant", "content": chosen},
            "rejected": {"role": "assistant", "content": rejected}}


def identity_pairs(cfg: PreferenceConfig) -> tuple[list[dict], dict]:
    from ..infer.engine import Engine
    from .identity import identity_messages

    names = cfg.names.with_shortcuts(cfg.name, cfg.author, "synth preference")
    rows = identity_messages(names, cfg.languages)[:cfg.max_pairs]
    engine = Engine.load(cfg.model, cfg.adapter or None, cfg.dtype, cfg.device, cfg.trust_remote_code,
                         max_batch=cfg.batch_size)
    prompts = [r["messages"][:-1] for r in rows]
    own = engine.generate(prompts, cfg.gen)
    pairs, same, empty = [], 0, 0
    for r, p, answer in zip(rows, prompts, own):
        ideal = r["messages"][-1]["content"]
        if not answer.strip():  # the model stopped at once: nothing to push down
            empty += 1
        elif _same(ideal, answer):
            same += 1
        else:
            pairs.append(_pair(p, ideal, answer))
    if empty:
        print(f"skipped {empty} questions the model answered with nothing")
    return pairs, {"mode": "identity", "model": cfg.model, "adapter": cfg.adapter, "questions": len(rows),
                   "skipped_same_answer": same, "skipped_empty_answer": empty, "gen": cfg.gen.model_dump()}


def _answers(path: str) -> dict[str, tuple[list[dict], str]]:
    from ..infer.predict import read_requests

    out = {}
    for rid, row, msgs in read_requests(path):
        answer = row.get("response")
        if not isinstance(answer, str) or not answer.strip():
            raise UserError(f"{path}: id {rid}: response: needs the answer as a non-empty string "
                            "(a `tunesmith predict` output has it)")
        out[rid] = (msgs, answer)
    if not out:
        raise UserError(f"{path} has no rows")
    return out


def answer_pairs(cfg: PreferenceConfig) -> tuple[list[dict], dict]:
    good, bad = _answers(cfg.chosen), _answers(cfg.rejected)
    common = [rid for rid in good if rid in bad]
    if not common:
        raise UserError(f"chosen ({cfg.chosen}) and rejected ({cfg.rejected}) share no id: answer the same prompts "
                        "file with both models")
    pairs, same = [], 0
    for rid in common:
        (p1, a1), (p2, a2) = good[rid], bad[rid]
        if p1 != p2:
            raise UserError(f"id {rid}: the prompt differs between {cfg.chosen} and {cfg.rejected}: answer the same "
                            "prompts file with both models")
        if _same(a1, a2):
            same += 1
            continue
        pairs.append({"id": rid, **_pair(p1, a1, a2)})
    return pairs, {"mode": "answers", "chosen": cfg.chosen, "rejected": cfg.rejected, "matched": len(common),
                   "only_in_one_file": len(good) + len(bad) - 2 * len(common), "skipped_same_answer": same}


def preference(cfg: PreferenceConfig) -> int:
    outputs = Outputs(cfg.out)
    pairs, info = answer_pairs(cfg) if cfg.chosen else identity_pairs(cfg)
    if not pairs:
        raise UserError("no pair left: every rejected answer equals its chosen one")
    write_rows(outputs, pairs, {"kind": "synth preference", **info})
    if info["skipped_same_answer"]:
        print(f"skipped {info['skipped_same_answer']} prompts whose two answers are the same")
    return 0
