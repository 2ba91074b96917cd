"""Exception hierarchy: every error promptrec raises on purpose derives from PromptrecError.

The CLI prints these as one line and exits with code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class PromptrecError(Exception):
    """Root of all errors that are the user's to fix (bad input, bad configuration)."""


class DataError(PromptrecError):
    """Bad input data. Names the file, the line (1-based, header included) and the column."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.file = file
        self.row = row
        self.column = column
        self.expected = expected
        self.reason = message
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"line {row}")
        if column is not None:
            where.append(f"column '{column}'")
        text = (", ".join(where) + ": " if where else "") + message
        if expected:
            text += f" (expected {expected})"
        super().__init__(text)


class ConfigError(PromptrecError):
    """An option, template, model name or combination of settings that cannot work."""


class ModelError(PromptrecError):
    """A model directory that is missing, incompatible or does not match the data."""
