"""The ``eval tasks`` report: report.json, report.md, scores.png, one confusion matrix PNG per
label task and model, and each model's answers as alpaca rows (answers/<model>/<task>.jsonl, so
``tunesmith synth task multiply --check`` can judge every step of them). Tasks with a step
checker get a step-valid row beside exact: the share of answers in which every step holds."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..fsutil import write_atomic


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "x"


def _pct(v) -> str:
    return "—" if v is None else f"{v:.1%}"


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def scores_png(rep: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(rep["tasks"]) + (["retention"] if "retention" in rep["runs"][0] else [])
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(cols) * len(rep["runs"]) ** 0.5), 3.2))
    w = 0.8 / len(rep["runs"])
    for k, r in enumerate(rep["runs"]):
        vals = [(r["tasks"][c] if c in r["tasks"] else r["retention"])["accuracy"] * 100 for c in cols]
        ax.bar([i + k * w for i in range(len(cols))], vals, w, label=r["name"])
    ax.set_xticks([i + w * (len(rep["runs"]) - 1) / 2 for i in range(len(cols))])
    ax.set_xticklabels([c if c.isascii() else f"T{i}" for i, c in enumerate(cols)], rotation=15)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    data = _png(fig)
    plt.close(fig)
    return data


def confusion_png(conf: dict, title: str) -> bytes:
    """Rows: the gold label; columns: the predicted one. Non-ASCII labels are drawn as L0, L1…
    (report.md gives the key: the default fonts have no CJK glyphs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, m = conf["labels"], conf["matrix"]
    ticks = [l if l.isascii() else f"L{i}" for i, l in enumerate(labels)]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(labels), 0.8 + 0.5 * len(m)))
    ax.imshow(m, cmap="Blues")
    for i, row in enumerate(m):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color="white" if v > max(map(max, m)) / 2 else "black")
    ax.set_xticks(range(len(labels)), ticks, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(m)), ticks[:len(m)], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title if title.isascii() else "confusion matrix", fontsize=9)
    data = _png(fig)
    plt.close(fig)
    return data


def _what(run: dict) -> str:
    if run.get("gguf"):
        return f"GGUF through llama.cpp: {run['gguf']}"
    return run["adapter"] or "no adapter"


def switch_table(rep: dict) -> list[str]:
    """Share of answers that follow the thinking switch, per task and mode (— : no switch in the template)."""
    runs = rep["runs"]
    names = [n for n in runs[0]["tasks"] if any("switch" in r["tasks"][n] for r in runs)]
    if not names:
        return []
    lines = ["", "## Thinking switch", "",
             "Answers that follow the template's `enable_thinking`: on, a `<think>…</think>` block then an answer; "
             "off, no `<think>` (the `format` reward). — : the model's template has no switch.", "",
             "| task | items | " + " | ".join(r["name"] for r in runs) + " |", "|---|---|" + "---|" * len(runs)]
    for n in names:
        lines.append(f"| {n} | {runs[0]['tasks'][n]['items']} | "
                     + " | ".join(_pct(r["tasks"][n].get("switch")) for r in runs) + " |")
    return lines


def step_rows(rep: dict, name: str | None = None) -> list[str]:
    """The step-valid row of a task (``name``), or of all its step-checked answers together (None):
    nothing where no step checker applies (or, for all, where only one task has one)."""
    runs = rep["runs"]
    if name is None:
        if sum("step_valid" in s for s in runs[0]["tasks"].values()) < 2:
            return []
        label, kind, scores = "all step-checked answers (step-valid)", "steps", runs
    else:
        if "steps" not in rep["tasks"][name]:
            return []
        label, kind = f"{name} (step-valid)", f"{', '.join(rep['tasks'][name]['steps'])} steps"
        scores = [r["tasks"][name] for r in runs]
    return [f"| {label} | {kind} | {scores[0]['step_items']} | "
            + " | ".join(_pct(s.get("step_valid")) for s in scores) + " |"]


STEP_NOTE = ("\nStep-valid: the share of answers in which every step holds (the task's step checker, as "
             "`synth task --check` runs it), over the rows whose expected answer is a checkable chain; exact judges "
             "the final result alone.")


