"""One run at a time in a run folder: an OS file lock on ``OUTPUT/.botnet-run.lock``.

``RunFolderLock(folder).acquire()`` takes a ``filelock.FileLock`` (``flock`` on Unix) without
waiting. The lock file records who holds it (pid, host, start time, torchrun run id), so a second
run into the folder fails at once with one line naming the holder (``RunFolderBusy``, a
``ValueError``: exit code 2 from the CLI). The kernel drops an ``flock`` when its process dies,
so the lock of a killed run (SIGKILL, OOM, a lost node's process) is free: the next run takes it
and its holder record, still in the file, says whose it was (``acquire`` returns it, and the
trainer logs that it took the folder over). A clean ``release`` removes the lock file; a run that
failed before writing anything also removes the folder it created.

Under torchrun only rank 0 takes the lock; the ranks of one job share it (the trainer tells every
rank whether rank 0 got it). Like any ``flock``, it needs a file system that supports it (local
disks, and NFSv4 / Lustre / GPFS with locking on).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
from pathlib import Path

__all__ = ["LOCK_NAME", "RunFolderBusy", "RunFolderLock", "describe_holder"]

LOCK_NAME = ".botnet-run.lock"


class RunFolderBusy(ValueError):
    """Another live run holds the run folder."""


def describe_holder(record: dict) -> str:
    """'pid 123 on host h since 2026-12-07 03:50:01 UTC (torchrun run id x)' from a holder record."""
    text = f"pid {record.get('pid', '?')} on host {record.get('host', '?')} since {record.get('started', '?')}"
    return text + (f" (torchrun run id {record['run_id']})" if record.get("run_id") else "")


def _read_record(data: bytes) -> dict | None:
    try:
        record = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return {"pid": "?", "host": "?", "started": "?"} if data.strip() else None
    return record if isinstance(record, dict) else None


class RunFolderLock:
    """The lock of one run folder (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.previous: dict | None = None  # the record a killed holder left, when acquire took over
        self._lock = None
        self._created_folder = False

    def _on_acquired(self, fd: int) -> None:
        self.previous = _read_record(os.pread(fd, 4096, 0))
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                  "run_id": os.environ.get("TORCHELASTIC_RUN_ID")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)

    def acquire(self) -> dict | None:
        """Take the lock now or raise ``RunFolderBusy`` naming the holder. Returns the holder record
        a killed run left behind (its lock was free, so this run took the folder over), or None."""
        from filelock import FileLock, Timeout

        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"run folder {self.folder} is a file; expected a folder (--output)")
        self._created_folder = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"run folder {self.folder} cannot be created ({e.strerror or e})") from None
        lock = FileLock(str(self.path), timeout=0, on_acquired=self._on_acquired)
        try:
            lock.acquire()
        except Timeout:
            record = self._holder_record()
            holder = describe_holder(record) if record else "a process that has not yet recorded itself"
            raise RunFolderBusy(f"run folder {self.folder} is in use by another run ({holder}); wait for it to "
                                "finish or choose another --output") from None
        except OSError as e:
            raise ValueError(f"cannot lock run folder {self.folder} ({e.strerror or e}); it must be writable "
                             "and on a file system with file locks") from None
        self._lock = lock
        return self.previous

    def _holder_record(self, wait_s: float = 3.0) -> dict:
        """The lock holder's record; {} if it has written none within ``wait_s`` seconds. The holder
        writes it right after taking the lock, so a run that lost the race by microseconds may read
        the file before it (or between its truncate and its write) on a busy machine."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                record = _read_record(self.path.read_bytes()) or {}
            except OSError:
                record = {}
            if record or time.monotonic() >= deadline:
                return record
            time.sleep(0.05)

    def release(self, *, remove_empty_folder: bool = False) -> None:
        """Drop the lock and remove its file; with ``remove_empty_folder``, also the folder when this
        run created it and left nothing else in it (a run that failed during setup)."""
        if self._lock is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while held: a waiter that opened it sees an unlinked inode
        finally:
            self._lock.release()
            self._lock = None
        if remove_empty_folder and self._created_folder:
            try:
                self.folder.rmdir()  # only when empty
            except OSError:
                pass
