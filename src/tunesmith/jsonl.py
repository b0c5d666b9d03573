"""Reading JSONL files a user hands in: every mistake names ``file:line``."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserError


def read_jsonl(path: str | Path, what: str = "input file") -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line. Raises UserError for a missing
    file or a line that is not JSON."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{p}:{n}: not valid JSON ({e.msg})") from None
