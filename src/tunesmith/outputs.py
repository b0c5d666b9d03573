"""One output policy: what a verb may write, decided before any model or teacher is touched.

The registry declares each verb's outputs (``Output``: a config field naming a file or a
folder) and its inputs (fields naming files or folders). ``registry.invoke`` asks ``plan`` for
every output before it runs the verb, and ``plan`` refuses, in one line:

- an output that is an input, lies inside an input folder, or is a folder holding an input;
- an existing file or non-empty folder that tunesmith did not write (never replaced, not even
  with ``--overwrite``), or one of ours changed since (its hash differs);
- one of ours from an earlier run, unless the verb resumes its own output or ``overwrite``.

Ownership is recorded beside what is written, by the one writer (``fsutil``'s hook): a folder
output holds ``.tunesmith.json``; a file output ``F`` has ``.F.tunesmith.json`` beside it with
the verb and the sha256 of the bytes written (none while a resumable file is being appended
to). Folders that an older tunesmith wrote (a ``manifest.json`` with ``tunesmith_version``)
count as ours too. Markers appear only when something is written, so a refused or failed run
leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from . import fsutil
from .errors import UserError

FOLDER_MARKER = ".tunesmith.json"


@dataclass(frozen=True)
class Output:
    """An output a verb writes: ``field`` is a config field (``out``, ``output_dir``, ``data.x``,
    or ``paths[-1]`` for the last word of a list); ``kind`` is ``file``, ``dir`` or ``auto`` (a
    ``.jsonl``/``.json`` name is a file, anything else a folder); ``resumes``: a rerun into the
    verb's own earlier output continues it, so it needs no ``--overwrite``; ``holds_inputs``: the
    verb writes no file that could be an input, so an input inside its folder is fine (a training
    run folder holding the data the identity job made for it)."""

    field: str
    kind: str = "auto"
    resumes: bool = False
    holds_inputs: bool = False  # a folder that may hold its own inputs (a run folder with its data/)


@dataclass
class Claim:
    path: Path            # absolute (os.path.abspath: links kept, as writers name them)
    shown: str            # as the user wrote it
    kind: str             # "file" or "dir"
    verb: str
    label: str            # the field, for messages: "out", "output_dir", "OUT"


def file_marker(path: Path) -> Path:
    return path.parent / f".{path.name}.tunesmith.json"


def _read_json(p: Path) -> dict | None:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _sha256(path: Path) -> str:
    return fsutil.sha256_file(path)


def owner(path: str | Path) -> tuple[str | None, str]:
    """``(verb, "")`` when tunesmith wrote ``path`` (a file or a folder), else ``(None, why)``:
    "not written by tunesmith" or "changed since tunesmith wrote it"."""
    p = Path(path)
    if p.is_dir():
        mark = _read_json(p / FOLDER_MARKER)
        if mark and isinstance(mark.get("verb"), str):
            return mark["verb"], ""
        legacy = _read_json(p / "manifest.json")
        if legacy and "tunesmith_version" in legacy:
            return str(legacy.get("kind") or "tunesmith"), ""
        return None, "holds files tunesmith did not write"
    mark = _read_json(file_marker(p))
    if not mark or not isinstance(mark.get("verb"), str):
        return None, "was not written by tunesmith"
    sha = mark.get("sha256")
    if sha is not None and (not p.is_file() or _sha256(p) != sha):
        return None, "was changed after tunesmith wrote it"
    return mark["verb"], ""


# ----------------------------------------------------------------- reading fields of a config

_INDEX = re.compile(r"^(?P<name>[\w.]+)\[(?P<index>-?\d*:?-?\d*)\]$")


def field_values(cfg: Any, ref: str) -> list[str]:
    """The strings a field names: ``a.b`` (dotted), ``paths[-1]`` / ``paths[:-1]`` (a slice of a
    list), a list of strings, or of sections with a ``path`` (datasets)."""
    m = _INDEX.match(ref)
    name, index = (m["name"], m["index"]) if m else (ref, None)
    value: Any = cfg
    for part in name.split("."):
        value = getattr(value, part, None)
        if value is None:
            return []
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if index is not None:
        if ":" in index:
            a, _, b = index.partition(":")
            items = items[slice(int(a) if a else None, int(b) if b else None)]
        else:
            try:
                items = [items[int(index)]]
            except IndexError:
                return []
    out = []
    for it in items:
        if isinstance(it, str):
            out.append(it)
        elif isinstance(getattr(it, "path", None), str):
            out.append(it.path)
    return out


def _input_paths(cfg: Any, refs: tuple[str, ...]) -> list[tuple[str, Path]]:
    """Existing files and folders the inputs name (``DIR:name`` specs name DIR; aliases and hub
    ids name nothing on disk and are left out)."""
    found = []
    for ref in refs:
        for v in field_values(cfg, ref):
            p = Path(v).expanduser()
            if not p.exists() and ":" in v:
                p = Path(v.rsplit(":", 1)[0]).expanduser()
            if p.exists():
                found.append((v, p.resolve()))
    return found


# ----------------------------------------------------------------------------------- the plan

def _kind(out: Output, value: str) -> str:
    if out.kind != "auto":
        return out.kind
    p = Path(value)
    return "dir" if p.is_dir() or p.suffix.lower() not in (".jsonl", ".json") else "file"


def _label(ref: str) -> str:
    return "OUT" if "[" in ref else ref


def plan(verb: str, outputs: tuple[Output, ...], inputs: tuple[str, ...], cfg: Any,
         overwrite: bool = False) -> list[Claim]:
    """Check every output of ``cfg`` (see the module docstring); raises UserError (one line)."""
    claims, ins = [], _input_paths(cfg, inputs)
    for out in outputs:
        for value in field_values(cfg, out.field):
            label, kind = _label(out.field), _kind(out, value)
            if kind == "file":
                p = fsutil.check_writable_file(value, label)
            else:
                p = fsutil.check_writable_dir(value, label)
            p = Path(os.path.abspath(p))
            real = p.resolve()
            for shown, i in ins:
                if real == i:
                    raise UserError(f"{label} {value} is the input {shown}: choose another {label}")
                if i.is_dir() and i in real.parents:
                    raise UserError(f"{label} {value} is inside the input folder {shown}: choose another {label}")
                if kind == "dir" and real in i.parents and not out.holds_inputs:
                    raise UserError(f"{label} {value} holds the input {shown}: choose another {label}")
            _check_existing(p, value, kind, label, verb, out.resumes, overwrite)
            claims.append(Claim(p, value, kind, verb, label))
    return claims


def _check_existing(p: Path, shown: str, kind: str, label: str, verb: str, resumes: bool, overwrite: bool) -> None:
    if not p.exists() or (kind == "dir" and not any(p.iterdir())):
        return
    who, why = owner(p)
    if who is None:
        raise UserError(f"{label} {shown} {why}: choose another {label} (tunesmith never replaces it)")
    if not (resumes or overwrite):
        raise UserError(f"{label} {shown} holds what an earlier `{who}` run wrote: pass --overwrite to replace "
                        f"it, or choose another {label}")


# ------------------------------------------------------------------------- markers, on write

class _Claims:
    """The claims in force: process-wide rather than per context, since writers run in worker
    threads (a journal's writer, a save in an executor) that a context variable would not reach."""

    def __init__(self):
        self.stack: list[Claim] | None = None

    def get(self) -> list[Claim] | None:
        return self.stack

    def set(self, claims: list[Claim] | None) -> list[Claim] | None:
        old, self.stack = self.stack, claims
        return old

    def reset(self, old: list[Claim] | None) -> None:
        self.stack = old


_active = _Claims()


def _stamp_folder(folder: Path, verb: str) -> None:
    if not (folder / FOLDER_MARKER).exists():
        fsutil.write_atomic(folder / FOLDER_MARKER, json.dumps({"verb": verb, "written": _now()}) + "\n")


def _stamp_file(path: Path, verb: str, sha: str | None) -> None:
    fsutil.write_atomic(file_marker(path), json.dumps({"verb": verb, "sha256": sha, "written": _now()}) + "\n")


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _on_write(path: Path, data: bytes | None, staged: Path | None) -> None:
    """fsutil's hook: called before ``path`` is written (``data``: its whole new bytes; None
    for an append), or before ``staged`` (a finished temp folder) is renamed to ``path``."""
    claims = _active.get()
    if not claims or path.name.endswith(".tunesmith.json"):
        return
    p = Path(os.path.abspath(path))
    for c in claims:  # every claim it falls under: a pipeline's folder and its stage's
        if c.kind == "file" and p == c.path:
            _stamp_file(p, c.verb, hashlib.sha256(data).hexdigest() if data is not None else None)
        elif c.kind == "dir" and (p == c.path or c.path in p.parents):
            if staged is not None and p == c.path:
                _stamp_folder(staged, c.verb)  # the marker moves into place with the folder
            else:
                c.path.mkdir(parents=True, exist_ok=True)
                _stamp_folder(c.path, c.verb)


fsutil.WRITE_HOOK = _on_write


@contextlib.contextmanager
def claimed(claims: list[Claim]) -> Iterator[None]:
    """Record ownership of what the verb writes inside this block; on success also stamp what
    was written past the writer (an appended file gets its final hash, a folder its marker)."""
    token = _active.set([*(_active.get() or []), *claims])  # a pipeline's stage: both hold
    try:
        yield
    finally:
        _active.reset(token)
    for c in claims:
        if c.kind == "file" and c.path.is_file():
            mark = _read_json(file_marker(c.path))
            if mark is None or mark.get("sha256") is None:
                _stamp_file(c.path, c.verb, _sha256(c.path))
        elif c.kind == "dir" and c.path.is_dir() and any(c.path.iterdir()):
            _stamp_folder(c.path, c.verb)


def claim_beside(paths: list[Path], label: str = "out") -> None:
    """Files a verb writes next to a file output (``NAME.errors.jsonl``, journals…) are outputs
    too: an existing one must be ours (its own marker), and what is written there gets one."""
    claims = _active.get()
    if claims is None:
        return
    verb = claims[-1].verb if claims else "tunesmith"
    for e in paths:
        p = Path(os.path.abspath(e))
        if any(c.path == p for c in claims):
            continue
        if p.exists() and owner(p)[0] is None:
            raise UserError(f"{label}: {e} {owner(p)[1]}: choose another {label} (tunesmith never replaces it)")
        claims.append(Claim(p, str(e), "file", verb, label))
