"""Advisory folder locks: two processes never write the same run or comparison row.

`hold(lock_file, what=...)` takes an exclusive `fcntl.flock` on `lock_file` for the duration of a
`with` block. The operating system releases it when the process ends, however it ends (a killed
run leaves no stale lock to clean up). Who holds it (pid, host, start time) is written into the
file, so the process that finds it taken can say which process to wait for.

- `wait=False` (the default): a lock held by another process raises `Busy` at once (e.g. a second
  `mmboundary run` on a folder a first one is still writing).
- `wait=True`: block until it is free (e.g. a second `mmboundary compare` on the same root waits
  for the seed's full run that the first one is making, then reuses it).

Locks are reentrant within a process (a pipeline holds its run's lock and each stage takes it
again). Where `fcntl` does not exist (Windows) nothing is locked: the same as before locks existed.
`flock` on network file systems depends on the server; on a shared cluster folder prefer one
process per folder.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from mmboundary.errors import RunError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_held: dict[Path, int] = {}  # lock files this process holds -> depth


class Busy(RunError):
    """The lock is held by another process; `holder` is what it wrote into the lock file."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


def holder(lock_file: str | Path) -> str:
    """Who holds (or last held) `lock_file`, as its holder wrote it ('' when unknown)."""
    try:
        return Path(lock_file).read_text("utf-8").strip()
    except OSError:
        return ""


@contextlib.contextmanager
def hold(lock_file: str | Path, *, what: str, wait: bool = False,
         on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created with its folder) while the block runs.

    `what` names the thing locked in the `Busy` message. With `wait`, `on_wait(holder)` is called
    once before blocking (e.g. to print what is waited for)."""
    path = Path(lock_file).resolve()
    if fcntl is None:
        yield
        return
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(path) or "another process"
            if not wait:
                raise Busy(f"{what} is in use by {who} (lock {path}); wait for that process to finish, "
                           "or use another folder", who) from None
            if on_wait is not None:
                on_wait(who)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
