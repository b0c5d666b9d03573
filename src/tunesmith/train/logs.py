"""Run logs: ``metrics.jsonl`` (one JSON object a line), TensorBoard events, ``loss.png``."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..fsutil import write_atomic


class RunLog:
    """Appends metrics; on resume, drops lines past the checkpoint so the curve stays one curve."""

    def __init__(self, run_dir: Path, resume_step: int = 0, enabled: bool = True, plot_every_s: float = 20.0):
        self.run_dir = run_dir
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.rows: list[dict] = []
        self.plot_every_s = plot_every_s
        self._last_plot = 0.0
        self.tb = None
        if not enabled:
            return
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    break  # a torn last line from a kill
                if row.get("step", 0) <= resume_step:
                    self.rows.append(row)
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
        except ImportError:  # tensorboard is a dependency, but a stripped install should still train
            self.tb = None

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k.replace("eval_", "eval/") if k.startswith("eval_") else f"train/{k}",
                                       v, row["step"])
        if time.time() - self._last_plot > self.plot_every_s:
            self.plot()

    def plot(self) -> None:
        if not self.enabled or not self.rows:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [(r["step"], r["loss"]) for r in self.rows if "loss" in r]
        val = [(r["step"], r["eval_loss"]) for r in self.rows if "eval_loss" in r]
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        if train:
            ax.plot(*zip(*train), label="train loss", lw=1.2)
        if val:
            ax.plot(*zip(*val), "o-", label="val loss", lw=1.2)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(self.run_dir.name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        tmp = self.run_dir / ".loss.png.tmp"
        fig.savefig(tmp, format="png")
        plt.close(fig)
        tmp.replace(self.run_dir / "loss.png")
        self._last_plot = time.time()

    def close(self) -> None:
        self.plot()
        if self.tb is not None:
            self.tb.close()
