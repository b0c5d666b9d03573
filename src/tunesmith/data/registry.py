"""LLaMA-Factory's ``dataset_info.json``: a folder's named datasets, read unedited.

Read: ``file_name`` (a file or folder next to dataset_info.json), ``formatting`` (alpaca,
sharegpt; openai as messages), ``ranking``, ``columns``, ``tags``, ``split`` and
``num_samples`` (which becomes ``samples``). Entries tunesmith does not train on are named,
never misread: hub-only entries (hf_hub_url, ms_hub_url… without file_name: nothing is
downloaded), KTO (a ``kto_tag`` column) and multimodal ones (images/videos/audios columns).
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


def registry_names(folder: Path) -> list[str]:
    return list(read_registry(folder))


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
        hub = next((k for k in HUB_KEYS if entry.get(k)), None)
        if hub:
            raise Unsupported(f"dataset '{name}' in {where}: hub-only dataset ({hub}: {entry[hub]}); tunesmith reads "
                              "local files only: download it next to dataset_info.json and set file_name")
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
