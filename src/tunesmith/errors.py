"""The one exception type for mistakes a user can fix.

Anything raised as ``UserError`` is printed by the CLI as a single line (no traceback)
and turns into a non-zero exit code. Everything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: bad data, bad config, missing model, teacher down.

    ``str(err)`` is the whole message the user sees; it should name the thing to fix and
    where (``file:row`` for data). ``exit_code`` is 2 for config/usage errors, 1 otherwise.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(UserError):
    """A bad config key or value (exit code 2)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)
