"""The job lock: one long-running writer (scan, thumbs, drain, watch, serve) per database.

A second run (cron firing while the last one is still going) fails at once with LockedError
instead of both working. flock is released by the kernel when the process dies, even on kill -9.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from imageapi.core.errors import LockedError


class JobLock:
    def __init__(self, database_path: Path, job: str) -> None:
        self.path = database_path.with_name(database_path.name + ".lock")
        self.job = job
        self._fd: int | None = None

    def acquire(self) -> JobLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(
                f"another imageapi run ({holder}) is already working on {self.path.with_suffix('')}; "
                "try again when it has finished"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, {self.job}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "unknown process"
