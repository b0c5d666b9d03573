"""Training: one loop (loop.py), several objectives (objectives/), one entry point.

``tunesmith train`` and every job that trains call ``train(cfg)``:

    train(cfg) → N processes of ``tunesmith train <recipe>`` (``nproc`` > 1, launch.py)
              or setup(cfg) → fit(run) in this process (loop.py)
"""
from __future__ import annotations

import os

from .config import TrainConfig


def train(cfg: TrainConfig) -> int:
    """Run the recipe; returns the exit code. Raises UserError for bad data, config or model
    (nothing half-written). With ``nproc`` > 1 it returns when every process has finished."""
    from ..fsutil import check_writable_dir
    from ..registry import run_folder

    if not cfg.output_dir:  # named here, once, so every process and checkpoint agrees on it
        check_writable_dir("runs", "output_dir (default runs/)")
        cfg = cfg.model_copy(update={"output_dir": run_folder("train", cfg)})
    check_writable_dir(cfg.output_dir, "output_dir")  # found before any data or model loads
    if cfg.nproc > 1 and "WORLD_SIZE" not in os.environ:  # in a launched worker, WORLD_SIZE is set
        from .launch import launch

        return launch(cfg)
    from .loop import fit, setup

    return fit(setup(cfg))
