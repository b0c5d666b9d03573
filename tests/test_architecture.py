"""The house rules, checked on the source: imports point down (no stage imports a job), and
no module of ``src/tunesmith`` takes part in an import cycle (function-level imports count)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
STAGES = ("data", "synth", "train", "eval", "export", "infer", "serve", "models")
# Arrows the design forbids between stages: synth makes data and never trains or evaluates;
# eval reads models and outputs, never synth or train.
FORBIDDEN = {("synth", "train"), ("synth", "eval"), ("eval", "synth"), ("eval", "train")}


def module_graph(root: Path = SRC / "tunesmith") -> dict[str, set[str]]:
    mods = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    graph = {}
    for name, (f, is_pkg) in mods.items():
        pkg = name if is_pkg else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            deps |= {n for n in names if n in mods and n != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_no_import_cycles():
    assert cycles(module_graph()) == []


def test_no_stage_imports_a_job_and_forbidden_arrows_are_absent():
    bad = []
    for mod, deps in module_graph().items():
        if layer(mod) not in STAGES:
            continue
        for d in deps:
            if layer(d) == "jobs" or (layer(mod), layer(d)) in FORBIDDEN:
                bad.append(f"{mod} → {d}")
    assert bad == []


def test_the_checks_can_fail(tmp_path):
    """The walker sees a function-level import cycle and a stage → job arrow in a made-up tree."""
    pkg = tmp_path / "tunesmith"
    for sub in ("train", "jobs"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "train" / "b.py").write_text("from .a import f\nfrom ..jobs import j\n")
    (pkg / "jobs" / "j.py").write_text("")
    g = module_graph(pkg)
    assert cycles(g) == [["tunesmith.train.a", "tunesmith.train.b"]]
    assert "tunesmith.jobs.j" in g["tunesmith.train.b"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_is_a_package(stage):
    assert (SRC / "tunesmith" / stage / "__init__.py").is_file()
