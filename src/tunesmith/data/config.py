"""The ``data:`` section of a recipe: which datasets, how to mix them, how to render them."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..config import Section

Format = Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion", "preference", "text"]

# LLaMA-Factory's column names (the vocabulary of ``columns``), and the ones we refuse.
COLUMNS = ("prompt", "query", "response", "history", "messages", "system", "tools", "chosen", "rejected")
UNSUPPORTED_COLUMNS = {"images": "images", "videos": "videos", "audios": "audio", "kto_tag": "KTO labels"}
TAGS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag",
        "tool_calls_tag", "reasoning_tag")


def _unknown(key: str, known: tuple[str, ...], what: str) -> str:
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    tip = f"; did you mean '{near[0]}'?" if near else f" (known: {', '.join(known)})"
    return f"unknown {what} '{key}'{tip}"


class DatasetConfig(Section):
    """One source of rows: a file or folder, or a dataset named in a LLaMA-Factory registry."""

    path: str | None = Field(None, description="data file (.json/.jsonl/.csv/.parquet) or folder of them; "
                                               "relative to the current folder; a .txt file is plain text, one document "
                                               "per line")
    dataset_info: str | None = Field(None, description="folder holding a LLaMA-Factory dataset_info.json "
                                                       "(default: data.dataset_dir)")
    name: str | None = Field(None, description="dataset name inside dataset_info.json (also the report's label)")
    format: Format = Field("auto", description="row format; auto detects it from the fields of the first row; "
                                               "text = plain documents for continued pretraining")
    columns: dict[str, str | None] | None = Field(
        None, description="LLaMA-Factory column mapping, e.g. {prompt: question, response: answer}")
    tags: dict[str, str] | None = Field(None, description="sharegpt role tags, e.g. {role_tag: role, user_tag: user}")
    samples: int | None = Field(None, gt=0, description="training rows to take from this source: whole repetitions "
                                                        "plus a seeded random remainder")
    ratio: float | None = Field(None, gt=0, description="take round(ratio × rows) rows: 0.5 = a random half, "
                                                        "2 = every row twice")
    max_samples: int | None = Field(None, gt=0, description="read only the first N rows of this dataset "
                                                            "(LLaMA-Factory's max_samples), before samples/ratio")
    split: str = Field("train", description="LLaMA-Factory split; local files only have 'train'")

    @field_validator("columns")
    @classmethod
    def _columns(cls, v):
        if v is None:
            return None
        for key in v:
            if key in UNSUPPORTED_COLUMNS:
                raise ValueError(f"columns.{key}: {UNSUPPORTED_COLUMNS[key]} are not supported (text only)")
            if key not in COLUMNS:
                raise ValueError(_unknown(key, COLUMNS, "column role"))
        # LLaMA-Factory users write "history": "" to mean "not mapped".
        return {k: c for k, c in v.items() if c}

    @field_validator("tags")
    @classmethod
    def _tags(cls, v):
        for key in v or {}:
            if key not in TAGS:
                raise ValueError(_unknown(key, TAGS, "tag"))
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if self.samples is not None and self.ratio is not None:
            raise ValueError("set samples or ratio, not both")
        if self.path and self.dataset_info:
            raise ValueError("set path or dataset_info, not both")
        if not self.path and not self.dataset_info and not self.name:
            raise ValueError("a dataset needs path, or name (looked up in its dataset_info or in data.dataset_dir)")
        if self.dataset_info and not self.name:
            raise ValueError("dataset_info needs the dataset's name")
        return self

    def label(self) -> str:
        """How reports and errors name this dataset."""
        if self.name:
            return self.name
        return Path(self.path or "").stem or str(self.path)


FORMS = ("--data.datasets a.jsonl,b.jsonl (or --data.path a.jsonl), or in YAML "
         "datasets: [{path: a.jsonl}, {path: b.jsonl, format: alpaca}]")


def _as_paths(value, key: str) -> list[dict]:
    if not isinstance(value, str):
        raise PydanticCustomError("datasets", "data.{key} expects a file name or a comma list of them: {forms}",
                                  {"key": key, "forms": FORMS})
    return [{"path": p.strip()} for p in value.split(",") if p.strip()]


class DataConfig(Section):
    """Datasets, their mix, the validation split and how rows are rendered for training."""

    datasets: list[DatasetConfig] = Field(default_factory=list, description=f"the sources to mix: {FORMS}")
    path: str | None = Field(None, description="shorthand: data file(s) to train on, a.jsonl or a.jsonl,b.jsonl "
                                               "(each becomes one entry of data.datasets)")
    val_size: float = Field(0.0, ge=0, description="validation rows: below 1 a fraction, from 1 a count")
    seed: int = Field(42, description="seed for sampling, the validation split and the shuffle")
    cutoff_len: int = Field(1024, gt=0, description="tokens per row; longer rows are cut from the end")
    mask_history: bool = Field(False, description="train only the last assistant turn of each row")
    template: str | None = Field(None, description="chat template: a fallback for base models that have none "
                                                   "(chatml, alpaca), or one that replaces the model's own and "
                                                   "is saved with the run (qwen3: ChatML with the thinking switch; "
                                                   "or a .jinja file)")
    drop_bad_rows: bool = Field(False, description="skip rows that fail the check instead of stopping")
    dedupe: bool = Field(False, description="drop exact duplicate rows (the first copy is kept); without it they "
                                            "are trained on, with a warning")
    dataset_dir: str | None = Field(None, description="folder holding a LLaMA-Factory dataset_info.json: a dataset "
                                                      "given only name: is looked up there (relative to the "
                                                      "current folder)")
    num_workers: int = Field(1, ge=1, description="processes that render rows in parallel")

    @field_validator("datasets", mode="before")
    @classmethod
    def _datasets(cls, v):
        """``a.jsonl,b.jsonl`` (a string, or a list of file names: the command line's form) is
        shorthand for ``[{path: a.jsonl}, {path: b.jsonl}]``."""
        if isinstance(v, str):
            return _as_paths(v, "datasets")
        if not isinstance(v, list):
            raise PydanticCustomError("datasets", "expects a list of datasets, not {kind}: {forms}",
                                      {"kind": type(v).__name__, "forms": FORMS})
        for i, d in enumerate(v):
            if not isinstance(d, (str, dict, DatasetConfig)):
                raise PydanticCustomError("datasets", "item {i} ({item}) is not a dataset: {forms}",
                                          {"i": i, "item": repr(d), "forms": FORMS})
        return [{"path": d.strip()} if isinstance(d, str) else d for d in v]

    @model_validator(mode="before")
    @classmethod
    def _path(cls, data):
        """``path: a.jsonl`` (or a comma list) is put first in ``datasets``."""
        if isinstance(data, dict) and data.get("path") is not None:
            data = dict(data)
            data["datasets"] = _as_paths(data.pop("path"), "path") + cls._datasets(data.get("datasets", []))
        return data

    @field_validator("template")
    @classmethod
    def _template(cls, v):
        from ..models.template import check_template_name

        return None if v is None else check_template_name(v)

    @field_validator("val_size")
    @classmethod
    def _val_size(cls, v):
        if v >= 1 and v != int(v):
            raise ValueError("val_size from 1 up is a row count, so it must be a whole number")
        return v
