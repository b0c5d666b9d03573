"""How pipeline stages hand files to each other, checked before stage 1 runs.

A later stage names what an earlier stage produced as ``$STAGE.OUTPUT``, where STAGE is the
earlier stage's label (``stage:``) and OUTPUT one of the kinds its verb produces (the
registry's ``produces``)::

    datasets: [{path: $distill.dataset}]        # <output_dir>/<n>-distill/data.jsonl
    tasks: [$test.dataset:number]               # a suffix after the reference is kept

- ``dataset``: the ``data.jsonl`` in the stage's folder (a verb that writes one file, such as
  predict, the file its config names);
- ``adapter``, ``merged``, ``gguf``, ``report``: the stage's folder.

The reference is resolved before the stage's config is validated, so a renumbered stage or
another output_dir changes nothing in the recipe. A reference to a stage that is not earlier,
or to an output the stage does not produce, is one line naming the stage and the key. Then
every input a stage's config names (the registry's ``reads``: datasets' paths, probes, prompts,
identity_data …) must exist now or be written by an earlier stage, else one line names the
stage, the key and the path — before any stage runs.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UserError
from ..outputs import field_values
from ..registry import KINDS, Verb

REF = re.compile(r"^\$(?P<ref>[^\s:$/]+)(?P<rest>:\S*)?$")
OUTPUTS = tuple(k for k in KINDS if k != "model")
# Fields that name a model: an alias or a hub id names nothing on disk (and the pipeline fills them).
MODEL_FIELDS = ("model", "adapter", "base")


@dataclass
class Planned:
    """A stage as the pipeline will run it: references resolved, config validated."""

    index: int           # 0-based
    stage: Any           # the Stage, its references resolved
    verb: Verb
    folder: Path
    cfg: Any = None      # the validated config (the pipeline's model and folder filled in)

    @property
    def where(self) -> str:
        return f"stage {self.index + 1} '{self.stage.name}'"


def output_path(p: Planned, kind: str, at: str) -> str:
    """Where stage ``p`` puts its output of ``kind`` (a path, as later stages name it)."""
    if p.verb.output_field:
        return str(p.folder / "data.jsonl") if kind == "dataset" else str(p.folder)
    files = [v for w in p.verb.writes for v in field_values(p.cfg, w.field)]
    if files:
        return files[0]
    raise ConfigError(f"{at}: {p.where} ({p.verb.name}) writes no file or folder the pipeline knows: name the "
                      "file it writes instead")


def _resolve(value: Any, key: str, i: int, labels: list[str], earlier: list[Planned], where: str) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, f"{key}.{k}" if key else str(k), i, labels, earlier, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, f"{key}[{j}]", i, labels, earlier, where) for j, v in enumerate(value)]
    m = REF.match(value) if isinstance(value, str) else None
    if m is None:
        return value
    name, _, kind = m["ref"].rpartition(".")
    at = f"{where}: {key}: {value}"
    if not name:
        raise ConfigError(f"{at}: a reference is $STAGE.OUTPUT (e.g. $distill.dataset), OUTPUT one of "
                          f"{', '.join(OUTPUTS)}")
    hits = [j for j, label in enumerate(labels) if label == name]
    before = [j for j in hits if j < i]
    if not hits:
        known = ", ".join(labels[:i]) or "none"
        raise ConfigError(f"{at}: no stage is named '{name}' (earlier stages: {known})")
    if not before:
        j = hits[0]
        when = "is this stage itself" if j == i else "runs after this one"
        raise ConfigError(f"{at}: stage {j + 1} '{name}' {when}: a stage can only use what an earlier stage produced")
    if len(before) > 1:
        raise ConfigError(f"{at}: stages {' and '.join(str(j + 1) for j in before)} are both named '{name}': give "
                          "them different stage labels")
    src = earlier[before[0]]
    if kind not in OUTPUTS:
        raise ConfigError(f"{at}: '{kind}' is not an output: write $STAGE.OUTPUT, OUTPUT one of {', '.join(OUTPUTS)}")
    if kind not in src.verb.produces:
        made = " and ".join(k for k in src.verb.produces if k in OUTPUTS) or "nothing a later stage can use"
        raise ConfigError(f"{at}: {src.where} ({src.verb.name}) produces {made}, not {kind}")
    return output_path(src, kind, at) + (m["rest"] or "")


def resolve_stage(stage, i: int, labels: list[str], earlier: list[Planned]):
    """The stage with every ``$STAGE.OUTPUT`` in its config (and its probes) replaced by the path."""
    where = f"stage {i + 1} '{stage.name}'"
    config = _resolve(stage.config, "", i, labels, earlier, where)
    probes = _resolve(stage.probes, "probes", i, labels, earlier, where)
    return stage.model_copy(update={"config": config, "probes": probes})


_INDEX = re.compile(r"^(?P<name>[\w.]+)(\[(?P<index>-?\d*:?-?\d*)\])?$")


def named_values(cfg: Any, ref: str) -> list[tuple[str, str]]:
    """``(key, path)`` for each string the field ``ref`` names (the registry's ``reads`` form:
    ``a.b``, ``paths[:-1]``, a list of strings or of datasets), the key as a recipe writes it:
    ``data.datasets[0].path``."""
    m = _INDEX.match(ref)
    if m is None:
        return []
    value: Any = cfg
    for part in m["name"].split("."):
        value = getattr(value, part, None)
    if value is None:
        return []
    is_list = isinstance(value, (list, tuple))
    items = list(enumerate(value)) if is_list else [(None, value)]
    if m["index"]:
        a, colon, b = m["index"].partition(":")
        items = items[slice(int(a) if a else None, int(b) if b else None)] if colon else items[int(a):][:1]
    out = []
    for j, item in items:
        key = m["name"] if j is None else f"{m['name']}[{j}]"
        if isinstance(item, str):
            out.append((key, item))
        elif isinstance(getattr(item, "path", None), str):
            out.append((f"{key}.path", item.path))
    return out


def produced(p: Planned) -> list[Path]:
    """What stage ``p`` writes: its folder and any file output its config names."""
    return [Path(os.path.abspath(p.folder))] + [Path(os.path.abspath(v)) for w in p.verb.writes
                                                for v in field_values(p.cfg, w.field)]


def _present(value: str, made: list[Path]) -> bool:
    """On disk now, or inside what an earlier stage writes (``DIR:name`` / ``FILE:KIND``: the part
    before the colon)."""
    for cand in dict.fromkeys([value, value.rsplit(":", 1)[0]]):
        if not cand:
            continue
        p = Path(cand).expanduser()
        a = Path(os.path.abspath(p))
        if p.exists() or any(a == m or m in a.parents for m in made):
            return True
    return False


def check_inputs(p: Planned, earlier: list[Planned]) -> None:
    """Every input stage ``p`` names exists or is written by an earlier stage; else one line."""
    made = [path for e in earlier for path in produced(e)]
    named = [("probes", p.stage.probes)] if p.stage.probes else []
    for ref in p.verb.reads:
        if ref.split("[")[0] not in MODEL_FIELDS:
            named += named_values(p.cfg, ref)
    for key, value in named:
        if not _present(value, made):
            origin = "" if Path(value).is_absolute() else f" (resolved from the current folder {os.getcwd()})"
            raise UserError(f"{p.where}: {key}: {value} not found{origin}, and no earlier stage writes it")
