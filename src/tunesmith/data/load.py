"""One dataset (a DatasetConfig) → its good rows and a problem for every bad one."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .check import fingerprint, row_problems
from .config import DatasetConfig
from .formats import RowError, detect_format, make_plan, missing_columns, parse_row
from .readers import data_files, read_file, sha256_files, shown
from .registry import from_registry
from .types import Conversation, PreferencePair, Problem

FORMAT_NAMES = "alpaca, sharegpt, messages, prompt_completion, preference"


@dataclass
class LoadedDataset:
    name: str
    path: str                  # as the user would write it
    files: list[Path]
    sha256: str
    config: DatasetConfig      # resolved: registry entries filled in
    rows: list[Conversation | PreferencePair]
    problems: list[Problem]
    total: int                 # rows seen, good and bad

    @property
    def bad_rows(self) -> int:
        return self.total - len(self.rows)


def _absolute(p: str, base_dir: Path | None) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


def resolve(ds: DatasetConfig, base_dir: Path | None = None) -> DatasetConfig:
    """Fill a registry dataset in from its dataset_info.json; make paths absolute. Settings
    written in the recipe win over the registry's."""
    if ds.dataset_info:
        reg = from_registry(_absolute(ds.dataset_info, base_dir), ds.name)
        own = {k: getattr(ds, k) for k in ds.model_fields_set if k not in ("dataset_info", "name", "path")}
        if "ratio" in own:
            own["samples"] = None
        return reg.model_copy(update=own)
    return ds.model_copy(update={"path": str(_absolute(ds.path, base_dir))})


def load_dataset(ds: DatasetConfig, base_dir: Path | None = None) -> LoadedDataset:
    """Read, parse and check every row. Raises UserError when the dataset can't be found."""
    ds = resolve(ds, base_dir)
    name = ds.label()
    if ds.split != "train":
        raise UserError(f"dataset '{name}': split '{ds.split}' can't be read from local files (they only have "
                        "'train'); remove split")
    files = data_files(Path(ds.path), name)
    rows: list[Conversation | PreferencePair] = []
    problems: list[Problem] = []
    seen: dict[bytes, tuple[str, int]] = {}
    total = 0
    for f in files:
        records, read_problems = read_file(f)
        problems += read_problems
        total += len(records) + len({(p.file, p.row) for p in read_problems})
        dicts = [r.data for r in records if isinstance(r.data, dict)]
        if not records:
            if not read_problems:
                problems.append(Problem(shown(f), 1, "file", "no rows", "empty"))
            continue
        fmt = ds.format if ds.format != "auto" else detect_format(dicts[0] if dicts else None)
        first_row = records[0].row  # file-wide problems point at the first row
        keys = set().union(*(d.keys() for d in dicts))
        if fmt is None:
            problems.append(Problem(shown(f), first_row, "format", f"can't tell the format from the fields "
                                    f"{', '.join(sorted(keys)) or '(none)'}; set format: ({FORMAT_NAMES})", "format"))
            continue
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
            key = fingerprint(obj)
            first = seen.setdefault(key, (rec.file, rec.row))
            if first != (rec.file, rec.row):
                where = f"row {first[1]}" if first[0] == rec.file else f"{first[0]}:{first[1]}"
                problems.append(Problem(rec.file, rec.row, "row", f"duplicate of {where}", "duplicate"))
                continue
            rows.append(obj)
    order = {shown(f): i for i, f in enumerate(files)}
    problems.sort(key=lambda p: (order.get(p.file, 0), p.row or 0))
    shown_path = shown(Path(ds.path))
    return LoadedDataset(name, shown_path, files, sha256_files(files), ds, rows, problems, total)


def load_conversations(ds: DatasetConfig, base_dir: Path | None = None) -> tuple[list[Conversation], list[Problem]]:
    """The good conversations of one dataset and the problems of the bad rows.

    Raises UserError when the dataset can't be found or holds preference pairs (for those,
    use ``load_preferences``)."""
    loaded = load_dataset(ds, base_dir)
    if any(isinstance(r, PreferencePair) for r in loaded.rows):
        raise UserError(f"dataset '{loaded.name}' holds preference pairs (chosen/rejected): it is DPO data, "
                        "not supervised fine-tuning data")
    return loaded.rows, loaded.problems


def load_preferences(ds: DatasetConfig, base_dir: Path | None = None) -> tuple[list[PreferencePair], list[Problem]]:
    """The good preference pairs of one dataset. Raises UserError for non-preference data."""
    loaded = load_dataset(ds, base_dir)
    if any(isinstance(r, Conversation) for r in loaded.rows):
        raise UserError(f"dataset '{loaded.name}' has no chosen/rejected answers: DPO needs preference pairs")
    return loaded.rows, loaded.problems
