"""Typed configs: the pydantic schema is the YAML schema and the CLI.

Sources, last wins: schema defaults → YAML files → CLI overrides (``lora.r=32`` or
``--lora.r 32``). Unknown keys are a ``ConfigError`` naming the nearest valid key.
"""
from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError


class Section(BaseModel):
    """Base for every config block: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class Replaceable(Section):
    """What every verb that writes an output of its own takes (the output policy: tunesmith.outputs)."""

    overwrite: bool = Field(False, description="replace what an earlier tunesmith run wrote at the output (a file "
                                               "or folder tunesmith did not write is never replaced)")


def _check_device(v: str | None) -> str | None:
    if v is None:
        return v
    v = v.strip()
    kind, _, index = v.partition(":")
    if v in ("cpu", "cuda", "mps", "auto") or (kind == "cuda" and index.isdigit()):
        return v
    raise ValueError(f"'{v}' is not a device: choose cpu, cuda, cuda:N (e.g. cuda:1), mps or auto")


# Every config's ``device`` field: checked when the config is read, before anything loads.
Device = Annotated[str | None, AfterValidator(_check_device)]

# The embedded default model (models/resolve.py knows how to import it).
DEFAULT_MODEL = "smollm2-135m-instruct"

DTYPES = ("bf16", "bfloat16", "fp16", "float16", "fp32", "float32", "auto")


def _check_dtype(v: str | None) -> str | None:
    if v is None or v in DTYPES:
        return v
    raise ValueError(f"'{v}' is not a dtype: choose bf16, fp16, fp32 or auto")


Dtype = Annotated[str | None, AfterValidator(_check_dtype)]


def _check_env_name(v: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
        raise ValueError("api_key_env takes the NAME of an environment variable (e.g. TUNESMITH_API_KEY), "
                         "not the key itself")
    return v


# A field naming the environment variable that holds a key (serve's and the UI's api_key_env): keys
# never go in files or argv.
EnvName = Annotated[str, AfterValidator(_check_env_name)]


class ModelSection(Section):
    """The one model section: every verb that loads a model takes these fields, validated here.
    (Verbs may narrow a field — e.g. ``eval`` makes ``model`` required — but never rename it.)"""

    model: str = Field(DEFAULT_MODEL, description="model: built-in alias, HF folder, .gguf file, "
                                                           "hub id, run folder or merged folder")
    dtype: Dtype = Field(None, description="bf16, fp16, fp32 or auto (default: bf16 on CUDA, fp32 on CPU)")
    device: Device = Field(None, description="cpu, cuda, cuda:N, mps or auto (default: cuda if present)")
    trust_remote_code: bool = Field(False, description="run model code shipped with the model folder (only for "
                                                       "models you trust)")


class AdaptedModelSection(ModelSection):
    """A model plus LoRA adapters applied in order (chat, predict, eval, serve, export)."""

    adapter: list[str] = Field(default_factory=list, description="PEFT adapter / run folder(s) applied in order")


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside ``X``, ``X | None`` or ``Optional[X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (typing.Union, types.UnionType):
        for a in get_args(annotation):
            sub = _submodel(a)
            if sub is not None:
                return sub
    return None


def leaf_fields(schema: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every leaf field as ``{"dotted.name": FieldInfo}`` (nested sections flattened)."""
    out: dict[str, Any] = {}
    for name, info in schema.model_fields.items():
        sub = _submodel(info.annotation)
        if sub is not None:
            out.update(leaf_fields(sub, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = info
    return out


def _all_keys(schema: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in schema.model_fields.items():
        keys.append(prefix + name)
        sub = _submodel(info.annotation)
        if sub is not None:
            keys += _all_keys(sub, f"{prefix}{name}.")
    return keys


def nearest_key(key: str, schema: type[BaseModel]) -> str | None:
    """The valid key a typo most likely meant: same last part elsewhere (``lr`` → ``train.lr``),
    else the closest dotted key, else the closest last part."""
    candidates = _all_keys(schema)
    tail = key.rsplit(".", 1)[-1]
    same_tail = [k for k in candidates if k.rsplit(".", 1)[-1] == tail and k != key]
    if same_tail:
        return same_tail[0]
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if match:
        return match[0]
    last = {k.rsplit(".", 1)[-1]: k for k in candidates}
    m2 = difflib.get_close_matches(tail, list(last), n=1, cutoff=0.6)
    return last[m2[0]] if m2 else None


def _check_keys(data: dict, schema: type[BaseModel], root: type[BaseModel], where: str, prefix: str = ""):
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        info = schema.model_fields.get(key)
        if info is None:
            hint = nearest_key(dotted, root)
            tip = f"; did you mean '{hint}'?" if hint else ""
            raise ConfigError(f"unknown config key '{dotted}'{where}{tip}")
        sub = _submodel(info.annotation)
        if sub is not None and isinstance(value, dict):
            _check_keys(value, sub, root, where, dotted + ".")


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def _parse_value(raw: str, info: Any) -> Any:
    """CLI strings → Python values. Strings stay strings (so ``name=123`` is a name);
    lists take ``a,b`` or YAML ``[a, b]``; everything else is parsed as YAML."""
    ann = info.annotation if info is not None else None
    options = get_args(ann) if get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
    if any(get_origin(a) is list for a in options):
        if raw.strip().startswith("["):
            return yaml.safe_load(raw)
        return [s.strip() for s in raw.split(",") if s.strip()]
    if str in options:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}{at}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config file must be a mapping of keys to values")
    return data


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def build_config(schema: type[BaseModel], yaml_files: list[str] = (), overrides: dict[str, str] | None = None,
                 values: dict[str, Any] | None = None):
    """Resolve a config: defaults → each YAML file → ``values`` (already typed) → ``overrides``
    (``{"lora.r": "32"}``, strings from the command line). Raises ConfigError."""
    data: dict = {}
    for f in yaml_files:
        y = read_yaml(f)
        _check_keys(y, schema, schema, f" in {f}")
        data = _merge(data, y)
    leaves = leaf_fields(schema)
    for dotted, value in (values or {}).items():
        _set_dotted(data, dotted, value)
    for dotted, raw in (overrides or {}).items():
        _check_keys(_nest(dotted), schema, schema, "")
        _set_dotted(data, dotted, _parse_value(raw, leaves.get(dotted)))
    return validate(schema, data)


def validate(schema: type[BaseModel], data: dict, where: str = ""):
    """A nested dict (e.g. one stage of a pipeline YAML) → a config, with the same
    unknown-key and value errors as ``build_config``."""
    _check_keys(data, schema, schema, where)
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        errs = e.errors()
        err = errs[0]
        # A union field (``bool | "auto"``) reports one error per member, each with the member's
        # type as the last part of its location: name the field and every accepted form instead.
        union = [x for x in errs if x["loc"][:-1] == err["loc"][:-1] and x["input"] is err["input"]]
        if len(union) > 1 and len(err["loc"]) > 1:
            loc = ".".join(str(x) for x in err["loc"][:-1])
            msg = f"{err['input']!r} is not valid: " + "; or ".join(x["msg"] for x in union)
        else:
            loc, msg = ".".join(str(x) for x in err["loc"]) or "config", err["msg"]
        raise ConfigError(f"config{where}: {loc}: {msg}") from None


def _nest(dotted: str) -> dict:
    d: dict = {}
    _set_dotted(d, dotted, None)
    return d
