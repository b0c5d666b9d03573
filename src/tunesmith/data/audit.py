"""The checks ``tunesmith data check`` runs over whole datasets: load every row, render it
with the chat template, measure token lengths (row-level checks live in ``check.py``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import UserError
from .config import DataConfig
from .types import Conversation, PreferencePair, Problem, TextDoc, Unsupported


@dataclass
class DatasetCheck:
    """One dataset's rows after the check, with token lengths when a tokenizer was given.
    ``error`` is set (and nothing else) when the dataset could not be loaded at all."""

    name: str
    path: str
    total: int
    ok: int
    problems: list[Problem]
    lengths: list[int] = field(default_factory=list)
    over_cutoff: int = 0
    would_drop: int = 0
    cutoff: int | None = None                 # the cutoff_len the counts above are against
    rows: list = field(default_factory=list)   # the good rows, when asked for
    warnings: list[Problem] = field(default_factory=list)
    format: str = "?"
    error: str | None = None
    unsupported: bool = False

    @property
    def bad(self) -> int:
        return self.total - self.ok

    def verdict(self, strict: bool = False) -> str:
        if self.error:
            return "unsupported" if self.unsupported else "failed"
        if self.problems:
            return "bad rows"
        if self.warnings:
            return "failed (strict)" if strict else "ok, warnings"
        return "ok"

    def failed(self, strict: bool = False) -> bool:
        return self.verdict(strict) not in ("ok", "ok, warnings")


def percentile(values: list[int], q: float) -> int:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def check_specs(specs: list[str], fmt: str = "auto", tokenizer=None, cutoff_len: int | None = None,
                num_workers: int = 1, keep_rows: bool = False) -> list[DatasetCheck]:
    """Load every dataset the specs name, check each row and, with a tokenizer, render the
    good rows to measure token lengths. Raises UserError for a spec that names nothing; a
    dataset that can't be loaded (missing file, hub-only, KTO …) is a result with ``error``,
    so every other dataset is still checked."""
    from .load import load_dataset
    from .render import render_many
    from .specs import expand_spec

    results = []
    for spec in specs:
        expanded = expand_spec(spec, fmt)
        cutoff = cutoff_len or (expanded.data or DataConfig()).cutoff_len
        if tokenizer is not None and expanded.data and expanded.data.template:
            from ..models.template import ensure_chat_template

            ensure_chat_template(tokenizer, expanded.data.template)
        for i, ds in enumerate(expanded.datasets):
            try:
                loaded = load_dataset(ds, expanded.dataset_dir, key=expanded.key(i))
            except UserError as e:
                path = ds.path or ds.dataset_info or expanded.dataset_dir or ""
                results.append(DatasetCheck(ds.label(), path, 0, 0, [], error=str(e),
                                            unsupported=isinstance(e, Unsupported)))
                continue
            res = DatasetCheck(loaded.name, loaded.path, loaded.total, len(loaded.rows), list(loaded.problems),
                               warnings=list(loaded.warnings), format=loaded.format)
            if keep_rows:
                res.rows = loaded.rows
            if tokenizer is not None and loaded.rows:
                res.cutoff = cutoff
                if isinstance(loaded.rows[0], TextDoc):  # packed into cutoff_len blocks: only lengths to report
                    res.lengths = [len(ids) for ids in tokenizer([r.text for r in loaded.rows],
                                                                 add_special_tokens=False)["input_ids"]]
                    results.append(res)
                    continue
                convs = [sft_view(r) for r in loaded.rows]
                rows, errors = render_many(convs, tokenizer, None, num_workers=num_workers)
                for j, msg in sorted(errors.items()):
                    file, _, row = convs[j].source.rpartition(":")
                    res.problems.append(Problem(file, int(row) if row.isdigit() else None, "template", msg,
                                                "template"))
                res.ok -= len(errors)
                rendered = [r for r in rows if r is not None]
                res.lengths = [len(r["input_ids"]) for r in rendered]
                res.over_cutoff = sum(n > cutoff for n in res.lengths)
                res.would_drop = sum(_first_label(r["labels"]) >= cutoff for r in rendered)
            results.append(res)
    return results


def sft_view(row: Conversation | PreferencePair) -> Conversation:
    """A conversation for length statistics: a preference pair is seen with its chosen answer."""
    if isinstance(row, Conversation):
        return row
    p = row.prompt
    return Conversation(p.turns + [row.chosen], p.system, p.tools, row.source)


def _first_label(labels: list[int]) -> int:
    return next((i for i, x in enumerate(labels) if x != -100), len(labels))

