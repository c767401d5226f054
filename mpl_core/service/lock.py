"""The workspace's job lock: one job at a time per workspace, across threads and processes.

A job holds an exclusive `flock` on the workspace's job.lock, which the kernel releases if the
process dies, so a crash never leaves a stale lock behind. The holder writes who it is into the
file, for the "busy" message another process shows.
"""
from __future__ import annotations

import fcntl
import json
import os
import time

from mpl_core.errors import MPLStudioError


class JobBusy(MPLStudioError):
    """Another job holds the workspace."""


class JobLock:
    """An exclusive, non-blocking flock on the workspace's job.lock (released when the fd closes)."""

    def __init__(self, path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, holder: dict) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise busy_error(self.path) from None
        self._fd = fd
        self.describe(holder)

    def describe(self, holder: dict) -> None:
        """Say who holds the lock (read by describe_holder for the 'busy' message)."""
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(holder).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_holder(path) -> dict:
    """What the holder of the workspace's lock wrote about itself ({} if unreadable)."""
    try:
        with open(path) as f:
            h = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}
    return h if isinstance(h, dict) else {}


def describe_holder(path, holder: dict | None = None) -> str:
    """'train run 3, started 14:02 by process 4242' from the lock file (or a holder already read)."""
    h = holder if holder is not None else read_holder(path)
    if not h:
        return "unknown job"
    when = time.strftime("%H:%M", time.localtime(h.get("started", 0)))
    run = f" run {h['run_id']}" if h.get("run_id") else ""
    return f"{h.get('kind', 'a job')}{run}, started {when} by process {h.get('pid', '?')}"


def busy_error(path) -> JobBusy:
    return JobBusy(f"another job is running in this workspace ({describe_holder(path)}); "
                   "stop it or wait for it to finish")


def lock_is_held(path) -> bool:
    if not os.path.exists(path):
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
