"""The project's own errors. Every error a user can cause names where it happened."""

from __future__ import annotations

from pathlib import Path


class MMBoundaryError(Exception):
    """Base class of every error this project raises on purpose."""


class DataError(MMBoundaryError):
    """Bad input data. The message names the file, the line (1-based) and the field."""

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None,
                 field: str | None = None):
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        where = []
        if self.file is not None:
            where.append(self.file)
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(MMBoundaryError):
    """An invalid configuration: the message names the key."""


class RunError(MMBoundaryError):
    """A run directory that cannot be used (e.g. its config differs from the one requested)."""


class NonFiniteError(MMBoundaryError):
    """Training stopped: too many batches in a row had a non-finite (NaN/inf) loss or gradient.

    The message names the run's description (stage), the step, and the newest checkpoint, which
    was written before the faults and is left as it was (resume from it after fixing the cause).
    """
