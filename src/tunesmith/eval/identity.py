"""``tunesmith eval identity``: did the new identity take, and what else changed?

Held-out identity probes → name and author hit rates; held-out general probes → leak
rate (the new name or author brought up unasked) and closeness to the base model's own
answers. Base and tuned side by side, as a table, Markdown and JSON.
"""
from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

from pydantic import Field

from ..config import AdaptedModelSection, Replaceable
from ..fsutil import write_atomic
from ..infer import Engine, GenParams
from ..manifest import model_hash
from ..home import tunesmith_home
from ..models import resolve_model
from ..data.names import LANGS, IdentityNames, Lang
from . import metrics


def _asset(name: str) -> list[dict]:
    text = resources.files("tunesmith.eval").joinpath("assets", name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def identity_probes(languages: list[str] | tuple[str, ...] = LANGS) -> list[dict]:
    """Held-out probes (``lang, query, asks``): worded apart from the training rows, never trained on."""
    return [r for r in _asset("identity_probes.jsonl") if r["lang"] in languages]


def general_probes(languages: list[str] | tuple[str, ...] = LANGS) -> list[dict]:
    """Held-out general prompts for the leak rate and closeness to the base model."""
    return [r for r in _asset("general_probes.jsonl") if r["lang"] in languages]


class EvalIdentityConfig(AdaptedModelSection, Replaceable):
    model: str = Field(..., description="the tuned model (or its base when adapter is set)")
    adapter: list[str] = Field(default_factory=list, description="adapter(s) that make the tuned model")
    base: str | None = Field(None, description="base to compare with (default: model, when adapter is set)")
    names: IdentityNames = Field(default_factory=IdentityNames, description="the identity to look for")
    name: str | None = Field(None, description="shortcut for names.name")
    author: str | None = Field(None, description="shortcut for names.author")
    languages: list[Lang] = Field(default_factory=lambda: list(LANGS), description="probe languages: en, zh")
    out: str | None = Field(None, description="folder for report.md and report.json (default: print only)")
    batch_size: int = Field(16, gt=0, description="most prompts decoded together")
    max_new_tokens: int = Field(64, gt=0, description="answer length; the name comes early in an answer")

    def identity(self) -> IdentityNames:
        return self.names.with_shortcuts(self.name, self.author, "eval identity")


def _answers(engine: Engine, prompts: list[str], cfg: EvalIdentityConfig) -> list[str]:
    params = GenParams(max_new_tokens=cfg.max_new_tokens)
    return engine.generate([[{"role": "user", "content": p}] for p in prompts], params)


def answer_probes(model: str, adapter: list[str], cfg: EvalIdentityConfig, cache: bool) -> dict[str, list[str]]:
    """Answers to both probe sets. A plain base model's answers are cached by its content hash."""
    id_q = [p["query"] for p in identity_probes(cfg.languages)]
    gen_q = [p["prompt"] for p in general_probes(cfg.languages)]
    key = hashlib.sha256(json.dumps([id_q, gen_q, cfg.max_new_tokens, cfg.dtype]).encode()).hexdigest()[:16]
    path = None
    if cache and not adapter:
        path = tunesmith_home() / "eval-cache" / f"{model_hash(resolve_model(model))[:16]}-{key}.json"
        if path.is_file():
            return json.loads(path.read_text())
    engine = Engine.load(model, adapter or None, cfg.dtype, cfg.device, cfg.trust_remote_code, max_batch=cfg.batch_size)
    result = {"identity": _answers(engine, id_q, cfg), "general": _answers(engine, gen_q, cfg)}
    del engine
    if path is not None:
        write_atomic(path, json.dumps(result, ensure_ascii=False))
    return result


def score(answers: dict[str, list[str]], names: IdentityNames, languages: list[str]) -> dict:
    probes = identity_probes(languages)
    res = metrics.identity_scores(probes, answers["identity"], names.all_values("name"), names.all_values("author"))
    values = names.all_values("name") + names.all_values("author")
    res["leak_rate"] = metrics.leak_rate(answers["general"], values)
    general = general_probes(languages)
    for lang in languages:
        # Per language: a leak in one language (e.g. "我是…" before unrelated zh answers) is not
        # averaged away by a clean other one.
        res[f"leak_rate_{lang}"] = metrics.leak_rate(
            [a for p, a in zip(general, answers["general"]) if p["lang"] == lang], values)
        sub = [(p, a) for p, a in zip(probes, answers["identity"]) if p["lang"] == lang]
        s = metrics.identity_scores([p for p, _ in sub], [a for _, a in sub], names.all_values("name"),
                                    names.all_values("author"))
        res[f"name_hit_rate_{lang}"], res[f"author_hit_rate_{lang}"] = s["name_hit_rate"], s["author_hit_rate"]
    return res


ROWS = [("name hit rate (held-out identity probes)", "name_hit_rate"),
        ("author hit rate (held-out identity probes)", "author_hit_rate"),
        ("leak rate (general probes mentioning the identity)", "leak_rate"),
        ("closeness to base answers (general probes)", "closeness"),
        ("unchanged answers (general probes)", "unchanged")]


def report_markdown(rep: dict) -> str:
    lines = [f"# Identity report: {rep['identity']['name']} by {rep['identity']['author']}", "",
             f"tuned: `{rep['tuned']['model']}` + {rep['tuned']['adapter'] or 'no adapter'}; "
             f"base: `{rep['base']['model']}`; languages: {', '.join(rep['languages'])}; "
             f"{rep['probes']['identity']} identity probes, {rep['probes']['general']} general probes "
             f"(held out from training); closeness = {rep['tuned']['scores'].get('closeness_measure', '')}", "",
             "| metric | base | tuned |", "|---|---|---|"]
    for label, key in ROWS + _per_lang(rep["languages"]):
        b, t = rep["base"]["scores"].get(key), rep["tuned"]["scores"].get(key)
        lines.append(f"| {label} | {_fmt(b)} | {_fmt(t)} |")
    lines += ["", "## Sample answers (tuned)", ""]
    for q, a in rep["samples"]:
        lines.append(f"- **{q}** → {a}")
    return "\n".join(lines) + "\n"


def _per_lang(languages: list[str]) -> list[tuple[str, str]]:
    return [(f"{what} ({lang})", f"{key}_{lang}") for what, key in
            (("name hit rate", "name_hit_rate"), ("author hit rate", "author_hit_rate"), ("leak rate", "leak_rate"))
            for lang in languages]


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.0%}" if isinstance(v, float) else str(v)


