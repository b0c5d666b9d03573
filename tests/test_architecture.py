"""The house rules, checked on the source: imports point down — shared pieces import no stage,
no stage imports a job, compat or the CLI — no module of ``src/tunesmith`` takes part in an
import cycle (function-level imports count), and no module grows past ~400 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
STAGES = ("data", "synth", "train", "eval", "export", "infer", "serve", "models", "tasks")
# Arrows the design forbids between stages: synth makes data and never trains or evaluates;
# eval reads models and outputs, never synth or train; the task home (generators, checkers,
# answer scoring, rewards) is read by synth, eval and train and reads none of them.
FORBIDDEN = {("synth", "train"), ("synth", "eval"), ("eval", "synth"), ("eval", "train"),
             ("tasks", "synth"), ("tasks", "eval"), ("tasks", "train"), ("tasks", "jobs")}
# The top-level modules every layer may use; they use no stage and nothing above the stages. (The
# registry names verbs by "module:attr" strings, imported when a verb runs: no import arrow.)
SHARED = ("config", "errors", "fsutil", "jsonl", "manifest", "registry", "outputs", "home")
ABOVE = ("jobs", "compat", "cli", "__main__", "ui")  # above the stages: they may import any stage
MAX_LINES = 420


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


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up: a shared piece → a stage or above, a stage → jobs/compat/cli, and the
    arrows the design forbids between stages."""
    bad = []
    for mod, deps in graph.items():
        src = layer(mod)
        for d in deps:
            dst = layer(d)
            if (src in SHARED and dst in STAGES + ABOVE) or (src in STAGES and dst in ABOVE) \
                    or (src, dst) in FORBIDDEN:
                bad.append(f"{mod} → {d}")
    return sorted(bad)


def test_imports_point_down():
    assert upward_arrows(module_graph()) == []


@pytest.mark.parametrize("name", SHARED)
def test_every_shared_piece_exists(name):
    assert (SRC / "tunesmith" / f"{name}.py").is_file()  # a renamed one would silently escape the rule


def long_modules(root: Path = SRC / "tunesmith") -> list[str]:
    return sorted(f"{f.relative_to(root)}: {n} lines" for f in root.rglob("*.py")
                  if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES)


def test_no_module_is_over_420_lines():
    assert long_modules() == []


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
    assert upward_arrows(g) == ["tunesmith.train.b → tunesmith.jobs", "tunesmith.train.b → tunesmith.jobs.j"]


def test_the_shared_and_length_rules_can_fail(tmp_path):
    """A shared piece importing a stage inside a function, a stage importing compat, and a long module."""
    pkg = tmp_path / "tunesmith"
    for sub in ("models", "compat", "serve"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "resolve.py").write_text("def tunesmith_home():\n    pass\n")
    (pkg / "manifest.py").write_text("def f():\n    from .models.resolve import tunesmith_home\n")
    (pkg / "registry.py").write_text('VERBS = ["tunesmith.serve.app:build"]\n')  # a string, not an import
    (pkg / "compat" / "lf.py").write_text("")
    (pkg / "serve" / "app.py").write_text("from ..compat import lf\n" + "x = 1\n" * MAX_LINES)
    assert upward_arrows(module_graph(pkg)) == ["tunesmith.manifest → tunesmith.models.resolve",
                                                "tunesmith.serve.app → tunesmith.compat",
                                                "tunesmith.serve.app → tunesmith.compat.lf"]
    assert long_modules(pkg) == [f"serve/app.py: {MAX_LINES + 1} lines"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_is_a_package(stage):
    assert (SRC / "tunesmith" / stage / "__init__.py").is_file()
