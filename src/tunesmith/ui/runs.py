"""What a run folder says, read for the pages: progress (``manifest.json``'s schedule, ``metrics.jsonl``), the
before/after reports (``eval/report.json`` and any other ``report.json``), the lineage of stacked stages, and
an export's files, Modelfile and ``ollama create`` line."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

from ..errors import UserError
from .workspace import Workspace

PHASES = (("replay:", "replay"), ("train:", "train"), ("eval:", "eval"), ("exported", "export"), ("done in", "done"))


def _json(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def metrics(run: Path) -> list[dict]:
    p = run / "metrics.jsonl"
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return rows


def _epoch(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def progress(run: Path | None, log: str, status: str) -> dict:
    """Steps done of total, ETA, tokens/s, the loss and eval curves, and the phase the log last named."""
    phase = next((name for line in reversed(log.splitlines()) for key, name in PHASES if line.startswith(key)), None)
    out = {"phase": "done" if status == "done" else phase, "step": 0, "total": None, "eta_s": None, "tok_s": None,
           "loss": [], "eval": [], "manifest_status": None}
    if run is None or not run.is_dir():
        return out
    m = _json(run / "manifest.json") or {}
    rows = metrics(run)
    train = [r for r in rows if "loss" in r]
    out.update(total=(m.get("schedule") or {}).get("steps") or m.get("steps"), manifest_status=m.get("status"),
               loss=[[r["step"], r["loss"]] for r in train],
               eval=[[r["step"], r.get("eval_loss", r.get("val_loss"))] for r in rows
                     if "loss" not in r and ("eval_loss" in r or "val_loss" in r)])
    if train:
        out["step"], out["tok_s"] = train[-1]["step"], train[-1].get("tok_s")
    began = _epoch(m.get("started"))
    if began and out["total"] and out["step"] and m.get("status") != "done":
        per = (time.time() - began) / out["step"]
        out["eta_s"] = round(per * (out["total"] - out["step"]))
    elif m.get("status") == "done":
        out["eta_s"] = 0
    return out


def find_reports(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob("report.json") if ".tmp-" not in str(p))[:20]


def report(ws: Workspace, folder: str) -> dict:
    """Every report in a run folder as tables: rows of metrics, a column per model (base, tuned, …)."""
    run = ws.path(folder, "run")
    if not run.is_dir():
        raise UserError(f"run: {folder} is not a folder")
    tables = []
    for p in find_reports(run):
        rep = _json(p) or {}
        cols = {k: v["scores"] for k, v in rep.items() if isinstance(v, dict) and isinstance(v.get("scores"), dict)}
        if not cols:  # other reports: any {model: {metric: number}} mapping
            cols = {k: v for k, v in rep.items() if isinstance(v, dict) and v
                    and all(isinstance(x, (int, float)) for x in v.values())}
        metrics_ = list(dict.fromkeys(k for c in cols.values() for k, x in c.items() if isinstance(x, (int, float))))
        md = p.with_name("report.md")
        tables.append({"file": ws.rel(p), "title": p.parent.name, "columns": list(cols),
                       "rows": [[k, *[cols[c].get(k) for c in cols]] for k in metrics_],
                       "identity": rep.get("identity"),
                       "markdown": md.read_text(encoding="utf-8") if md.is_file() else None})
    m = _json(run / "manifest.json") or {}
    return {"run": ws.rel(run), "manifest": m, "reports": tables, "lineage": lineage(run, m),
            "loss": [[r["step"], r["loss"]] for r in metrics(run) if "loss" in r]}


def lineage(run: Path, m: dict) -> dict:
    """Nodes and edges: the base → each stage (a pipeline's stages, or the run's parent chain)."""
    nodes, edges = [], []

    def node(key: str, label: str, kind: str) -> str:
        if key not in {n["id"] for n in nodes}:
            nodes.append({"id": key, "label": label, "kind": kind})
        return key

    if m.get("stages"):
        prev = node(str(m.get("model") or m.get("base_model") or "base"), Path(str(m.get("model", "base"))).name, "model")
        for st in m["stages"]:
            cur = node(st.get("folder", st.get("stage")), f"{st.get('stage')} ({st.get('kind')})", st.get("kind", ""))
            edges.append([prev, cur])
            prev = cur
        return {"nodes": nodes, "edges": edges}
    chain, cur, seen = [], run, set()
    while cur is not None and cur.is_dir() and str(cur) not in seen and len(chain) < 12:
        seen.add(str(cur))
        mm = _json(cur / "manifest.json") or {}
        chain.append((cur, mm))
        parent = mm.get("parent") or (mm.get("adapters") or [None])[-1]  # a merge/export: its last adapter
        parent = parent.get("path") if isinstance(parent, dict) else parent
        cur = Path(parent) if isinstance(parent, str) and parent else None
    base = chain[-1][1].get("base_model")
    base = base.get("path") or base.get("spec") if isinstance(base, dict) else base
    prev = node(str(base or "base"), Path(str(base or "base")).name, "model")
    for folder, mm in reversed(chain):
        cur_id = node(str(folder), f"{folder.name} ({mm.get('job') or mm.get('kind') or 'run'})", "run")
        edges.append([prev, cur_id])
        prev = cur_id
    return {"nodes": nodes, "edges": edges}


def export_info(ws: Workspace, folder: str) -> dict:
    """An export folder: its files (with sizes), the Modelfile and the ``ollama create`` line of its README."""
    out = ws.path(folder, "export")
    if not out.is_dir():
        raise UserError(f"export: {folder} is not a folder")
    files = [{"name": p.name, "path": ws.rel(p), "size": p.stat().st_size}
             for p in sorted(out.iterdir()) if p.is_file() and not p.name.startswith(".")]
    modelfile = out / "Modelfile"
    readme = out / "README.md"
    line = re.search(r"ollama create [^\n`]+", readme.read_text(encoding="utf-8")) if readme.is_file() else None
    return {"folder": ws.rel(out), "files": files,
            "modelfile": modelfile.read_text(encoding="utf-8") if modelfile.is_file() else None,
            "ollama": f"cd {ws.rel(out)} && {line.group(0).strip()}" if line else None}


def list_runs(ws: Workspace) -> list[dict]:
    """Folders with a manifest under the workspace's runs/ and exports (the UI's jobs also name theirs)."""
    out = []
    for top in ("runs", "exports"):
        d = ws.root / top
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            m = _json(p / "manifest.json") if p.is_dir() else None
            if m is not None:
                out.append({"path": ws.rel(p), "status": m.get("status"), "kind": m.get("job") or m.get("kind"),
                            "adapter": (p / "adapter_config.json").is_file(), "reports": len(find_reports(p)),
                            "gguf": any(p.glob("*.gguf"))})
    return out
