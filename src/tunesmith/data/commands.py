"""``tunesmith data check | convert | stats``: configs and the functions the CLI calls."""
from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ..config import Replaceable, Section
from ..fsutil import write_atomic
from ..errors import UserError
from ..fsutil import check_writable_file
from ..config import DEFAULT_MODEL
from .audit import DatasetCheck, check_specs, percentile
from .config import Format
from .convert import WRITERS
from .formats import RowError
from .load import load_dataset
from .specs import expand_spec
from .types import PreferencePair, Problem, TextDoc

SPEC_HELP = ("data files or folders, folders with a dataset_info.json (or DIR:name), or recipe YAMLs "
             "(pass a recipe with --specs, as bare .yaml words are read as this command's own config)")


class CheckConfig(Section):
    specs: list[str] = Field(default_factory=list, description=SPEC_HELP)
    model: str | None = Field(None, description="model whose chat template renders the rows, for token lengths")
    template: str | None = Field(None, description="fallback chat template for a base model without one")
    cutoff_len: int | None = Field(None, gt=0, description="count rows longer than this many tokens (needs model; "
                                                           "default: the recipe's, else 1024)")
    format: Format = Field("auto", description="row format of bare files; auto detects it")
    max_lines: int = Field(20, ge=0, description="problem lines printed per kind of problem")
    num_workers: int = Field(1, ge=1, description="processes that render rows in parallel")
    strict: bool = Field(False, description="count warnings (duplicates, unfilled placeholders) as errors: exit 1")


class ConvertConfig(Replaceable):
    paths: list[str] = Field(default_factory=list, description="IN (any SPEC naming one dataset) and OUT "
                                                                "(.jsonl, or .json for one JSON list)")
    to: Literal["alpaca", "sharegpt", "messages"] = Field("messages", description="format to write: alpaca, "
                                                                            "sharegpt or messages")
    format: Format = Field("auto", description="row format of IN; auto detects it")
    drop_bad_rows: bool = Field(False, description="skip bad rows instead of stopping")


class StatsConfig(Replaceable):
    specs: list[str] = Field(default_factory=list, description=SPEC_HELP)
    model: str = Field(DEFAULT_MODEL, description="model whose tokenizer and template measure lengths")
    template: str | None = Field(None, description="fallback chat template for a base model without one")
    cutoff_len: int | None = Field(None, gt=0, description="mark this length on the histogram and count rows over "
                                                           "it (default: the recipe's, else 1024)")
    format: Format = Field("auto", description="row format of bare files; auto detects it")
    out: str | None = Field(None, description="histogram PNG path (default: <first spec's name>_lengths.png here)")
    num_workers: int = Field(1, ge=1, description="processes that render rows in parallel")

    @model_validator(mode="after")
    def _default_out(self):
        """The default histogram name is known before the run, so the output policy checks it too."""
        if self.out is None and self.specs:
            first = self.specs[0].rstrip("/")
            stem = first.rpartition(":")[2] if ":" in first else Path(first).stem
            self.out = f"{stem}_lengths.png"
        return self


def _tokenizer(model: str, template: str | None):
    from ..models import load_tokenizer, resolve_model
    from ..models.template import ensure_chat_template

    tok = load_tokenizer(resolve_model(model))
    ensure_chat_template(tok, template, f"model '{model}'")
    return tok


def print_problems(problems: list[Problem], max_lines: int) -> None:
    """One line per problem, at most ``max_lines`` per kind, then how many were left out."""
    shown: Counter = Counter()
    for p in problems:
        shown[p.kind] += 1
        if shown[p.kind] <= max_lines:
            print(p)
    for kind, n in shown.items():
        if n > max_lines:
            print(f"... and {n - max_lines} more '{kind}' problems")


def _summary(res: DatasetCheck) -> str:
    if res.error:
        return f"{res.name}: {res.verdict()}: {res.error}"
    line = f"{res.name} ({res.path}): {res.total} row{'s' * (res.total != 1)}, {res.ok} ok, {res.bad} bad"
    if res.warnings:
        line += f", {len(res.warnings)} warning{'s' * (len(res.warnings) != 1)}"
    if res.lengths:
        line += (f"; tokens p50 {percentile(res.lengths, 50)}, p95 {percentile(res.lengths, 95)}, "
                 f"max {max(res.lengths)}")
        if res.cutoff and res.format != "text":
            line += f"; {res.over_cutoff} over cutoff_len {res.cutoff}"
            if res.would_drop:
                line += f" ({res.would_drop} with nothing trainable left: they would be dropped)"
    return line


