"""LLaMA-Factory's ``dataset_info.json``: a folder's named datasets, read unedited.

Read: ``file_name`` (a file or folder next to dataset_info.json), ``formatting`` (alpaca,
sharegpt; openai as messages), ``ranking``, ``columns``, ``tags``, ``split`` and
``num_samples`` (which becomes ``samples``). Entries tunesmith does not train on are named,
never misread: hub-only entries (hf_hub_url, ms_hub_url… without file_name: nothing is
downloaded), KTO (a ``kto_tag`` column) and multimodal ones (images/videos/audios columns).
Also here: a LLaMA-Factory train YAML's ``dataset``/``dataset_dir`` as tunesmith datasets, the one
mapping that ``tunesmith train lf.yaml`` (compat.lf) and ``tunesmith data check lf.yaml`` share.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path

from pydantic import ValidationError

from ..errors import UserError
from .config import TAGS, DatasetConfig
from .formats import KTO_MESSAGE, MEDIA_FIELDS
from .readers import shown
from .types import Unsupported

HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
FORMATTING = {"alpaca": "alpaca", "sharegpt": "sharegpt", "openai": "messages"}


def read_registry(folder: Path, dataset: str | None = None) -> dict[str, dict]:
    """The parsed dataset_info.json of ``folder``. Raises UserError (naming ``dataset``)."""
    path = folder / "dataset_info.json"
    if not path.is_file():
        what = f"dataset '{dataset}': " if dataset else ""
        raise UserError(f"{what}{shown(folder)}: no dataset_info.json in this folder")
    try:
        info = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise UserError(f"{shown(path)}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{shown(path)}:{e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(info, dict) or not all(isinstance(v, dict) for v in info.values()):
        raise UserError(f"{shown(path)}: expected an object of dataset names to descriptions")
    return info


def hub_source(entry: dict) -> str | None:
    """The hub key (hf_hub_url, ms_hub_url …) of an entry without a local file_name, else None."""
    if entry.get("file_name"):
        return None
    return next((k for k in HUB_KEYS if entry.get(k)), None)


def refuse_hub_only(folder: Path, name: str, info: dict | None = None) -> None:
    """Raise Unsupported (one line) when ``name`` is a hub-only entry of ``folder``'s dataset_info.json."""
    entry = (read_registry(folder, name) if info is None else info).get(name)
    hub = hub_source(entry) if isinstance(entry, dict) else None
    if hub:
        raise Unsupported(f"dataset '{name}' in {shown(folder / 'dataset_info.json')}: hub-only dataset ({hub}: "
                          f"{entry[hub]}); tunesmith reads local files only: download it next to dataset_info.json "
                          "and set file_name")


def registry_names(folder: Path) -> list[str]:
    """The datasets of ``folder``'s dataset_info.json that can be read offline: hub-only entries
    (``hub_only_names``) are left out, as a whole folder names them only by being LLaMA-Factory's."""
    return [n for n, e in read_registry(folder).items() if not hub_source(e)]


def hub_only_names(folder: Path) -> dict[str, str]:
    """Hub-only datasets of ``folder``'s dataset_info.json: name → its hub key."""
    return {n: hub for n, e in read_registry(folder).items() if (hub := hub_source(e))}


def from_registry(folder: Path, name: str) -> DatasetConfig:
    """The DatasetConfig for ``name`` in ``folder``/dataset_info.json. Raises UserError."""
    info = read_registry(folder, name)
    where = shown(folder / "dataset_info.json")
    if name not in info:
        near = difflib.get_close_matches(name, list(info), n=1)
        tip = f"; did you mean '{near[0]}'?" if near else f" (it has: {', '.join(info) or 'nothing'})"
        raise UserError(f"dataset '{name}' is not in {where}{tip}")
    entry = info[name]
    file_name = entry.get("file_name")
    if not file_name:
        refuse_hub_only(folder, name, info)
        raise UserError(f"dataset '{name}' in {where} has no file_name")
    columns = dict(entry.get("columns") or {})
    if columns.get("kto_tag"):
        raise Unsupported(f"dataset '{name}' in {where}: {KTO_MESSAGE}")
    media = [k for k in MEDIA_FIELDS if columns.get(k)]
    if media:
        raise Unsupported(f"dataset '{name}' in {where}: multimodal data ({', '.join(media)}) is not supported: "
                          "tunesmith trains text only")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTING:
        raise UserError(f"dataset '{name}' in {where}: formatting '{formatting}' is not one of "
                        f"{', '.join(FORMATTING)}")
    fmt = FORMATTING[formatting]
    tags = {k: v for k, v in (entry.get("tags") or {}).items() if k in TAGS and v}
    if formatting == "openai":
        tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                "observation_tag": "tool", **tags}
    if entry.get("ranking"):
        if fmt != "alpaca":  # the prompt is a message list
            columns.setdefault("messages", "conversations" if fmt == "sharegpt" else "messages")
        fmt = "preference"
    try:
        return DatasetConfig(path=str(folder / file_name), name=name, format=fmt, columns=columns,
                             tags=tags or None, samples=entry.get("num_samples"), split=entry.get("split", "train"))
    except ValidationError as e:
        err = e.errors()[0]
        raise UserError(f"dataset '{name}' in {where}: {err['msg'].removeprefix('Value error, ')}") from None


def lf_names(value) -> list[str]:
    """LLaMA-Factory's comma lists ("identity,alpaca_en_demo"); a YAML list is accepted too. Raises ValueError."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else None
    if items is None or not all(isinstance(x, str) for x in items):
        raise ValueError("must be a comma-separated list of names")
    out = [x.strip() for x in items if x.strip()]
    if not out:
        raise ValueError("must name at least one item")
    return out


def is_lf_train(raw: dict) -> bool:
    """A LLaMA-Factory train YAML: its datasets under ``dataset``, no tunesmith ``data:`` section."""
    return "dataset" in raw and "data" not in raw


def lf_datasets(raw: dict) -> list[dict]:
    """A LLaMA-Factory train YAML's ``dataset`` as data.datasets entries: one ``{dataset_info:
    dataset_dir, name}`` per name, with ``max_samples`` and, for ``stage: pt`` (continued
    pre-training: loss on every token), ``format: text``. Raises ValueError."""
    folder = raw.get("dataset_dir", "data")  # LLaMA-Factory's default, relative to the current folder
    if not isinstance(folder, str) or not folder.strip():
        raise ValueError("dataset_dir must be a folder name")
    extra: dict = {}
    cap = raw.get("max_samples")
    if cap is not None:
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap != int(cap) or cap <= 0:
            raise ValueError("max_samples must be a whole number above 0")
        extra["max_samples"] = int(cap)
    if raw.get("stage") == "pt":
        extra["format"] = "text"
    return [{"dataset_info": folder, "name": n, **extra} for n in lf_names(raw.get("dataset"))]
