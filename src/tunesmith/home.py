"""Where tunesmith keeps its cache: imported models, hashes, llama.cpp tools, replay answers."""
from __future__ import annotations

import os
from pathlib import Path


def tunesmith_home() -> Path:
    """Cache root: ``$TUNESMITH_HOME`` or ``~/.cache/tunesmith``."""
    env = os.environ.get("TUNESMITH_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tunesmith"
