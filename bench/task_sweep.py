"""Issue 15's settings sweeps, run through the real verbs (``python -m tunesmith …``).

    python bench/task_sweep.py multiply --model DIR --out OUT [--only a,b] [--dtype fp32]
    python bench/task_sweep.py identity --model DIR --out OUT [--only …]
    python bench/task_sweep.py intent   --model DIR --out OUT [--only …]

``multiply``: 2x2-digit English CoT rows at several sizes (and with the base model's own replay
answers mixed in) → LoRA → ``eval tasks`` on 200 held-out pairs (+ retention) and the step checker's
pass rate on the answers. ``identity``: the identity verb at several settings → its identity report
(name, author, leak per language) + retention from ``eval tasks``. ``intent``: the intent recipe's
training with replay mixed in → held-out label accuracy + retention.

A sweep chooses settings; the figures in docs/benchmarks.md for a recipe come from running the
recipe itself. Each experiment prints one summary line and the whole table goes to OUT/summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SMOKE: list[str] = []  # extra eval arguments of --smoke

MULTIPLY = {  # name: (task rows, replay upsample, LoRA r, lr, epochs[, train seed])
    "m1000": (1000, 0, 32, 2e-3, 1),
    "m2000": (2000, 0, 32, 2e-3, 1),
    "m4000": (4000, 0, 32, 2e-3, 1),
    "m2000e2": (2000, 0, 32, 2e-3, 2),
    "m2000r64": (2000, 0, 64, 2e-3, 1),
    "m2000rp1": (2000, 1, 32, 2e-3, 1),
    "m2000rp2": (2000, 2, 32, 2e-3, 1),
    "m1000rp1e2": (1000, 1, 32, 2e-3, 2),
    "m2000rp4": (2000, 4, 32, 2e-3, 1),
    "m2000rp8": (2000, 8, 32, 2e-3, 1),
    "m2000rp4lr1e-3": (2000, 4, 32, 1e-3, 1),
    "m2000rp4s1": (2000, 4, 32, 2e-3, 1, 1),
    "m2000rp4r16": (2000, 4, 16, 2e-3, 1),
    "m2000rp4r8": (2000, 4, 8, 2e-3, 1),
    "m2000rp6": (2000, 6, 32, 2e-3, 1),
    "m2000rp4r8s1": (2000, 4, 8, 2e-3, 1, 1),
    "m2000rp4r8s2": (2000, 4, 8, 2e-3, 1, 2),
}
IDENTITY = {  # name: CLI overrides of `tunesmith identity` (S2 = today's defaults)
    "S2": [],
    "S3-up3": ["--replay.upsample", "3"],
    "S4-lr5e-4": ["--train.lr", "5e-4"],
    "S5-r8": ["--lora.r", "8", "--lora.alpha", "16"],
    "S6-ep1": ["--train.epochs", "1"],
    "S7-up3-lr5e-4": ["--replay.upsample", "3", "--train.lr", "5e-4"],
    "S8-up4": ["--replay.upsample", "4"],
    "S9-up3-ep3-lr5e-4": ["--replay.upsample", "3", "--train.lr", "5e-4", "--train.epochs", "3"],
    "S2-seed1": ["--train.seed", "1"],
    "S2-seed2": ["--train.seed", "2"],
    "S5-r8-seed1": ["--lora.r", "8", "--lora.alpha", "16", "--train.seed", "1"],
    "S5-r8-seed2": ["--lora.r", "8", "--lora.alpha", "16", "--train.seed", "2"],
}
INTENT = {  # name: (replay upsample, epochs)
    "i-rp0": (0, 4),
    "i-rp1": (1, 4),
    "i-rp2": (2, 4),
    "i-rp1-e2": (1, 2),
    "i-rp4": (4, 4),
}


def ts(*args: str, log: Path) -> float:
    """Run one tunesmith command, its output to ``log``; seconds taken. A failure stops the sweep."""
    t = time.time()
    with open(log, "a") as f:
        f.write("$ tunesmith " + " ".join(args) + "\n")
        f.flush()
        rc = subprocess.call([sys.executable, "-m", "tunesmith", *args], stdout=f, stderr=subprocess.STDOUT)
    if rc:
        sys.exit(f"tunesmith {' '.join(args[:3])} … failed (rc {rc}); see {log}")
    return time.time() - t


def replay_file(model: str, out: Path, dtype: str | None, log: Path) -> Path:
    """The base model's answers to the shipped general prompts (each once; the mix weighs them by ratio)."""
    path = out / "replay.jsonl"
    if not path.is_file():
        from tunesmith.synth.replay import replay_rows

        rows, info = replay_rows(model, ["en", "zh"], None, 64, 32, dtype=dtype)
        with open(log, "a") as f:
            f.write(f"replay: {info}\n")
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def train(model: str, run: Path, datasets: list[dict], r: int, lr: float, epochs: int, cutoff: int,
          dtype: str | None, log: Path, seed: int = 42) -> float:
    cfg = {"model": model, "output_dir": str(run), "data": {"datasets": datasets, "cutoff_len": cutoff},
           "lora": {"r": r, "alpha": 2 * r, "dropout": 0.0},
           "train": {"lr": lr, "epochs": epochs, "batch_size": 8, "warmup": 0.05, "seed": seed}}
    if dtype:
        cfg["dtype"] = dtype
    path = run.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    return ts("train", str(path), log=log)


def final_loss(run: Path) -> float | None:
    p = run / "metrics.jsonl"
    if not p.is_file():
        return None
    losses = [json.loads(x).get("loss") for x in p.read_text().splitlines() if '"loss"' in x]
    return losses[-1] if losses else None


