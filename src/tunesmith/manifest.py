"""Where everything came from: content hashes, the git commit, and ``manifest.json``.

Every stage writes ``manifest.json`` into its output folder; stages chain by pointing
``parent`` at the previous folder, so the lineage can be walked back to the base model.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from . import __version__
from .fsutil import write_atomic
from .home import tunesmith_home

WEIGHT_SUFFIXES = (".safetensors",)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The tunesmith source commit, when running from a git checkout."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _hash_cache_path() -> Path:
    return tunesmith_home() / "hashes.json"


def model_hash(model_dir: str | Path) -> str:
    """sha256 over a model folder's config and weight files (names + contents).

    Cached by path, size and mtime, since hashing an 8B model takes tens of seconds."""
    import hashlib

    from .fsutil import sha256_file

    d = Path(model_dir).resolve()
    files = sorted(p for p in d.iterdir() if p.suffix in WEIGHT_SUFFIXES or p.name == "config.json")
    key = str(d) + "|" + "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    cache_file = _hash_cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    digest = h.hexdigest()
    cache[key] = digest
    try:
        write_atomic(cache_file, json.dumps(cache, indent=0))
    except OSError:
        pass  # a read-only cache only costs time
    return digest


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> None:
    base = {"tunesmith_version": __version__, "git_commit": git_commit()}
    write_atomic(Path(folder) / "manifest.json", json.dumps({**base, **manifest}, indent=2, ensure_ascii=False))


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    p = Path(folder) / "manifest.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        return None


def env_info() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"python": platform.python_version(), "host": platform.node(), "pid": os.getpid()}
    try:
        import torch
        import transformers

        info.update(torch=torch.__version__, transformers=transformers.__version__,
                    device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    except ImportError:
        pass
    return info
