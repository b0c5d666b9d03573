"""One dataset (a DatasetConfig) → its good rows, a problem for every bad one, and warnings.

The one path rule (``data check`` and ``train`` alike): a relative ``path`` or
``dataset_info`` in a recipe is resolved from the current folder, as LLaMA-Factory resolves
its ``dataset_dir``; a dataset given only ``name`` is looked up in ``data.dataset_dir``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .check import FILL_HINT, fingerprint, placeholder_field, row_problems
from .config import DatasetConfig
from .formats import RowError, detect_format, make_plan, missing_columns, parse_row, unsupported_row
from .readers import data_files, read_file, sha256_files, shown
from .registry import from_registry
from .types import Conversation, PreferencePair, Problem, TextDoc, Unsupported

FORMAT_NAMES = "alpaca, sharegpt, messages, prompt_completion, preference, text"


@dataclass
class LoadedDataset:
    name: str
    path: str                  # as the user would write it
    files: list[Path]
    sha256: str
    config: DatasetConfig      # resolved: registry entries filled in
    rows: list[Conversation | PreferencePair | TextDoc]
    problems: list[Problem]    # errors: each names a bad row
    total: int                 # rows seen, good and bad (dropped duplicates included)
    warnings: list[Problem] = field(default_factory=list)   # the rows are kept (trained on)
    duplicates: int = 0        # exact copies of an earlier row
    deduped: int = 0           # of those, dropped by data.dedupe
    formats: list[str] = field(default_factory=list)        # the format of each file

    @property
    def bad_rows(self) -> int:
        return self.total - len(self.rows) - self.deduped

    @property
    def format(self) -> str:
        return "/".join(dict.fromkeys(self.formats)) or "?"


def resolve_path(p: str, key: str) -> Path:
    """The one rule for a path written in a recipe or on the command line: relative to the
    current folder. Raises UserError naming the path, the folder and the recipe key."""
    path = Path(p).expanduser()
    full = path if path.is_absolute() else Path.cwd() / path
    if not full.exists():
        origin = "" if path.is_absolute() else f" (resolved from the current folder {os.getcwd()})"
        raise UserError(f"{key}: {p} not found{origin}")
    return full


def resolve(ds: DatasetConfig, dataset_dir: str | None = None, key: str = "dataset") -> DatasetConfig:
    """Fill a registry dataset in from its dataset_info.json; make paths absolute. Settings
    written in the recipe win over the registry's."""
    info = ds.dataset_info
    if not ds.path and not info:
        if not dataset_dir:
            raise UserError(f"{key}: dataset '{ds.name}' has only a name: set data.dataset_dir (the folder with "
                            "dataset_info.json), or dataset_info, or path")
        info, key = dataset_dir, "data.dataset_dir"
    elif info:
        key = f"{key}.dataset_info"
    if info:
        reg = from_registry(resolve_path(info, key), ds.name)
        own = {k: getattr(ds, k) for k in ds.model_fields_set if k not in ("dataset_info", "name", "path")}
        if "ratio" in own:
            own["samples"] = None
        return reg.model_copy(update=own)
    return ds.model_copy(update={"path": str(resolve_path(ds.path, f"{key}.path"))})


def _text_entry(ds: DatasetConfig, fmt: str, keys: set[str]) -> bool:
    """LLaMA-Factory's pretraining entries (c4_demo) map only ``prompt`` to the text column
    and have no answer column: the stage (pt) says it is text, so the rows say it here."""
    return fmt == "alpaca" and set(ds.columns or {}) == {"prompt"} and "output" not in keys