def eval_tasks(model: str, runs: list[Path], tasks: list[str], out: Path, dtype: str | None, log: Path,
               extra: list[str] = ()) -> dict:
    args = ["eval", "tasks", "--model", model, "--out", str(out), "--batch_size", "200", *extra, *SMOKE]
    for t in tasks:
        args += ["--tasks", t]
    for r in runs:
        args += ["--adapter", str(r)]
    if dtype:
        args += ["--dtype", dtype]
    ts(*args, log=log)
    return json.loads((out / "report.json").read_text())


def step_pass(answers: Path) -> float | None:
    """Share of answers whose every step passes the multiply checker."""
    from tunesmith.tasks.arith import check_row

    if not answers.is_file():
        return None
    rows = [json.loads(x) for x in answers.read_text().splitlines() if x.strip()]
    return sum(check_row("multiply", r) is None for r in rows) / max(len(rows), 1)


def sweep_multiply(a, out: Path, log: Path) -> list[dict]:
    names = a.only or list(MULTIPLY)
    n_max = max(MULTIPLY[n][0] for n in names)
    train_file, test_file = out / "mul-train.jsonl", out / "mul-test.jsonl"
    ts("synth", "task", "multiply", "--digits", "2,2", "--n", str(n_max), "--lang", "en", "--seed", "0",
       "--out", str(train_file), log=log)
    ts("synth", "task", "multiply", "--digits", "2,2", "--n", "200", "--lang", "en", "--split", "test",
       "--seed", "1", "--out", str(test_file), log=log)
    rows, runs = [], []
    for name in names:
        n, up, r, lr, ep, *seed = MULTIPLY[name]
        ds = [{"path": str(train_file), "samples": n}]
        if up:
            ds.append({"path": str(replay_file(a.model, out, a.dtype, log)), "ratio": up})
        run = out / name
        secs = train(a.model, run, ds, r, lr, ep, 480, a.dtype, log, *seed)
        runs.append(run)
        rows.append({"name": name, "rows": n, "replay_x": up, "r": r, "lr": lr, "epochs": ep,
                     "train_s": round(secs, 1), "final_loss": final_loss(run)})
        print(json.dumps(rows[-1]), flush=True)
    rep = eval_tasks(a.model, runs, [str(test_file)], out / "eval", a.dtype, log, ["--max_new_tokens", "480"])
    by = {x["name"]: x for x in rep["runs"]}
    print("base", json.dumps(by["base"]), flush=True)
    for row in rows:
        got = by[row["name"]]
        row["exact"] = got["tasks"]["mul-test"]["accuracy"]
        row["retention"] = got["retention"]["accuracy"]
        row["retention_delta"] = rep["retention_delta"][row["name"]]
        row["steps_pass"] = step_pass(out / "eval" / "answers" / row["name"] / "mul-test.jsonl")
        print(json.dumps(row), flush=True)
    return [{"name": "base", **by["base"]}] + rows


def sweep_identity(a, out: Path, log: Path) -> list[dict]:
    rows = []
    for name in a.only or list(IDENTITY):
        run = out / name
        extra = ["--dtype", a.dtype] if a.dtype else []
        secs = ts("identity", "--model", a.model, "--name", "Mira", "--author", "Tunesmith Lab", "--output_dir",
                  str(run), "--progress", "false", *extra, *IDENTITY[name], log=log)
        rep = eval_tasks(a.model, [run], [], out / f"{name}-ret", a.dtype, log)
        s = json.loads((run / "eval" / "report.json").read_text())["tuned"]["scores"]
        rows.append({"name": name, "args": " ".join(IDENTITY[name]), "secs": round(secs, 1),
                     **{k: s.get(k) for k in ("name_hit_rate", "author_hit_rate", "leak_rate_en", "leak_rate_zh",
                                             "closeness")},
                     "retention_base": rep["runs"][0]["retention"]["accuracy"],
                     "retention": rep["runs"][1]["retention"]["accuracy"],
                     "retention_delta": rep["retention_delta"][name]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def sweep_intent(a, out: Path, log: Path) -> list[dict]:
    names = a.only or list(INTENT)
    rows, runs = [], []
    for name in names:
        up, ep = INTENT[name]
        ds = [{"path": str(REPO / "recipes/data/intents_train.jsonl")}]
        if up:
            ds.append({"path": str(replay_file(a.model, out, a.dtype, log)), "ratio": up})
        run = out / name
        secs = train(a.model, run, ds, 16, 2e-3, ep, 256, a.dtype, log)
        runs.append(run)
        rows.append({"name": name, "replay_x": up, "epochs": ep, "train_s": round(secs, 1)})
    rep = eval_tasks(a.model, runs, [str(REPO / "recipes/data/intents_test.jsonl") + ":label"], out / "eval",
                     a.dtype, log)
    by = {x["name"]: x for x in rep["runs"]}
    for row in rows:
        got = by[row["name"]]
        row["tasks"] = got["tasks"]
        row["retention"] = got["retention"]["accuracy"]
        row["retention_delta"] = rep["retention_delta"][row["name"]]
        print(json.dumps(row), flush=True)
    return [{"name": "base", **by["base"]}] + rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("set", choices=["multiply", "identity", "intent"])
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--only", type=lambda s: s.split(","), default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the plumbing on a CPU")
    a = p.parse_args()
    if a.smoke:
        for k, v in MULTIPLY.items():
            MULTIPLY[k] = (16, *v[1:])
        SMOKE.extend(["--max_items", "3", "--max_new_tokens", "24"])
    out = Path(a.out) / a.set
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    rows = {"multiply": sweep_multiply, "identity": sweep_identity, "intent": sweep_intent}[a.set](a, out, log)
    (Path(a.out) / f"{a.set}-summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
