"""What makes a parsed row bad (empty turns, roles out of order, no answer), duplicates,
and the checks ``tunesmith data check`` runs over whole datasets."""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field

from ..errors import UserError
from .config import DataConfig
from .types import Conversation, PreferencePair, Problem, TextDoc, Turn, Unsupported

# Identity placeholders: ms-swift's {{NAME}}/{{AUTHOR}} and LLaMA-Factory's {{name}}/{{author}}.
PLACEHOLDER = re.compile(r"\{\{\s*(NAME|AUTHOR|name|author)\s*\}\}")
FILL_HINT = ("fill them with `tunesmith identity --identity_data DIR:NAME --name ... --author ...` "
             "(or replace them in the file)")

# Which role may follow which; "start" is before the first turn.
_NEXT = {"start": {"user"}, "user": {"assistant"}, "assistant": {"user"}, "tool": {"tool", "assistant"}}
_ROLE_WORDS = {"user": "a user turn", "assistant": "an assistant turn", "tool": "a tool result", "start": "the start"}


def turn_problems(turns: list[Turn], fields: list[str], answer_last: bool = True) -> list[tuple[str, str, str]]:
    """(field, message, kind) for each problem of a turn sequence; only the first order problem."""
    out: list[tuple[str, str, str]] = []
    prev, prev_calls, order_bad = "start", False, False
    for turn, f in zip(turns, fields):
        if turn.role == "assistant":
            if not turn.content.strip() and not turn.tool_calls:
                out.append((f, "empty answer", "empty"))
        elif not turn.content.strip():
            out.append((f, f"empty {turn.role} turn", "empty"))
        allowed = _NEXT[prev] | ({"tool"} if prev == "assistant" and prev_calls else set())
        if turn.role not in allowed and not order_bad:
            want = " or ".join(_ROLE_WORDS[r] for r in sorted(allowed))
            out.append((f, f"roles out of order: {_ROLE_WORDS[turn.role]} after {_ROLE_WORDS[prev]} "
                           f"(expected {want})", "role_order"))
            order_bad = True
        prev, prev_calls = turn.role, bool(turn.tool_calls)
    if not turns:
        out.append((fields[0] if fields else "row", "no turns", "empty"))
    elif answer_last and prev != "assistant" and not order_bad:
        out.append((fields[-1], "missing response: the last turn must be the assistant's answer", "missing"))
    elif not answer_last and prev not in ("user", "tool") and not order_bad:
        out.append((fields[-1], "the prompt must end with a user turn", "role_order"))
    return out


def row_problems(obj: Conversation | PreferencePair | TextDoc, fields: list[str]) -> list[tuple[str, str, str]]:
    if isinstance(obj, TextDoc):
        return [] if obj.text.strip() else [(fields[0], "empty document", "empty")]
    if isinstance(obj, Conversation):
        return turn_problems(obj.turns, fields)
    *prompt_fields, chosen_f, rejected_f = fields
    out = turn_problems(obj.prompt.turns, prompt_fields or [chosen_f], answer_last=False)
    for turn, f in ((obj.chosen, chosen_f), (obj.rejected, rejected_f)):
        if not turn.content.strip() and not turn.tool_calls:
            out.append((f, "empty answer", "empty"))
    if (obj.chosen.content, obj.chosen.reasoning) == (obj.rejected.content, obj.rejected.reasoning):
        out.append((rejected_f, "the same answer as chosen", "duplicate"))
    return out


def placeholder_field(obj: Conversation | PreferencePair | TextDoc, fields: list[str]) -> str | None:
    """The first field of a row that still holds an identity placeholder, or None."""
    if isinstance(obj, TextDoc):
        return fields[0] if PLACEHOLDER.search(obj.text) else None
    conv = obj.prompt if isinstance(obj, PreferencePair) else obj
    turns = conv.turns + ([obj.chosen, obj.rejected] if isinstance(obj, PreferencePair) else [])
    if conv.system and PLACEHOLDER.search(conv.system):
        return "system"
    for k, t in enumerate(turns):
        if PLACEHOLDER.search(t.content) or (t.reasoning and PLACEHOLDER.search(t.reasoning)):
            return fields[k] if k < len(fields) else "row"
    return None


def fingerprint(obj: Conversation | PreferencePair | TextDoc) -> bytes:
    """Equal for rows with the same content, whatever their source."""
    if isinstance(obj, TextDoc):
        key = ("text", obj.text)
    elif isinstance(obj, PreferencePair):
        key = (fingerprint(obj.prompt), _turn_key(obj.chosen), _turn_key(obj.rejected))
    else:
        key = (obj.system, repr(obj.tools), tuple(_turn_key(t) for t in obj.turns))
    return hashlib.blake2b(repr(key).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _turn_key(t: Turn):
    return (t.role, t.content, t.reasoning, repr(t.tool_calls))


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