def load_dataset(ds: DatasetConfig, dataset_dir: str | None = None, dedupe: bool = False,
                 key: str = "dataset") -> LoadedDataset:
    """Read, parse and check every row. Raises UserError when the dataset can't be found,
    and Unsupported for data tunesmith does not train on (KTO, multimodal, hub-only)."""
    ds = resolve(ds, dataset_dir, key)
    name = ds.label()
    if ds.split != "train":
        raise UserError(f"dataset '{name}': split '{ds.split}' can't be read from local files (they only have "
                        "'train'); remove split")
    files = data_files(Path(ds.path), name)
    rows: list[Conversation | PreferencePair | TextDoc] = []
    problems: list[Problem] = []
    warnings: list[Problem] = []
    formats: list[str] = []
    seen: dict[bytes, tuple[str, int]] = {}
    total = duplicates = deduped = 0
    taken = 0
    for f in files:
        if ds.max_samples is not None and taken >= ds.max_samples:
            break  # LLaMA-Factory's max_samples: only the first N rows are read
        records, read_problems = read_file(f)
        records = records[:None if ds.max_samples is None else ds.max_samples - taken]
        taken += len(records)
        problems += read_problems
        total += len(records) + len({(p.file, p.row) for p in read_problems})
        dicts = [r.data for r in records if isinstance(r.data, dict)]
        if not records:
            if not read_problems:
                problems.append(Problem(shown(f), 1, "file", "no rows", "empty"))
            continue
        odd = next(((r, why) for r in records if (why := unsupported_row(r.data))), None)
        if odd:  # a whole dataset of another kind, never misread as plain SFT rows
            raise Unsupported(f"dataset '{name}': {odd[0].file}:{odd[0].row}: {odd[1]}")
        fmt = ds.format if ds.format != "auto" else detect_format(dicts[0] if dicts else None)
        first_row = records[0].row  # file-wide problems point at the first row
        keys = set().union(*(d.keys() for d in dicts))
        if fmt is None:
            problems.append(Problem(shown(f), first_row, "format", f"can't tell the format from the fields "
                                    f"{', '.join(sorted(keys)) or '(none)'}; set format: ({FORMAT_NAMES})", "format"))
            continue
        if _text_entry(ds, fmt, keys):
            fmt = "text"
        formats.append(fmt)
        plan = make_plan(fmt, ds.columns, ds.tags, keys, dicts[0] if dicts else None)
        missing = missing_columns(plan, keys)
        if missing:
            for role, col in missing:
                problems.append(Problem(shown(f), first_row, col, f"no row has this column (dataset '{name}' reads its "
                                        f"{role} from it); the rows have: {', '.join(sorted(keys)) or 'nothing'}. "
                                        f"Map the right one under columns: {{{role}: ...}}", "column"))
            continue
        for rec in records:
            try:
                obj, fields = parse_row(rec.data, plan, f"{rec.file}:{rec.row}")
            except RowError as e:
                problems.append(Problem(rec.file, rec.row, e.field, e.message, e.kind))
                continue
            issues = row_problems(obj, fields)
            if issues:
                problems += [Problem(rec.file, rec.row, fld, msg, kind) for fld, msg, kind in issues]
                continue
            key_ = fingerprint(obj)
            first = seen.setdefault(key_, (rec.file, rec.row))
            if first != (rec.file, rec.row):
                duplicates += 1
                if dedupe:
                    deduped += 1
                    continue
                where = f"row {first[1]}" if first[0] == rec.file else f"{first[0]}:{first[1]}"
                warnings.append(Problem(rec.file, rec.row, "row", f"duplicate of {where} (kept; data.dedupe: true "
                                        "drops it)", "duplicate", warning=True))
            held = placeholder_field(obj, fields)
            if held:
                warnings.append(Problem(rec.file, rec.row, held, "{{name}}/{{author}} placeholder left unfilled; "
                                        + FILL_HINT, "placeholder", warning=True))
            rows.append(obj)
    order = {shown(f): i for i, f in enumerate(files)}
    problems.sort(key=lambda p: (order.get(p.file, 0), p.row or 0))
    warnings.sort(key=lambda p: (order.get(p.file, 0), p.row or 0))
    shown_path = shown(Path(ds.path))
    return LoadedDataset(name, shown_path, files, sha256_files(files), ds, rows, problems, total, warnings,
                         duplicates, deduped, formats)


def load_conversations(ds: DatasetConfig, dataset_dir: str | None = None) -> tuple[list[Conversation], list[Problem]]:
    """The good conversations of one dataset and the problems of the bad rows.

    Raises UserError when the dataset can't be found or holds preference pairs or plain
    text (for pairs, use ``load_preferences``)."""
    loaded = load_dataset(ds, dataset_dir)
    if any(isinstance(r, PreferencePair) for r in loaded.rows):
        raise UserError(f"dataset '{loaded.name}' holds preference pairs (chosen/rejected): it is DPO data, "
                        "not supervised fine-tuning data")
    if any(isinstance(r, TextDoc) for r in loaded.rows):
        raise UserError(f"dataset '{loaded.name}' is plain text (format: text), not conversations")
    return loaded.rows, loaded.problems


def load_preferences(ds: DatasetConfig, dataset_dir: str | None = None) -> tuple[list[PreferencePair], list[Problem]]:
    """The good preference pairs of one dataset. Raises UserError for non-preference data."""
    loaded = load_dataset(ds, dataset_dir)
    if any(not isinstance(r, PreferencePair) for r in loaded.rows):
        raise UserError(f"dataset '{loaded.name}' has no chosen/rejected answers: DPO needs preference pairs")
    return loaded.rows, loaded.problems
