"""``tunesmith VERB``: each verb is a typed config plus one function; no logic here.

Every config field becomes ``--dotted.name`` with its description and default; bare
arguments are YAML files (``*.yaml``), overrides (``key=value``) or the verb's positional.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ConfigError, UserError
from .registry import GROUPS, VERBS, Verb, invoke, load as _load


def _default_text(info, desc: str) -> str:
    """``(default: X)`` once: left out when the description already says what unset means."""
    if info.is_required():
        return "required"
    if "default" in desc.lower() or "unset" in desc.lower():
        return ""
    value = info.default if info.default_factory is None else info.default_factory()
    return f"default: {value!r}"


def _add_schema_options(parser: argparse.ArgumentParser, schema) -> tuple[set[str], set[str]]:
    """One ``--dotted.name`` per leaf field; returns the boolean flags and the options that take
    one value (what ``_normalize_argv`` needs to know)."""
    from .config import leaf_fields

    flags, takes_value = set(), set()
    for dotted, info in leaf_fields(schema).items():
        desc = (info.description or "").rstrip(".")
        default = _default_text(info, desc)
        kind = str(info.annotation)
        if "list" in kind:  # --adapter A --adapter B (or --adapter A,B)
            tail = f"{default}; repeat or comma-separate" if default else "repeat or comma-separate"
            parser.add_argument(f"--{dotted}", dest=f"opt:{dotted}", default=argparse.SUPPRESS, metavar="V",
                                action="append", help=f"{desc} ({tail})")
            continue
        # A bare boolean flag (``--resume``) means true; ``--resume auto`` / ``--resume false`` also work.
        flag = "bool" in kind
        (flags if flag else takes_value).add(f"--{dotted}")
        parser.add_argument(f"--{dotted}", dest=f"opt:{dotted}", default=argparse.SUPPRESS, metavar="V",
                            nargs="?" if flag else None, const="true" if flag else None,
                            help=f"{desc} ({default})" if default else desc)
    return flags, takes_value


_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0", "auto", "null", "none"}


def _normalize_argv(rest: list[str], flags: set[str], takes_value: set[str]) -> list[str]:
    """CLI habits: ``--batch-size`` = ``--batch_size`` (dashes in option names become underscores),
    and a bare boolean flag never swallows the word after it (``--resume recipe.yaml``)."""
    out, i = [], 0
    while i < len(rest):
        tok = rest[i]
        i += 1
        if tok == "--":
            out += rest[i - 1:]
            break
        if not tok.startswith("--"):
            out.append(tok)
            continue
        name, eq, val = tok[2:].partition("=")
        opt = "--" + name.replace("-", "_")
        if eq:
            out.append(f"{opt}={val}")
        elif opt in flags and (i >= len(rest) or rest[i].lower() not in _BOOL_WORDS):
            out.append(f"{opt}=true")
        else:
            out.append(opt)
            if opt in takes_value and i < len(rest):  # the value is passed on as written
                out.append(rest[i])
                i += 1
    return out


class _VerbParser(argparse.ArgumentParser):
    """argparse's usage errors as one line (a UserError), with the nearest option for a typo."""

    schema = None

    def error(self, message: str):
        if self.schema is not None and "unrecognized arguments:" in message:
            from .config import nearest_key

            bad = message.split("unrecognized arguments:", 1)[1].split()[0]
            key = bad.lstrip("-").partition("=")[0]
            hint = nearest_key(key, self.schema) if bad.startswith("--") else None
            tip = f"; did you mean '--{hint}'?" if hint else ""
            raise ConfigError(f"{self.prog}: unknown option '{bad}'{tip} (see --help)")
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def _top_parser() -> argparse.ArgumentParser:
    """The verb list; schemas are imported only for the verb actually run."""
    from . import __version__

    p = argparse.ArgumentParser(prog="tunesmith", description="Make an open LLM your own: data → synth → train → "
                                "eval → export → use. Every VERB takes YAML files, key=value overrides and --options; "
                                "`tunesmith VERB --help` lists them all.")
    p.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    seen = set()
    for v in VERBS:
        head = v.name.split()[0]
        if head in seen:
            continue
        seen.add(head)
        sub.add_parser(head, help=GROUPS.get(head, "") if " " in v.name else v.help)
    for g, text in GROUPS.items():
        if g not in seen:
            sub.add_parser(g, help=f"{text} (not built yet)")
    return p


