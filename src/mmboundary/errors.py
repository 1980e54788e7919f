"""The project's own errors. Every error a user can cause names where it happened."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class MMBoundaryError(Exception):
    """Base class of every error this project raises on purpose."""


def one_line(message: object) -> str:
    """`message` as one line (its lines joined by single spaces)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def user_message(error: BaseException) -> str:
    """The one line a user reads for an error: after `error: ` on the command line (the
    project's own errors and the operating system's about a path), and after `stage <name>:
    failed after <s>s: ` in run.log. The project's errors as they are; an `OSError` naming a
    file as "<reason>: <file>"; any other exception with its type first ("ValueError: ...")."""
    if isinstance(error, MMBoundaryError):
        return one_line(error)
    if isinstance(error, OSError) and error.strerror and error.filename:
        return one_line(f"{error.strerror}: {error.filename}")
    return one_line(f"{type(error).__name__}: {error}")


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


@contextlib.contextmanager
def loading_checkpoint(path_or_id: str | Path, what: str = "checkpoint"):
    """Around a `from_pretrained` call: an `OSError` for a path that is no local file or folder
    (nothing there, and no hub checkpoint of that name to be had) becomes a `ConfigError` that
    names the local path looked for; any other error passes unchanged."""
    try:
        yield
    except OSError as e:
        path = Path(str(path_or_id))
        if path.exists():
            raise
        looked = os.path.normpath(path.absolute())
        raise ConfigError(f"{path_or_id}: no {what} there (no folder {looked}; a relative path is read from the "
                          "working directory, or from a config file's folder when it exists there) and none "
                          f"on the hub under that name: {one_line(e)[:300]}") from e
