"""ms-swift's self-cognition flags for ``tunesmith identity``."""
from __future__ import annotations

from ..errors import ConfigError

SWIFT_PAIRS = {"--model_name": "name", "--model_author": "author"}


def swift_argv(argv: list[str]) -> list[str]:
    """ms-swift's self-cognition flags → tunesmith identity overrides: ``--model_name 小黄 'Xiao
    Huang'`` (Chinese, then English), ``--model_author 魔搭 ModelScope``, ``--self_cognition_sample N``."""
    out, i = [], 0
    while i < len(argv):
        flag, eq, inline = argv[i].partition("=")
        if flag in SWIFT_PAIRS:
            key = SWIFT_PAIRS[flag]
            words = [inline] if eq else []
            j = i + 1
            while not eq and j < len(argv) and len(words) < 2 and not argv[j].startswith("-") \
                    and "=" not in argv[j]:
                words.append(argv[j])
                j += 1
            if not words:
                raise ConfigError(f"{flag} needs a value: {flag} <Chinese> <English> (or one value for both)")
            out += [f"names.{key}={words[0]}"] if len(words) == 1 else \
                [f"names.{key}_zh={words[0]}", f"names.{key}_en={words[1]}"]
            i = j
        elif flag == "--self_cognition_sample":
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if not value:
                raise ConfigError("--self_cognition_sample needs a number of rows")
            out.append(f"identity_samples={value}")
            i += 1 if eq else 2
        else:
            out.append(argv[i])
            i += 1
    return out
