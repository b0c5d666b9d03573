"""Forms from the verb registry: each verb's pydantic JSON schema flattened to the CLI's dotted fields, and a
filled form turned into the very argv the CLI takes — validated by the CLI's own path (``cli.verb_config``),
so a form gets the command line's one-line messages, "did you mean" included."""
from __future__ import annotations

import json
import re
import shlex
from typing import Any

import yaml

from ..errors import UserError
from ..registry import GROUPS, VERBS, Verb, by_name

HIDDEN = {"ui"}  # the app itself is no form


def verb(name: str) -> Verb:
    v = by_name(name)
    if v is None or v.name in HIDDEN:
        raise UserError(f"unknown verb '{name}'")
    return v


def _resolve(node: dict, defs: dict) -> dict:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node


def _section(prop: dict, defs: dict) -> dict | None:
    """The object schema a field nests (``X`` or ``X | None`` of a section), else None: the CLI's leaf rule."""
    for cand in [prop, *prop.get("anyOf", [])]:
        node = _resolve(cand, defs)
        if node.get("type") == "object" and "properties" in node:
            return node
    return None


def _kind(prop: dict, defs: dict) -> tuple[str, list]:
    """How a field is edited: bool, int, number, string, choice (with its choices), multi (several of its choices),
    list (of words) or yaml."""
    opts = [_resolve(o, defs) for o in prop.get("anyOf", [prop])]
    opts = [o for o in opts if o.get("type") != "null"]
    choices: list = []
    for o in opts:
        choices += o.get("enum", []) + ([o["const"]] if "const" in o else [])
    types = {o.get("type") for o in opts}
    if choices:
        return "choice", [*choices, *(["true", "false"] if "boolean" in types else [])]
    if types == {"boolean"}:
        return "bool", []
    if types <= {"integer"}:
        return "int", []
    if types <= {"number", "integer"}:
        return "number", []
    if types == {"array"}:
        items = _resolve(opts[0].get("items", {}), defs)
        if items.get("enum"):  # a list of fixed words (export gguf's quant types): several picked
            return "multi", list(items["enum"])
        inner = {_resolve(i, defs).get("type") for i in items.get("anyOf", [items])}
        return ("list", []) if inner <= {"string", "integer", "number"} else ("yaml", [])
    if types <= {"string"}:
        return "string", []
    return "yaml", []


def _default(info) -> Any:
    """A leaf's default as JSON (a default_factory called: the JSON schema leaves those out)."""
    if info is None or info.is_required():
        return None
    return json.loads(json.dumps(info.get_default(call_default_factory=True), default=str))


def fields(schema) -> list[dict]:
    """Every leaf field as the CLI names it (``train.lr``), with its kind, default, help and whether required."""
    from ..config import leaf_fields

    leaves = leaf_fields(schema)
    js = schema.model_json_schema()
    defs = js.get("$defs", {})
    out: list[dict] = []

    def walk(node: dict, prefix: str) -> None:
        required = set(node.get("required", []))
        for name, prop in node.get("properties", {}).items():
            sub = _section(prop, defs)
            if sub is not None:
                walk(sub, f"{prefix}{name}.")
                continue
            kind, choices = _kind(prop, defs)
            default = _default(leaves.get(prefix + name))
            if kind == "bool" and default is None:  # unset means "decide for me": a checkbox can't say that
                kind, choices = "choice", ["true", "false"]
            out.append({"key": prefix + name, "kind": kind, "choices": choices, "default": default,
                        "help": prop.get("description", ""), "required": name in required,
                        "section": prefix[:-1]})

    walk(js, "")
    return out


def catalog() -> list[dict]:
    """Every verb the UI offers, with its form."""
    out = []
    for v in VERBS:
        if v.name in HIDDEN:
            continue
        group = v.name.split()[0] if " " in v.name else ""
        out.append({"name": v.name, "help": v.help, "group": group, "group_help": GROUPS.get(group, ""),
                    "consumes": list(v.consumes), "produces": list(v.produces), "output_field": v.output_field,
                    "writes": [w.field for w in v.writes], "fields": fields(v.load_schema())})
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        if isinstance(value, list) and all(isinstance(x, (str, int, float)) and not isinstance(x, bool)
                                           and "," not in str(x) for x in value):
            return ",".join(str(x) for x in value)
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def argv_of(values: dict[str, Any]) -> list[str]:
    """A filled form (``{"train.lr": "2e-4", …}``, only what differs from the defaults) as ``key=value`` words."""
    out = []
    for key, value in values.items():
        if not re.fullmatch(r"[A-Za-z_][\w.\-]*", str(key)):
            raise UserError(f"unknown config key '{key}'")
        if value is None or (isinstance(value, str) and value.strip() == ""):
            continue
        out.append(f"{key}={_text(value)}")
    return out


def command(v: Verb, argv: list[str]) -> str:
    return " ".join(["tunesmith", *v.name.split(), *(shlex.quote(a) for a in argv)])


def field_of(message: str, keys: list[str]) -> str | None:
    """The form field an error names (``config: train.lr: …``, ``unknown config key 'lora.rr'``), if any."""
    for pat in (r"config(?: in [^:]+)?: ([\w.\[\]]+): ", r"unknown config key '([^']+)'", r"'--([\w.]+)'",
                r"^([\w.]+)[ :]", r"did you mean '-*([\w.]+)'"):
        m = re.search(pat, message)
        if not m:
            continue
        loc = m.group(1)
        hits = [k for k in keys if loc == k or loc.startswith(k + ".") or loc.startswith(k + "[")]
        if hits:
            return max(hits, key=len)
    return None


def check(name: str, values: dict[str, Any]) -> dict:
    """Validate a form exactly as the CLI would; returns the config, its argv, CLI line and YAML.
    Raises UserError with the CLI's message (``.field`` set to the field it names, when one)."""
    from ..cli import verb_config

    v = verb(name)
    argv = argv_of(values)
    try:
        cfg, _, _ = verb_config(v, argv)
    except UserError as e:
        e.field = field_of(str(e), [f["key"] for f in fields(v.load_schema())])
        raise
    data = cfg.model_dump(mode="json", exclude_unset=True)
    return {"cfg": cfg, "argv": argv, "cli": command(v, argv),
            "yaml": yaml.safe_dump(data, sort_keys=False, allow_unicode=True)}


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """A nested recipe as the form's dotted values."""
    out: dict[str, Any] = {}
    for k, val in data.items():
        if isinstance(val, dict) and val and all(isinstance(x, str) for x in val) and not k.endswith("adapters"):
            out.update(flatten(val, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = val
    return out


def load_yaml(name: str, path: str) -> dict:
    """A recipe YAML (or a LLaMA-Factory YAML, translated) as form values for ``name``."""
    from ..config import read_yaml

    v = verb(name)
    if v.foreign_yaml:
        from ..registry import load

        tr = load(v.foreign_yaml)(path, v.name)
        if tr is not None:
            return {"values": dict(tr.values), "translation": tr.render(), "recipe": tr.recipe()}
    data = read_yaml(path)
    return {"values": {k: _text(x) if isinstance(x, (list, dict, bool)) else x for k, x in flatten(data).items()},
            "translation": None, "recipe": data}
