"""Which base an adapter was trained on, read from the manifests that stages leave behind.

A folder's *lineage* is its root base plus the adapters folded into it, in order:
``[(hash, label), ...]``. A plain model folder is ``[(model_hash, path)]``; a folder made by
``export merge`` expands to its base's lineage plus the adapters it lists. Two lineages
match when their hashes match, so ``base + A`` merged into ``m1`` and then trained on
(adapter ``B``) is accepted as ``--model base --adapter A,B`` and as ``--model m1 --adapter B``.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from ..errors import UserError
from ..manifest import model_hash, read_manifest

Lineage = list[tuple[str, str]]  # (hash, label for messages) from the root base onwards

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_hash(adapter: str | Path) -> str:
    """sha256 over an adapter's weights and config, leaving out the base path it names:
    the same adapter copied elsewhere, or pointing at a moved base, keeps its hash."""
    from ..fsutil import sha256_file

    adapter = Path(adapter)
    cfg = json.loads(adapter.joinpath("adapter_config.json").read_text())
    for k in ("base_model_name_or_path", "revision"):
        cfg.pop(k, None)
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    for name in ADAPTER_WEIGHTS:
        if adapter.joinpath(name).is_file():
            h.update(name.encode())
            h.update(sha256_file(adapter / name).encode())
    return h.hexdigest()


def lineage(folder: Path | None, claimed_hash: str | None = None, _depth: int = 0) -> Lineage | None:
    """The lineage of a model folder; ``claimed_hash`` is the hash a manifest recorded for it.

    A folder that is gone (or was changed since the hash was recorded) can't be expanded,
    so it stands for itself by its recorded hash. ``None`` when nothing at all is known."""
    if folder is not None and folder.joinpath("config.json").is_file() and _depth < 32:
        h = model_hash(folder)
        if claimed_hash and h != claimed_hash:
            return [(claimed_hash, f"{folder} as it was (hash {claimed_hash[:10]}…)")]
        m = read_manifest(folder)
        if m and m.get("kind") == "merge" and m.get("output_hash") == h and isinstance(m.get("base_model"), dict):
            b = m["base_model"]
            root = lineage(Path(b["path"]) if b.get("path") else None, b.get("hash"), _depth + 1)
            adapters = m.get("adapters") or []
            if root is not None and all(a.get("hash") for a in adapters):
                return root + [(a["hash"], str(a.get("path"))) for a in adapters]
        return [(h, str(folder))]
    if claimed_hash:
        return [(claimed_hash, f"{folder or 'a model'} (hash {claimed_hash[:10]}…, no longer on disk)")]
    return None


def describe(lin: Lineage) -> str:
    return " + ".join(label for _, label in lin)


def claimed_base(adapter: Path) -> tuple[Lineage | None, str | None]:
    """What the adapter says it was trained on: its run manifest when there is one (path and
    hash), else the local folder named in adapter_config.json. Also returns that name/path."""
    m = read_manifest(adapter)
    base = m.get("base_model") if isinstance(m, dict) else None
    if isinstance(base, dict) and base.get("hash"):
        path = Path(base["path"]) if base.get("path") else None
        return lineage(path, base["hash"]), base.get("path") or base.get("spec")
    cfg = json.loads(adapter.joinpath("adapter_config.json").read_text())
    name = cfg.get("base_model_name_or_path")
    if name and Path(name).expanduser().joinpath("config.json").is_file():
        return lineage(Path(name).expanduser()), name
    return None, name


def check_lineage(model_dir: Path, model_spec: str, adapters: list[Path], action: str = "merged into",
                  skip_hint: str = " (check_base: false skips this check)", notes: list[str] | None = None) -> None:
    """Raise UserError when an adapter was trained on something other than the model it is about
    to be merged into or applied to (the base for the first adapter, base + the adapters before it after that).

    An adapter that records no base we can hash (no manifest, and a hub id rather than a folder in
    adapter_config.json) gets a note (printed, or added to ``notes`` for the caller to print once the
    load went through, so a failing load is still one line); the shape check is all that is left."""
    def note(text: str) -> None:
        if notes is None:
            print(f"note: {text}", file=sys.stderr)
        else:
            notes.append(text)

    expected = lineage(Path(model_dir))
    assert expected is not None  # model_dir was resolved, so it has config.json
    for a in adapters:
        m = read_manifest(a)
        if isinstance(m, dict) and m.get("status") not in (None, "done"):
            note(f"adapter {a}: its run's status is '{m.get('status')}', not 'done'")
        actual, name = claimed_base(a)
        if actual is None:
            if name != model_spec:
                note(f"adapter {a} records no base to check (base_model_name_or_path: {name!r}); "
                     "only the shapes are checked")
        elif [h for h, _ in actual] != [h for h, _ in expected]:
            if name and Path(name).is_dir():
                hint = f"pass --model {name}" + (" or list the adapters it was merged from, in order"
                                                 if len(actual) > 1 else "")
            else:
                hint = "merge it into the model it was trained on"
            raise UserError(f"adapter {a} was trained on {describe(actual)}, but would be {action} "
                            f"{describe(expected)}: {hint}{skip_hint}")
        expected = expected + [(adapter_hash(a), str(a))]