def _table(results: list[DatasetCheck], strict: bool) -> None:
    head = ("dataset", "format", "rows", "ok", "bad", "warnings", "verdict")
    body = [(r.name, "-" if r.error else r.format, *(("-",) * 4 if r.error else
                                                      (str(r.total), str(r.ok), str(r.bad), str(len(r.warnings)))),
             r.verdict(strict)) for r in results]
    widths = [max(len(row[k]) for row in [head, *body]) for k in range(len(head))]
    for row in [head, *body]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


HUB_TIP = "download one next to dataset_info.json and set its file_name to check it"


def _hub_list(hub: dict[str, str]) -> str:
    return ", ".join(f"{n}: {k}" for n, k in list(hub.items())[:3]) + (", …" if len(hub) > 3 else "")


def _check_specs_of(specs: list[str]) -> tuple[list[str], list[str]]:
    """The specs ``check_specs`` reads, and notes. A LLaMA-Factory train YAML becomes one DIR:name
    per dataset (``registry.lf_datasets``: the mapping ``tunesmith train`` uses); a whole folder's
    hub-only entries are a note, not failures; a hub-only dataset named explicitly is an error."""
    import os

    from ..config import read_yaml
    from ..errors import ConfigError
    from .registry import hub_only_names, is_lf_train, lf_datasets, refuse_hub_only, registry_names

    out, notes = [], []
    for spec in specs:
        path = Path(spec).expanduser()
        named: list[tuple[Path, str]] = []  # datasets named explicitly: a hub-only one is an error
        if path.suffix.lower() in (".yaml", ".yml") and path.is_file() and is_lf_train(raw := read_yaml(path)):
            try:
                entries = lf_datasets(raw)
            except ValueError as e:
                raise ConfigError(f"{spec}: dataset: {json.dumps(raw.get('dataset'), ensure_ascii=False)}: {e}") \
                    from None
            for d in entries:
                folder = Path(d["dataset_info"]).expanduser()
                if not folder.is_dir():
                    raise UserError(f"{spec}: dataset_dir: {d['dataset_info']} not found (resolved from the current "
                                    f"folder {os.getcwd()})")
                named.append((folder, d["name"]))
                out.append(f"{d['dataset_info']}:{d['name']}")
        elif path.is_dir() and (path / "dataset_info.json").is_file():
            hub = hub_only_names(path)
            if hub and not registry_names(path):
                raise UserError(f"{spec}: every dataset of its dataset_info.json is hub-only ({_hub_list(hub)}): "
                                f"nothing to read offline; {HUB_TIP}")
            if hub:
                notes.append(f"{spec}: skipped {len(hub)} hub-only dataset{'s' * (len(hub) != 1)} "
                             f"({_hub_list(hub)}), not readable offline ({HUB_TIP})")
            out.append(spec)
        else:
            folder, sep, names = spec.rpartition(":")
            if sep and folder and not path.exists() and Path(folder).expanduser().is_dir():
                named += [(Path(folder).expanduser(), n.strip()) for n in names.split(",") if n.strip()]
            out.append(spec)
        for folder, name in named:
            if (folder / "dataset_info.json").is_file():
                refuse_hub_only(folder, name)
    return out, notes


def check(cfg: CheckConfig) -> int:
    """Exit 0 when every dataset loads and every row is good (warnings allowed unless
    ``strict``), 1 otherwise. Every dataset is reported, also after one fails to load; hub-only
    entries of a whole dataset_info.json folder are named in a note (they can't be read offline)."""
    if not cfg.specs:
        raise UserError("data check: name at least one SPEC, e.g. tunesmith data check data/train.jsonl")
    specs, notes = _check_specs_of(cfg.specs)
    tok = _tokenizer(cfg.model, cfg.template) if cfg.model else None
    results = check_specs(specs, cfg.format, tok, cfg.cutoff_len, cfg.num_workers)
    for note in notes:
        print(f"note: {note}")
    problems = [p for r in results for p in r.problems]
    print_problems(problems + [w for r in results for w in r.warnings], cfg.max_lines)
    for res in results:
        print(_summary(res))
    _table(results, cfg.strict)
    n_warn = sum(len(r.warnings) for r in results)
    warned = f", {n_warn} warning{'s' * (n_warn != 1)}" if n_warn else ""
    failed = [r for r in results if r.failed(cfg.strict)]
    if failed:
        bad = sum(r.bad for r in results)
        print(f"data check: {len(problems)} problems{warned}, {bad} bad rows; {len(failed)} of {len(results)} "
              f"datasets failed{' (--strict: warnings count as errors)' if cfg.strict and n_warn else ''}")
        return 1
    print(f"data check: all {sum(r.total for r in results)} rows in {len(results)} datasets are ok{warned}")
    return 0


