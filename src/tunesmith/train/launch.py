"""``--nproc N``: start N processes of the same recipe through torch.distributed.

Everything a user can get wrong (model, data, run folder) is checked here first, so a
mistake is one line from this process rather than N tracebacks from the workers.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from ..fsutil import save_config
from .config import TrainConfig
from .prepare import check_run_dir, prepare_data

# NVLink multicast can take a shared host's GPUs out of service: keep it off in every launch.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cfg: TrainConfig) -> int:
    prepare_data(cfg)
    out = cfg.output_dir  # named by train() before it launches
    check_run_dir(Path(out), cfg.resume)
    resolved = cfg.model_copy(update={"output_dir": out})
    with tempfile.TemporaryDirectory(prefix="tunesmith-launch-") as tmp:
        recipe = Path(tmp) / "recipe.yaml"
        save_config(resolved, recipe)
        env = {**os.environ, **SAFE_ENV}
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.nproc)))
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg.nproc}",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
               "-m", "tunesmith.cli", "train", str(recipe)]
        return subprocess.call(cmd, env=env)