def _group_parser(group: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"tunesmith {group}", description=GROUPS.get(group, ""))
    sub = p.add_subparsers(dest="subverb", metavar="SUBVERB")
    for v in VERBS:
        if v.name.startswith(group + " "):
            sub.add_parser(v.name.split()[1], help=v.help)
    return p


def _verb_parser(v: Verb) -> tuple[argparse.ArgumentParser, set[str], set[str]]:
    p = _VerbParser(prog=f"tunesmith {v.name}", description=v.help, allow_abbrev=False)
    p.schema = _load(v.schema)
    pos_help = "YAML config files, key=value overrides" + (f", or the {v.positional}" if v.positional else "")
    p.add_argument("args", nargs="*", help=pos_help)
    flags, takes_value = _add_schema_options(p, _load(v.schema))
    return p, flags, takes_value


def verb_config(verb: Verb, argv: list[str]):
    """``tunesmith VERB ARGV…`` → ``(config, recipe name, foreign translation)``, with every error the
    command line gives (one line, "did you mean"), and nothing run: the CLI and the UI's forms share it."""
    if verb.argv_rewrite:  # another tool's flags (ms-swift's --model_name zh en …)
        argv = _load(verb.argv_rewrite)(argv)
    parser, flags, takes_value = _verb_parser(verb)
    # Intermixed: key=value words, YAML files and --options in any order.
    return _config_of(verb, parser.parse_intermixed_args(_normalize_argv(argv, flags, takes_value)))


def _config_of(verb: Verb, ns: argparse.Namespace):
    from .config import build_config, leaf_fields

    schema = _load(verb.schema)
    yamls, overrides, words = [], {}, []
    for a in ns.args:
        if a.endswith((".yaml", ".yml")) and not verb.yaml_is_data:
            yamls.append(a)
        elif "=" in a and not a.startswith(("/", ".")):
            k, _, val = a.partition("=")
            overrides[k.strip().replace("-", "_")] = val  # train.batch-size=8 as train.batch_size=8
        else:
            words.append(a)
    for key, val in vars(ns).items():
        if key.startswith("opt:"):
            overrides[key[4:]] = ",".join(val) if isinstance(val, list) else val
    values = {}
    if words:
        if not verb.positional:
            raise UserError(f"tunesmith {verb.name}: unexpected argument '{words[0]}' (use key=value or a .yaml file)")
        info = leaf_fields(schema)[verb.positional]
        is_list = "list" in str(info.annotation)
        if not is_list and len(words) > 1:
            raise UserError(f"tunesmith {verb.name}: one {verb.positional} expected, got {' '.join(words)}")
        values[verb.positional] = words if is_list else words[0]
    foreign = None
    if verb.foreign_yaml:  # a config written for another tool (LLaMA-Factory) is translated, then run
        for y in list(yamls):
            foreign = _load(verb.foreign_yaml)(y, verb.name) or foreign
            if foreign is not None and foreign.source == y:
                yamls.remove(y)
                values = {**foreign.values, **values}
    cfg = build_config(schema, yamls, overrides, values)
    return cfg, Path(yamls[-1]).stem if yamls else None, foreign


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    by_name = {v.name: v for v in VERBS}
    verb = None
    if argv and argv[0] in by_name:
        verb, rest = by_name[argv[0]], argv[1:]
    elif len(argv) >= 2 and f"{argv[0]} {argv[1]}" in by_name:
        verb, rest = by_name[f"{argv[0]} {argv[1]}"], argv[2:]
    elif argv and any(v.name.startswith(argv[0] + " ") for v in VERBS):
        _group_parser(argv[0]).parse_args(argv[1:])  # prints help or the error for an unknown subverb
        _group_parser(argv[0]).print_help()
        return 2
    elif argv and argv[0] in GROUPS:
        print(f"tunesmith {argv[0]}: not built yet in this version", file=sys.stderr)
        return 2
    if verb is None:
        ns = _top_parser().parse_args(argv)  # --help / --version / unknown verb end here
        _top_parser().print_help()
        return 2
    try:
        cfg, recipe, foreign = verb_config(verb, rest)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # per-load "Loading weights" bars drown the CLI's own output
        if foreign is not None:
            return int(_load(verb.run_foreign)(foreign, cfg, verb) or 0)
        return invoke(verb, cfg, recipe)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
