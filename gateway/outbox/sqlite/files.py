"""The SQLite file itself: created private, and held by one `serve` at a time."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os

from gateway.outbox.records import StoreLocked


def lock_file(path: str) -> int:
    """Hold an exclusive lock on the SQLite file for the life of this process; return the
    descriptor to close when done. Two `serve` processes on one file each count their own
    row ids, so the second's inserts collide with the first's (`UNIQUE constraint failed`):
    the second must not start. `flock` locks are apart from SQLite's own (POSIX) locks and
    die with the process, `kill -9` included. Taken before SQLite opens the file, so that
    closing this descriptor on failure cannot drop a lock of SQLite's."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise StoreLocked(
                f"{path} is in use by another tag-gateway serve; one process per SQLite file"
                " (for several replicas use storage.url, PostgreSQL)"
            ) from exc
        raise
    return fd


def create_private(path: str) -> None:
    """Create the file 0600 if it is new: it holds IP addresses, user agents and hashes.
    SQLite gives `-wal` and `-shm` the main file's mode. An existing file keeps its mode (an
    operator may have chosen group access for backups)."""
    if path == ":memory:" or path.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
