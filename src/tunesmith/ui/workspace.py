"""The UI's one folder: every path it writes (uploads, saved recipes, job state, a job's outputs) must resolve
inside it, and a file there is replaced only when tunesmith wrote it (the output policy, ``tunesmith.outputs``)."""
from __future__ import annotations

import os
import types
from pathlib import Path

from ..errors import UserError
from ..fsutil import write_atomic
from ..outputs import Output, claimed, plan

STATE = ".tunesmith-ui"


class Workspace:
    def __init__(self, root: Path):
        self.root = root.resolve()

    def path(self, given: str | os.PathLike, what: str = "path") -> Path:
        """``given`` (relative to the workspace, or absolute) as an absolute path inside the workspace;
        links are followed, so a link pointing out is refused too. Raises UserError."""
        raw = str(given).strip()
        if not raw:
            raise UserError(f"{what}: empty: name a file inside the workspace")
        p = Path(raw).expanduser()
        full = (p if p.is_absolute() else self.root / p).resolve()
        if full != self.root and self.root not in full.parents:
            raise UserError(f"{what}: {raw} is outside the workspace {self.root}: the UI writes only inside it")
        return full

    def rel(self, p: str | Path) -> str:
        """``p`` as the workspace-relative text a command line in the workspace takes."""
        full = Path(p) if Path(p).is_absolute() else self.root / p
        try:
            return str(full.resolve().relative_to(self.root))
        except ValueError:
            return str(full)

    def state(self, *parts: str) -> Path:
        return self.root.joinpath(STATE, *parts)

    def write(self, given: str, text: str | bytes, what: str = "path", overwrite: bool = False) -> Path:
        """Write a user-facing file (a saved recipe, an upload) through the output policy: inside the workspace,
        never over a file tunesmith did not write (its own earlier one only with ``overwrite``)."""
        full = self.path(given, what)
        cfg = types.SimpleNamespace(**{"path": str(full)})
        with claimed(plan("ui", (Output("path", "file"),), (), cfg, overwrite)):
            write_atomic(full, text)
        return full

    def write_state(self, name: str, text: str) -> Path:
        """The UI's own bookkeeping (job records), under .tunesmith-ui/."""
        p = self.state(name)
        write_atomic(p, text)
        return p
