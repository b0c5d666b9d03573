"""Read rows from .json, .jsonl, .csv and .parquet files (or folders of them), keeping
``file:row`` for every row so problems can name where they are.

Row numbers: the line for JSONL, CSV and .txt (what an editor shows), the position from 1
for a JSON list and for parquet. A file that can't be read at all is one problem at row 1.
A .txt file is plain text: one document per non-empty line, as LLaMA-Factory's "text"
loader reads it, each row ``{"text": line}``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fsutil import sha256_file
from .types import Problem

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
TEXT_SUFFIX = ".txt"


@dataclass
class Record:
    file: str
    row: int
    data: Any  # usually a dict; the format parser names anything else as a problem


def shown(path: Path) -> str:
    """A path as the user would write it: relative to the working folder when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(Path(path).resolve()) if rel.startswith("..") else rel


def data_files(path: Path, dataset: str) -> list[Path]:
    """The data files a ``path`` names. Raises UserError when there are none."""
    kinds = "/".join(SUFFIXES + (TEXT_SUFFIX,))
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES + (TEXT_SUFFIX,):
            raise UserError(f"dataset '{dataset}': {shown(path)} is not a {kinds} file")
        return [path]
    if path.is_dir():
        visible = [p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")]
        files = [p for p in visible if p.suffix.lower() in SUFFIXES]
        # .txt files count only in a folder of plain text (a README next to JSON files is not data).
        files = files or [p for p in visible if p.suffix.lower() == TEXT_SUFFIX]
        if not files:
            raise UserError(f"dataset '{dataset}': folder {shown(path)} holds no {kinds} files")
        return files
    raise UserError(f"dataset '{dataset}': {shown(path)} not found")


def sha256_files(files: list[Path]) -> str:
    """sha256 of one file's bytes (as ``sha256sum`` prints it), or of names and bytes for several."""
    h = hashlib.sha256()
    for f in files:
        if len(files) > 1:
            h.update(f.name.encode() + b"\0")
        sha256_file(f, into=h)
    return h.hexdigest()


def read_file(path: Path) -> tuple[list[Record], list[Problem]]:
    """All rows of one file, and the problems met reading it (bad JSON, bad encoding…)."""
    name = shown(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path, name)
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return [], [Problem(name, 1, "encoding", "file is UTF-16; save it as UTF-8", "encoding")]
    try:
        text, bad_bytes = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        # Undecodable bytes become lone surrogates, so only the rows that hold them are bad.
        text, bad_bytes = raw.decode("utf-8", "surrogateescape"), True
    text = text.removeprefix("\ufeff")
    if suffix == TEXT_SUFFIX:
        records, problems = _read_text(text, name)
    elif suffix == ".csv":
        records, problems = _read_csv(text, name)
    elif suffix == ".json" and text.lstrip().startswith("["):
        records, problems = _read_json_list(text, name)
    else:  # .jsonl, and a .json file holding one object per line (LLaMA-Factory reads both)
        records, problems = _read_jsonl(text, name)
    if bad_bytes:
        records = _drop_bad_encoding(records, problems)
    return records, problems


def _read_jsonl(text: str, name: str) -> tuple[list[Record], list[Problem]]:
    records, problems = [], []
    loads = json.loads
    # Only "\n" ends a line: str.splitlines would also split inside strings at U+2028 or U+0085.
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            records.append(Record(name, line_no, loads(line)))
        except json.JSONDecodeError as e:
            problems.append(Problem(name, line_no, "json", f"not valid JSON: {e.msg} (column {e.colno})", "json"))
    return records, problems


def _read_text(text: str, name: str) -> tuple[list[Record], list[Problem]]:
    lines = text.split("\n")
    return [Record(name, n, {"text": line.rstrip("\r")}) for n, line in enumerate(lines, 1) if line.strip()], []


def _read_json_list(text: str, name: str) -> tuple[list[Record], list[Problem]]:
    """Element by element, so a syntax error names the row it is in."""
    dec = json.JSONDecoder()
    records: list[Record] = []
    pos, row, end = text.index("[") + 1, 0, len(text)

    def skip(i: int) -> int:
        while i < end and text[i] in " \t\r\n":
            i += 1
        return i

    while True:
        pos = skip(pos)
        if pos < end and text[pos] == "]":
            if skip(pos + 1) < end:
                return records, [_json_error(name, row, "text after the closing ]", text, skip(pos + 1))]
            return records, []
        if row:
            if pos >= end or text[pos] != ",":
                return records, [_json_error(name, row + 1, "expected ',' or ']'", text, pos)]
            pos = skip(pos + 1)
        row += 1
        try:
            value, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            return records, [_json_error(name, row, e.msg, text, e.pos)]
        records.append(Record(name, row, value))


def _json_error(name: str, row: int, msg: str, text: str, pos: int) -> Problem:
    line = text.count("\n", 0, pos) + 1
    return Problem(name, row, "json", f"not valid JSON: {msg} (line {line}); nothing after it was read", "json")


def _read_csv(text: str, name: str) -> tuple[list[Record], list[Problem]]:
    reader = csv.reader(io.StringIO(text))
    records, problems = [], []
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    except csv.Error as e:
        return [], [Problem(name, 1, "csv", f"not valid CSV: {e}", "json")]
    last_line = reader.line_num
    while True:
        start = last_line + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append(Problem(name, start, "csv", f"not valid CSV: {e}", "json"))
            break
        last_line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            problems.append(Problem(name, start, "row", f"has {len(cells)} cells, the header has {len(header)}",
                                    "type"))
            continue
        records.append(Record(name, start, dict(zip(header, cells))))
    return records, problems


def _read_parquet(path: Path, name: str) -> tuple[list[Record], list[Problem]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records: list[Record] = []
    try:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                records.append(Record(name, len(records) + 1, row))
    except (pa.ArrowException, OSError) as e:
        kind = "encoding" if "utf" in str(e).lower() else "json"
        field = "encoding" if kind == "encoding" else "parquet"
        reason = str(e).splitlines()[0]
        return records, [Problem(name, len(records) + 1, field, f"can't read the parquet file: {reason}", kind)]
    return records, []


def _bad_text(value: Any, where: str) -> tuple[str, int] | None:
    """The first field holding undecodable bytes, and the first such byte."""
    if isinstance(value, str):
        for ch in value:
            if "\udc80" <= ch <= "\udcff":
                return where, ord(ch) - 0xDC00
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        sub = f"{where}.{k}" if isinstance(k, str) else f"{where}[{k}]"
        hit = _bad_text(v, sub.lstrip("."))
        if hit:
            return hit
    return None


def _drop_bad_encoding(records: list[Record], problems: list[Problem]) -> list[Record]:
    kept = []
    for r in records:
        hit = _bad_text(r.data, "")
        if hit:
            field, byte = hit
            problems.append(Problem(r.file, r.row, field or "row", f"not valid UTF-8 (byte 0x{byte:02x}); "
                                    "save the file as UTF-8", "encoding"))
        else:
            kept.append(r)
    return kept
