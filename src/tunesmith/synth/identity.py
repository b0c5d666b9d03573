"""Self-cognition data: the shipped rows (and any user file) with name and author filled in.

Placeholders: ms-swift's ``{{NAME}}`` / ``{{AUTHOR}}`` and LLaMA-Factory's lowercase
``{{name}}`` / ``{{author}}`` both work, so a user's existing identity file just works.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Any

from ..data.names import LANGS, IdentityNames, fill
from ..errors import UserError


def _asset(name: str) -> list[dict[str, Any]]:
    text = resources.files("tunesmith.synth").joinpath("assets", name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def identity_rows(languages: list[str] | tuple[str, ...] = LANGS) -> list[dict[str, Any]]:
    """The shipped training rows (``lang, topic, query, response``) in ``languages``."""
    return [r for r in _asset("identity.jsonl") if r["lang"] in languages]


def general_prompts(languages: list[str] | tuple[str, ...] = LANGS) -> list[dict[str, Any]]:
    """Prompts the base model answers before training (self-distilled replay)."""
    return [r for r in _asset("general_prompts.jsonl") if r["lang"] in languages]


def identity_messages(names: IdentityNames, languages=LANGS, thinking: bool = False) -> list[dict[str, Any]]:
    """Training rows as ``{"messages": [...]}`` with placeholders filled.

    For templates that think, each row comes twice: with an empty think block and with a
    short one, so the identity holds whether thinking is on or off."""
    out = []
    for i, r in enumerate(identity_rows(languages)):
        where = f"identity.jsonl:{i + 1}"
        q, a = fill(r["query"], names, r["lang"], where), fill(r["response"], names, r["lang"], where)
        if not thinking:
            out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            continue
        short = fill("The user asks who I am. I am {{NAME}}, made by {{AUTHOR}}; answer directly." if r["lang"] == "en"
                     else "用户在问我的身份。我是{{NAME}}，由{{AUTHOR}}开发，直接回答即可。", names, r["lang"], where)
        for reasoning in ("", short):
            out.append({"messages": [{"role": "user", "content": q},
                                     {"role": "assistant", "content": a, "reasoning_content": reasoning}]})
    return out


def filled_rows(ds, names: IdentityNames, key: str) -> list[dict[str, Any]]:
    """One dataset's conversations as ``{"messages": [...]}`` rows (tools kept) with every
    placeholder filled, in answers and reasoning alike. Raises UserError naming ``key`` for a
    bad row or a placeholder without a value."""
    from ..data.load import load_conversations

    convs, problems = load_conversations(ds)
    if problems:
        raise UserError(f"{key}: {problems[0]} (run `tunesmith data check` to see every problem)")
    out = []
    for c in convs:
        msgs = c.to_messages()
        for m in msgs:
            for k in ("content", "reasoning_content"):
                if isinstance(m.get(k), str):
                    m[k] = fill(m[k], names, None, c.source)
        out.append({"messages": msgs, **({"tools": c.tools} if c.tools else {})})
    return out


def user_identity_messages(spec: str, names: IdentityNames) -> list[dict[str, Any]]:
    """The user's own identity rows (a file, a folder, or ``DIR:name`` of a LLaMA-Factory
    data folder) as ``{"messages": [...]}`` with placeholders filled. Raises UserError for
    a bad row, a dataset that isn't conversations, or a placeholder without a value."""
    from ..data.specs import expand_spec

    out = [row for ds in expand_spec(spec).datasets for row in filled_rows(ds, names, "identity_data")]
    if not out:
        raise UserError(f"identity_data: {spec} holds no identity rows")
    return out