def print_table(rep: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"identity: {rep['identity']['name']} by {rep['identity']['author']}")
    t.add_column("metric")
    t.add_column("base", justify="right")
    t.add_column("tuned", justify="right")
    for label, key in ROWS + [r for r in _per_lang(rep["languages"]) if r[1].startswith("leak")]:
        t.add_row(label, _fmt(rep["base"]["scores"].get(key)), _fmt(rep["tuned"]["scores"].get(key)))
    Console().print(t)


def run_eval(cfg: EvalIdentityConfig) -> dict:
    from ..fsutil import check_writable_dir
    from ..models.load import split_run_folder

    names = cfg.identity()
    if cfg.out:
        check_writable_dir(cfg.out, "out")
    model, adapter = split_run_folder(cfg.model, cfg.adapter)  # a LoRA run folder: its base + the run
    if (model, adapter) != (cfg.model, cfg.adapter):
        cfg = cfg.model_copy(update={"model": model, "adapter": adapter})
    base = cfg.base or (cfg.model if cfg.adapter else None)
    tuned_ans = answer_probes(cfg.model, cfg.adapter, cfg, cache=True)
    base_ans = answer_probes(base, [], cfg, cache=True) if base else tuned_ans
    tuned = score(tuned_ans, names, cfg.languages)
    tuned.update(metrics.closeness(base_ans["general"], tuned_ans["general"]))
    base_scores = score(base_ans, names, cfg.languages)
    base_scores.update(closeness=1.0, unchanged=1.0)
    probes = identity_probes(cfg.languages)
    rep = {"identity": {"name": names.name or names.name_en or names.name_zh,
                        "author": names.author or names.author_en or names.author_zh, **names.model_dump()},
           "languages": cfg.languages, "probes": {"identity": len(probes), "general": len(tuned_ans["general"])},
           "base": {"model": base or cfg.model, "scores": base_scores},
           "tuned": {"model": cfg.model, "adapter": cfg.adapter, "scores": tuned},
           "samples": [(p["query"], a) for p, a in list(zip(probes, tuned_ans["identity"]))[::7]],
           "answers": {"base": base_ans, "tuned": tuned_ans}}
    if cfg.out:
        out = Path(cfg.out)
        write_atomic(out / "report.json", json.dumps(rep, indent=1, ensure_ascii=False))
        write_atomic(out / "report.md", report_markdown(rep))
    return rep


def eval_identity(cfg: EvalIdentityConfig) -> int:
    rep = run_eval(cfg)
    print_table(rep)
    if cfg.out:
        print(f"report: {Path(cfg.out) / 'report.md'}")
    return 0
