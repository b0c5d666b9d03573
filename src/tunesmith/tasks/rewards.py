"""Rewards: ``reward(completion, row, **options) -> float | None``, named for a recipe.

``row`` is a prompt row as the GRPO objective keeps it: ``prompt`` (the last user message),
``system``, ``expect`` (the dataset's answer, when it has one) and ``think`` (whether the prompt
asked for a think block, from the recipe's thinking switch). A reward returns a value in [0, 1],
or None where it does not apply to the row (a multiply reward on a prompt that is no
multiplication): such a value is left out of the reward's mean and of the sum, as TRL does with a
reward function's None.

- ``multiply`` / ``add``: half for the exact final result, half for the share of steps that hold
  (the step checker's first wrong line); ``step_weight`` moves that split (0: the exact result alone);
- ``label``: the normalised answer equals the row's expected label;
- ``format``: a ``<think>…</think>`` block opens the answer, followed by an answer, exactly when
  the prompt asked for thinking; no ``<think>`` anywhere when it did not;
- ``identity``: the answer names one of ``names`` exactly where the row's expected answer does
  (asked who it is: it must; asked anything else: it must not);
- ``length``: 1 up to ``max_chars`` characters, falling linearly to 0 at twice that;
- ``prefix``: the answer starts with ``text`` (a fixed output format).
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from functools import partial

from . import add, multiply
from .answers import THINK_OPEN, mentions, normalise, split_think

SOFT_SWITCH = re.compile(r"/(no_think|think)\b")


def think_asked(row: dict) -> bool:
    """Whether the prompt asks for a think block: the last ``/think`` or ``/no_think`` soft switch in
    the system prompt or the user message (Qwen3's convention), else the row's ``think``."""
    found = SOFT_SWITCH.findall(f"{row.get('system') or ''}\n{row.get('prompt') or ''}")
    if found:
        return found[-1] == "think"
    return bool(row.get("think"))


def label(completion: str, row: dict) -> float | None:
    expect = row.get("expect")
    if expect is None:
        return None
    return float(normalise(split_think(completion)[1]) == normalise(expect))


def format_(completion: str, row: dict) -> float:
    reasoning, answer = split_think(completion)
    if think_asked(row):
        return float(reasoning is not None and bool(answer))
    return float(THINK_OPEN not in completion)


def identity(completion: str, row: dict, names: list[str]) -> float:
    must = mentions(row.get("expect") or "", names)
    return float(mentions(split_think(completion)[1], names) == must)


def length(completion: str, row: dict, max_chars: int) -> float:
    over = len(completion) - max_chars
    return 1.0 if over <= 0 else max(0.0, 1.0 - over / max_chars)


def prefix(completion: str, row: dict, text: str) -> float:
    return float(split_think(completion)[1].lstrip().startswith(text))


REWARDS: dict[str, Callable] = {"multiply": multiply.reward, "add": add.reward, "label": label, "format": format_,
                                "identity": identity, "length": length, "prefix": prefix}


def build(name: str, options: dict | None = None) -> Callable[[str, dict], float | None]:
    """The named reward with its options bound. Raises ValueError (one line) for an unknown name, an
    option it does not take, one it needs and was not given, or a value it cannot use (the reward is
    called once on an empty answer here, so that a wrong value fails before any work, not mid-run)."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward '{name}': choose from {', '.join(REWARDS)}")
    fn = REWARDS[name]
    options = dict(options or {})
    sig = list(inspect.signature(fn).parameters.values())[2:]
    params = [p.name for p in sig]
    unknown = sorted(set(options) - set(params))
    missing = [p.name for p in sig if p.name not in options and p.default is inspect.Parameter.empty]
    if unknown or missing:
        takes = ", ".join(params) or "no options"
        raise ValueError(f"reward '{name}' takes {takes}" + (f"; got {', '.join(unknown)}" if unknown else "")
                         + (f"; missing {', '.join(missing)}" if missing else ""))
    bound = partial(fn, **options) if options else fn
    try:
        bound("", {})
    except (TypeError, ValueError) as e:
        raise ValueError(f"reward '{name}': {e}") from None
    return bound
