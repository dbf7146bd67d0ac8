"""One writer at a time: an exclusive ``flock`` on ``<db>.lock`` for a sync's whole run.

The kernel drops a flock when its process ends, however it ends (kill -9 included), so a
crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .errors import DatabaseError, LockedError


class SyncLock:
    def __init__(self, db_path: str | os.PathLike):
        self.path = Path(str(db_path) + ".lock")
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0, poll: float = 0.2) -> "SyncLock":
        try:
            # O_NOFOLLOW: a symlink planted at <db>.lock must not get its target truncated.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as exc:
            raise DatabaseError(f"cannot create the lock file {self.path}: {exc.strerror}") from None
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    waited = f" after waiting {wait:g} s" if wait else ""
                    raise LockedError(
                        f"another klaviyo-sync run{holder} holds the lock {self.path}{waited}; "
                        "exiting (use --wait SECONDS to wait for it)"
                    ) from None
                time.sleep(poll)
        try:  # the pid is for the message of a run kept waiting: a full disk must not stop the run here
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "SyncLock":
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    # The holder writes its pid just after taking the lock: give it a moment to do so.
    for _ in range(5):
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            pid = os.read(fd, 32).decode().strip()
        except OSError:
            return ""
        if pid.isdigit():
            return f" (pid {pid})"
        time.sleep(0.02)
    return ""