def markdown(rep: dict, pngs: dict[str, list[str]], wrong: int) -> str:
    runs = rep["runs"]
    lines = [f"# Task report: `{rep['model']}`", "",
             "Models: " + "; ".join(f"**{r['name']}** ({_what(r)})" for r in runs), "",
             "| task | kind | items | " + " | ".join(r["name"] for r in runs) + " |",
             "|---|---|---|" + "---|" * len(runs)]
    for name, t in rep["tasks"].items():
        lines.append(f"| {name} | {', '.join(t['kinds'])} | {t['items']} | "
                     + " | ".join(_pct(r["tasks"][name]["accuracy"]) for r in runs) + " |")
        if "label" in t["kinds"]:
            for how in ("loglik", "generate"):
                lines.append(f"| {name} ({'ranked by log-likelihood' if how == 'loglik' else 'generated, exact'}) "
                             f"| label | {t['items']} | "
                             + " | ".join(_pct(r["tasks"][name][how]["accuracy"]) for r in runs) + " |")
        lines += step_rows(rep, name)
    lines += step_rows(rep)
    if "retention" in runs[0]:
        for lang, label in (("", "retention (general set)"), ("_en", "retention (en)"), ("_zh", "retention (zh)")):
            key, n = f"accuracy{lang}", runs[0]["retention"].get(f"items{lang}", "")
            lines.append(f"| {label} | contains | {n} | "
                         + " | ".join(_pct(r["retention"].get(key)) for r in runs) + " |")
    for name, d in rep.get("retention_delta", {}).items():
        lines.append(f"\nRetention delta, {name} − base: **{d * 100:+.1f} points**.")
    if any("steps" in t for t in rep["tasks"].values()):
        lines.append(STEP_NOTE)
    lines += switch_table(rep)
    lines += ["", "![scores](scores.png)", ""]
    for name, t in rep["tasks"].items():
        if "label" not in t["kinds"]:
            continue
        lines += [f"## {name}: per label (ranked by log-likelihood)", "",
                  "| label | key | " + " | ".join(f"{r['name']} P / R" for r in runs) + " |",
                  "|---|---|" + "---|" * len(runs)]
        for i, l in enumerate(t["labels"]):
            cells = [f"{_pct(r['tasks'][name]['loglik']['per_label'][l]['precision'])} / "
                     f"{_pct(r['tasks'][name]['loglik']['per_label'][l]['recall'])}" for r in runs]
            lines.append(f"| {l} | {l if l.isascii() else f'L{i}'} | " + " | ".join(cells) + " |")
        lines += [""] + [f"![{p}]({p})" for p in pngs.get(name, [])] + [""]
    lines += ["## Wrong answers", ""]
    for r in runs:
        for name, ans in r["answers"].items():
            bad = [a for a in ans if not a["correct"] or a.get("step_valid") is False][:wrong]
            if bad:
                lines.append(f"**{r['name']} — {name}**")
                lines.append("")
                for a in bad:
                    q = a.get("instruction", a.get("prompt", ""))
                    exp = a.get("expect")
                    got = a.get("output", a.get("answer", "")).replace("\n", " ⏎ ")
                    exp = (exp if isinstance(exp, str) else " / ".join(exp)).replace("\n", " ⏎ ")
                    lines.append(f"- `{q[:80]}` expected `{exp[:160]}`"
                                 f"{' (ranked: ' + a['ranked'] + ')' if 'ranked' in a else ''} → {got[:160]}"
                                 + (f" — step {a['step_error'][:120]}" if a.get("step_error") else ""))
                lines.append("")
    return "\n".join(lines) + "\n"


def write_report(rep: dict, out: Path, wrong: int) -> None:
    pngs: dict[str, list[str]] = {}
    for r in rep["runs"]:
        for name, ans in r["answers"].items():
            write_atomic(out / "answers" / _slug(r["name"]) / f"{_slug(name)}.jsonl",
                         "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in ans))
        for name, s in r["tasks"].items():
            if "loglik" in s:
                p = f"confusion-{_slug(name)}-{_slug(r['name'])}.png"
                write_atomic(out / p, confusion_png(s["loglik"]["confusion"], f"{name} — {r['name']}"))
                pngs.setdefault(name, []).append(p)
    write_atomic(out / "scores.png", scores_png(rep))
    slim = {**rep, "runs": [{k: v for k, v in r.items() if k != "answers"} for r in rep["runs"]]}
    write_atomic(out / "report.json", json.dumps(slim, indent=1, ensure_ascii=False))
    write_atomic(out / "report.md", markdown(rep, pngs, wrong))
