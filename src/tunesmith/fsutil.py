"""Writing files safely: check outputs before any compute, write whole files with the user's umask.

Every verb that writes calls ``check_writable_file`` / ``check_writable_dir`` on its outputs
*before* it loads a model, so an output it cannot write costs one line, not an hour of work.
Files appear only whole (temp name in the same folder, then ``os.replace``) and with the
modes the user's umask gives (``mkstemp``/``mkdtemp`` alone would leave 0600/0700).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from .errors import UserError

_umask_lock = threading.Lock()

# Called before anything is written through this module: ``hook(path, data, staged)`` with the
# whole new bytes of a file (None for an append or a folder), or the finished temp folder that is
# about to become ``path``. ``outputs`` sets it to record who wrote what (its ownership markers).
WRITE_HOOK = None


def _announce(path: Path, data: bytes | None = None, staged: Path | None = None) -> None:
    if WRITE_HOOK is not None:
        WRITE_HOOK(Path(path), data, staged)


def will_append(path: str | Path) -> None:
    """Say that ``path`` is about to be appended to (a resumable output: predict's answers)."""
    _announce(Path(path))


def current_umask() -> int:
    """The process umask. Linux reports it in /proc (no change needed); elsewhere it can only be
    read by setting it, so that is done under a lock and put back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    return 0o777 & ~current_umask()


def fix_modes(root: str | Path) -> None:
    """Give a folder made with ``mkdtemp`` (0700), and everything in it, the umask's modes."""
    root = Path(root)
    fm, dm = file_mode(), dir_mode()
    os.chmod(root, dm)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), dm)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, fm)


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write a file so a reader never sees half of it: temp name in the same folder, then rename."""
    path = Path(path)
    data = text.encode("utf-8") if isinstance(text, str) else text
    _announce(path, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), file_mode())  # mkstemp makes 0600; a normal file follows the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_temp_dir(beside: str | Path) -> Path:
    """A fresh temp folder next to ``beside`` (same file system, so it can be renamed into place),
    with the umask's mode rather than mkdtemp's 0700."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.", suffix=".tmp", dir=beside.parent))
    os.chmod(tmp, dir_mode())
    return tmp


def save_into(folder: str | Path, save) -> None:
    """``save(tmp)`` writes files (``tokenizer.save_pretrained``…) into a temp folder beside
    ``folder``; each is then renamed into ``folder`` whole, so no file there is ever half-written."""
    folder = Path(folder)
    _announce(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".save.", suffix=".tmp", dir=folder))
    try:
        save(tmp)
        fix_modes(tmp)
        for f in tmp.iterdir():
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _probe_dir(folder: Path, what: str, target: Path) -> None:
    """Create and remove a temp file in ``folder``: the only test that also holds for root,
    read-only mounts and pseudo file systems such as /proc."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tunesmith-probe-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{what} {target}: cannot write into {folder} ({e.strerror or e}); "
                        f"choose another {what}") from None


def _nearest_existing(p: Path) -> Path:
    for q in [p, *p.parents]:
        if q.exists():
            return q
    return Path("/")


def check_writable_file(path: str | Path, what: str = "output") -> Path:
    """Raise UserError (one line) unless ``path`` can be written as a file: not a folder, its folder
    is a folder (or can be made inside one), and that folder takes new files. Writes nothing."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{what} {path} is a folder: name a file")
    base = _nearest_existing(p.absolute().parent)
    if not base.is_dir():
        raise UserError(f"{what} {path}: {base} is a file, not a folder")
    _probe_dir(base, what, p)
    return p


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Raise UserError (one line) unless ``path`` is, or can be made as, a folder we can write in."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{what} {path} is a file: name a folder")
    base = _nearest_existing(p.absolute())
    if not base.is_dir():
        raise UserError(f"{what} {path}: {base} is a file, not a folder")
    _probe_dir(base, what, p)
    return p


def check_out_dir(out: Path, overwrite: bool, inputs: list[Path] = ()) -> None:
    """An export's output folder: not a file, not one of its inputs (or above one), empty unless
    ``overwrite``, and writable — all said before any work."""
    for p in inputs:
        if out == p or out in p.parents:
            raise UserError(f"out {out} would replace the input {p}: choose a new folder")
    if out.is_file():
        raise UserError(f"out {out} is a file: choose a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"out {out} already holds files: choose another folder or set overwrite: true")
    check_writable_dir(out, "out")


def publish_dir(tmp: Path, out: Path) -> None:
    """Rename a finished temp folder into place; an old ``out`` goes only after the new one is in."""
    _announce(out, staged=tmp)
    if out.is_dir():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (symlinks and ``..`` resolved)."""
    try:
        return Path(a).resolve() == Path(b).resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def default_run_dir(name: str) -> str:
    """The one default run folder: ``runs/<recipe name>-<time>`` (the verb's name without a recipe)."""
    import time

    return f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def sha256_file(path: str | Path, into=None, chunk: int = 1 << 22) -> str:
    """The one file hash: sha256 of ``path``'s bytes as ``sha256sum`` prints it; with ``into``
    (a hashlib object) the bytes are fed to it instead, for hashes over several files."""
    import hashlib

    h = into if into is not None else hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_config(cfg, path: str | Path) -> None:
    """The resolved config (a pydantic model) as YAML, next to an output."""
    import yaml

    write_atomic(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


def build_dir_for(out: str | Path) -> Path:
    """The temp folder this process builds ``out`` in before ``publish_dir``: ``.<out>.tmp-<pid>@<host>``
    beside it (not made here). Build folders that earlier runs left for this same ``out`` are removed
    first — a SIGKILLed export leaves one behind — but only folders of exactly that name pattern,
    made on this host, whose process is gone; anything else is not ours and is kept."""
    import re
    import socket

    out = Path(out)
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"
    prefix = f".{out.name}.tmp-"
    if out.parent.is_dir():
        for p in out.parent.iterdir():
            pid, at, made_on = p.name.removeprefix(prefix).partition("@")
            if not (p.name.startswith(prefix) and at and made_on == host and pid.isdigit() and 0 < int(pid) < 2**22
                    and int(pid) != os.getpid() and p.is_dir() and not p.is_symlink()):
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:  # the run that made it is gone: nothing will finish or remove it
                shutil.rmtree(p, ignore_errors=True)
            except OSError:  # alive, another user's process
                pass
    return out.parent / f"{prefix}{os.getpid()}@{host}"