def convert(cfg: ConvertConfig) -> int:
    if len(cfg.paths) != 2:
        raise UserError("data convert needs IN and OUT, e.g. tunesmith data convert data.json out.jsonl --to messages")
    src, out = cfg.paths
    check_writable_file(out, "OUT")  # before any reading: an unwritable OUT costs nothing
    expanded = expand_spec(src, cfg.format)
    if len(expanded.datasets) != 1:
        raise UserError(f"{src} names {len(expanded.datasets)} datasets; name one, e.g. {src}:NAME")
    loaded = load_dataset(expanded.datasets[0], expanded.dataset_dir, key=expanded.key(0))
    if Path(out).resolve() in [f.resolve() for f in loaded.files]:
        raise UserError(f"{out} is the input: write the converted rows to another file")
    if any(isinstance(r, TextDoc) for r in loaded.rows):
        raise UserError(f"{src} is plain text (format: text): it has no turns to write as {cfg.to}")
    problems = list(loaded.problems)
    rows = []
    for obj in loaded.rows:
        try:
            rows.append(WRITERS[cfg.to](obj))
        except RowError as e:
            file, _, row = obj.source.rpartition(":")
            problems.append(Problem(file, int(row), e.field, e.message, e.kind))
    if problems and not cfg.drop_bad_rows:
        n = len({(p.file, p.row) for p in problems})
        raise UserError(f"{problems[0]} ({n} bad rows in total; run `tunesmith data check`, or pass "
                        "--drop_bad_rows true to skip them)")
    if out.endswith(".json"):
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    write_atomic(out, text)
    skipped = f", {len(problems)} problems skipped" if problems else ""
    print(f"wrote {len(rows)} rows to {out} as {cfg.to}{skipped}")
    return 0


def _histogram(results: list[DatasetCheck], cutoff: int | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for res in results:
        if res.lengths:
            ax.hist(res.lengths, bins=min(50, max(5, len(set(res.lengths)))), alpha=0.6, label=res.name)
    if cutoff:
        ax.axvline(cutoff, color="red", linestyle="--", label=f"cutoff_len {cutoff}")
    ax.set_xlabel("tokens per row (chat template applied)")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(out, buf.getvalue())


def stats(cfg: StatsConfig) -> int:
    if not cfg.specs:
        raise UserError("data stats: name at least one SPEC, e.g. tunesmith data stats data/train.jsonl")
    check_writable_file(cfg.out, "out")  # before any tokenizer loads
    tok = _tokenizer(cfg.model, cfg.template)
    results = check_specs(cfg.specs, cfg.format, tok, cfg.cutoff_len, cfg.num_workers, keep_rows=True)
    for res in results:
        if res.error or res.format == "text":
            print(_summary(res))
            continue
        convs = [r.prompt if isinstance(r, PreferencePair) else r for r in res.rows]
        turns = [len(c.turns) for c in convs]
        answers = sum(t.role == "assistant" for c in convs for t in c.turns)
        thinking = sum(any(t.reasoning for t in c.turns) for c in convs)
        print(_summary(res))
        print(f"  turns per row: mean {sum(turns) / max(1, len(turns)):.1f}, max {max(turns, default=0)}; "
              f"assistant turns {answers}; rows with reasoning {thinking}; "
              f"with tools {sum(bool(c.tools) for c in convs)}; preference pairs "
              f"{sum(isinstance(r, PreferencePair) for r in res.rows)}")
    if any(r.bad for r in results):
        print("note: bad rows are left out above; run `tunesmith data check` to see them")
    out = Path(cfg.out)
    _histogram(results, results[0].cutoff if results else None, out)
    print(f"length histogram: {out}")
    return 0
