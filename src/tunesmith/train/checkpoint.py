"""Checkpoints that survive SIGKILL at any moment: written under a temp name, renamed whole.

A checkpoint holds the trainable tensors (safetensors), optimizer and scheduler state,
every process's RNG states, and the step. Only folders named ``step-NNNNNNNN`` count.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

PREFIX = "step-"


def checkpoints(run_dir: Path) -> list[Path]:
    d = run_dir / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").is_file())


def latest(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def rng_state() -> dict:
    """RNG states as tensors and plain lists, so they load with the safe unpickler."""
    import numpy as np
    import torch

    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [py[0], list(py[1]), py[2]], "numpy": [name, torch.from_numpy(keys.astype("int64")), pos,
                                                               has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def begin(run_dir: Path, step: int) -> Path:
    """The temp folder to fill for ``step`` (made by the main process)."""
    tmp = run_dir / "checkpoints" / f".tmp-{PREFIX}{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def write_tensors(tmp: Path, tensors: dict, optim_state: dict, scheduler) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp / "trainable.safetensors")
    torch.save({"optimizer": optim_state, "scheduler": scheduler.state_dict()}, tmp / "optim.pt")


def write_rng(tmp: Path, rank: int) -> None:
    import torch

    torch.save(rng_state(), tmp / f"rng-{rank}.pt")


def commit(tmp: Path, step: int, state: dict, keep_last: int) -> Path:
    """Mark complete (state.json last, then rename) and drop checkpoints beyond ``keep_last``."""
    from ..fsutil import fix_modes, write_atomic

    write_atomic(tmp / "state.json", json.dumps({"step": step, **state}))
    fix_modes(tmp)  # safetensors and torch.save files get the umask's modes, not 0600
    final = tmp.parent / f"{PREFIX}{step:08d}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoints(tmp.parent.parent)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path, rank: int):
    """``(tensors, optim_state, rng_state, state)`` of a checkpoint folder."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(path / "trainable.safetensors")
    # weights_only: the safe unpickler (tensors, numbers, dicts, lists only).
    optim = torch.load(path / "optim.pt", weights_only=True)
    rng_file = path / f"rng-{rank}.pt"
    rng = torch.load(rng_file, weights_only=True) if rng_file.is_file() else None
    state = json.loads((path / "state.json").read_text())
    return tensors, optim, rng, state
