"""``tunesmith convert-recipe``: a LLaMA-Factory YAML → a tunesmith recipe (printed, and written with
--out); and the key table of docs/llamafactory.md, made from the translation tables. Whether --out
may be replaced is the one output policy's call (``tunesmith.outputs``, through the registry)."""
from __future__ import annotations

import importlib
import sys

from pydantic import Field

from ..config import Replaceable, validate
from ..errors import ConfigError
from ..fsutil import check_writable_file, write_atomic
from .lf import CHAT, COMMON, MERGE, SCHEMA_OF, TRAIN, translate_file


class ConvertRecipeConfig(Replaceable):
    path: str = Field(..., description="LLaMA-Factory YAML (train, merge or inference) to translate")
    out: str | None = Field(None, description="also write the tunesmith recipe to this file")


def convert_recipe(cfg: ConvertRecipeConfig) -> int:
    out = check_writable_file(cfg.out, "out") if cfg.out else None  # before any reading: costs nothing
    tr = translate_file(cfg.path)
    if tr is None:
        raise ConfigError(f"{cfg.path}: no LLaMA-Factory key (model_name_or_path, stage, dataset …): "
                          "nothing to convert")
    mod, _, name = SCHEMA_OF[tr.kind].partition(":")  # the output must be a recipe tunesmith accepts
    validate(getattr(importlib.import_module(mod), name), tr.recipe(), f" (translated from {cfg.path})")
    text = tr.render()
    if out is not None:
        write_atomic(out, text)
    sys.stdout.write(text)
    if out is not None:
        print(f"# written to {cfg.out}")
    return 0


def doc_table() -> str:
    """The key table of docs/llamafactory.md, made from the tables of compat/lf.py (a test keeps them equal)."""
    rows = ["| LLaMA-Factory key | config | tunesmith key | note |", "|---|---|---|---|"]
    for kind, table in (("all", COMMON), ("train", TRAIN), ("merge", MERGE), ("chat", CHAT)):
        rows += [f"| `{k}` | {kind} | {'—' if t == '—' else f'`{t}`'} | {note} |"
                 for k, (t, _, note) in table.items()]
    return "\n".join(rows) + "\n"
