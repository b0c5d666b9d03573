"""Identity names and the placeholders that hold them, shared by the identity data (synth) and
its evaluation (eval): ms-swift's ``{{NAME}}``/``{{AUTHOR}}`` and LLaMA-Factory's lowercase
``{{name}}``/``{{author}}`` both work."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from ..config import Section
from ..errors import UserError
from .check import PLACEHOLDER

LANGS = ("en", "zh")
Lang = Literal["en", "zh"]


class IdentityNames(Section):
    name: str | None = Field(None, description="the model's new name (all languages)")
    author: str | None = Field(None, description="who made it (all languages)")
    name_zh: str | None = Field(None, description="name in Chinese rows (default: name)")
    name_en: str | None = Field(None, description="name in English rows (default: name)")
    author_zh: str | None = Field(None, description="author in Chinese rows (default: author)")
    author_en: str | None = Field(None, description="author in English rows (default: author)")

    def value(self, key: str, lang: str | None) -> str | None:
        """``key`` is name or author; a per-language value wins over the plain one."""
        per_lang = getattr(self, f"{key}_{lang}", None) if lang in LANGS else None
        return per_lang or getattr(self, key)

    def with_shortcuts(self, name: str | None, author: str | None, verb: str) -> "IdentityNames":
        """These names with ``--name`` / ``--author`` filled in; raises UserError when either is missing."""
        n = self.model_copy(update={k: v for k, v in (("name", name), ("author", author)) if v})
        if not n.all_values("name") or not n.all_values("author"):
            raise UserError(f"{verb} needs a name and an author: pass --name \"…\" --author \"…\"")
        return n

    def all_values(self, key: str) -> list[str]:
        vals = [getattr(self, key), getattr(self, f"{key}_zh"), getattr(self, f"{key}_en")]
        return list(dict.fromkeys(v for v in vals if v))


def fill(text: str, names: IdentityNames, lang: str | None = None, where: str = "") -> str:
    """Replace every placeholder in ``text``. Raises UserError naming the missing value."""

    def sub(m: re.Match) -> str:
        key = m.group(1).lower()
        val = names.value(key, lang)
        if not val:
            field = f"{key}_{lang} or {key}" if lang in LANGS else key
            at = f"{where}: " if where else ""
            raise UserError(f"{at}text uses {{{{{m.group(1)}}}}} but no {field} is set: pass --{key} (e.g. --{key} \"...\")")
        return val

    return PLACEHOLDER.sub(sub, text)


def has_placeholder(text: str) -> bool:
    return bool(PLACEHOLDER.search(text))
