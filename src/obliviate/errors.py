"""One exception family for every mistake a user can fix.

The CLI catches :class:`ObliviateError`, prints ``error: <what> (<fix>)`` on one line and exits with
the error's ``exit_code``: 2 for bad input, 3 for a run that diverged. Anything else is a bug in
obliviate and keeps its traceback.
"""

from __future__ import annotations


class ObliviateError(Exception):
    """A user-fixable problem: bad config, malformed data, missing path, impossible setting."""

    exit_code = 2

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = what
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.what} ({self.fix})" if self.fix else self.what


class ConfigError(ObliviateError):
    """A config field is missing, unknown, mistyped or out of range."""


class DataError(ObliviateError):
    """A dataset is missing, malformed or lacks a required field."""


class ModelError(ObliviateError):
    """A model or tokenizer cannot be loaded or saved."""


class DivergenceError(ObliviateError):
    """Training produced a non-finite loss, gradient or weight, or a gradient norm above the bound.

    Not bad input but a failed run: the CLI exits 3, and no model directory is written.
    """

    exit_code = 3
