"""The data page: ``data check``'s table (every bad row as file:row: field: problem, and warnings), length
stats, and rows rendered with the model's chat template with the trained tokens marked — what the loss sees.
Uploads land in the workspace's ``uploads/``; a row is fixed in place only in a file tunesmith wrote."""
from __future__ import annotations

import functools
from pathlib import Path

from ..errors import UserError
from .workspace import Workspace


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str):
    from ..models import load_tokenizer, resolve_model
    from ..models.template import ensure_chat_template

    tok = load_tokenizer(resolve_model(model))
    ensure_chat_template(tok, None, f"model '{model}'")
    return tok


def _spec(ws: Workspace, spec: str) -> str:
    """A spec as the CLI in the workspace reads it: relative paths from the workspace."""
    spec = spec.strip()
    path, sep, names = spec.rpartition(":") if ":" in spec and not Path(spec).exists() else (spec, "", "")
    p = Path(path).expanduser()
    full = p if p.is_absolute() else ws.root / p
    return f"{full}{sep}{names}"


def check(ws: Workspace, specs: list[str], model: str | None, cutoff_len: int | None = None) -> dict:
    """The data check of ``specs`` (CheckConfig's validation, the audit ``tunesmith data check`` runs)."""
    from ..data.audit import check_specs, percentile
    from ..data.commands import CheckConfig

    cfg = CheckConfig(specs=[s for s in specs if s.strip()], model=model or None, cutoff_len=cutoff_len)
    if not cfg.specs:
        raise UserError("data check: name at least one SPEC, e.g. data/train.jsonl")
    tok = _tokenizer(cfg.model) if cfg.model else None
    results = check_specs([_spec(ws, s) for s in cfg.specs], cfg.format, tok, cfg.cutoff_len)
    out = []
    for r in results:
        lengths = r.lengths
        out.append({"name": r.name, "path": ws.rel(r.path) if r.path else r.path, "format": r.format,
                    "rows": r.total, "ok": r.ok, "bad": r.bad, "verdict": r.verdict(), "error": r.error,
                    "problems": [_problem(ws, p) for p in r.problems],
                    "warnings": [_problem(ws, p) for p in r.warnings],
                    "stats": {"p50": percentile(lengths, 50), "p95": percentile(lengths, 95),
                              "max": max(lengths) if lengths else 0, "over_cutoff": r.over_cutoff,
                              "cutoff": r.cutoff, "lengths": lengths[:5000]}})
    bad = sum(d["bad"] for d in out)
    return {"datasets": out, "ok": not any(d["error"] or d["problems"] for d in out), "bad_rows": bad}


def _problem(ws: Workspace, p) -> dict:
    file = ws.rel(p.file) if p.file else p.file
    where = file if p.row is None else f"{file}:{p.row}"
    return {"file": file, "row": p.row, "field": p.field, "message": p.message, "kind": p.kind,
            "warning": p.warning, "line": f"{where}: {p.field}: {'warning: ' if p.warning else ''}{p.message}"}


def preview(ws: Workspace, spec: str, model: str, n: int = 5, cutoff_len: int = 1024) -> list[dict]:
    """The first ``n`` good rows rendered by the chat template, as pieces marked trained or not."""
    from ..data.audit import check_specs, sft_view
    from ..data.render import render_many
    from ..data.types import TextDoc

    tok = _tokenizer(model)
    results = check_specs([_spec(ws, spec)], "auto", None, None, keep_rows=True)
    rows = [r for res in results for r in res.rows][:n]
    if rows and isinstance(rows[0], TextDoc):
        return [{"source": r.source, "pieces": [{"text": r.text[:2000], "trained": True}]} for r in rows]
    convs = [sft_view(r) for r in rows]
    rendered, errors = render_many(convs, tok, cutoff_len)
    out = []
    for conv, r in zip(convs, rendered):
        if r is None:
            continue
        pieces: list[dict] = []
        for tid, label in zip(r["input_ids"], r["labels"]):
            trained = label != -100
            if pieces and pieces[-1]["trained"] == trained:
                pieces[-1]["ids"].append(tid)
            else:
                pieces.append({"trained": trained, "ids": [tid]})
        out.append({"source": ws.rel(conv.source.rpartition(":")[0]) + ":" + conv.source.rpartition(":")[2],
                    "tokens": len(r["input_ids"]), "trained_tokens": sum(x != -100 for x in r["labels"]),
                    "pieces": [{"text": tok.decode(p["ids"]), "trained": p["trained"]} for p in pieces]})
    return out


def upload(ws: Workspace, name: str, text: str, overwrite: bool = False) -> str:
    base = Path(name).name
    if not base or base.startswith("."):
        raise UserError(f"upload: '{name}' is not a file name")
    return ws.rel(ws.write(f"uploads/{base}", text, "upload", overwrite))


def row_text(ws: Workspace, file: str, row: int) -> str:
    lines = ws.path(file, "file").read_text(encoding="utf-8").splitlines()
    if not 1 <= row <= len(lines):
        raise UserError(f"{file}: no row {row} (it has {len(lines)})")
    return lines[row - 1]


def fix_row(ws: Workspace, file: str, row: int, text: str) -> str:
    """Replace line ``row`` of a JSONL file tunesmith wrote (an upload); a file of yours is never changed."""
    from ..outputs import owner

    p = ws.path(file, "file")
    if p.suffix.lower() != ".jsonl":
        raise UserError(f"{file}: rows can be edited in .jsonl files only")
    who, why = owner(p)
    if who is None:
        raise UserError(f"{file} {why}: upload a copy to fix rows here (tunesmith never changes your files)")
    if "\n" in text.strip():
        raise UserError(f"{file}:{row}: one JSON object on one line")
    lines = p.read_text(encoding="utf-8").splitlines()
    if not 1 <= row <= len(lines):
        raise UserError(f"{file}: no row {row} (it has {len(lines)})")
    lines[row - 1] = text.strip()
    ws.write(str(p), "\n".join(lines) + "\n", "file", overwrite=True)
    return ws.rel(p)
