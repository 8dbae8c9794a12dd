"""One training process per run directory.

Two processes training into one run directory would interleave their lines in ``metrics.jsonl``
and overwrite each other's checkpoints (a sweep re-run while its first invocation still runs, or
the same ``mabl train`` command started twice). :class:`RunLock` holds an advisory lock
(``fcntl.flock``) on ``RUN/.lock`` for as long as a trainer owns the directory; a second process
gets one line naming the holder. The kernel drops the lock when its holder exits, killed or not,
so a crashed run never leaves a stale lock behind. Readers (``mabl eval``, ``report``, ``archive``,
``diagnose``) take no lock.

Within one process the lock is re-entrant (two trainers built one after the other on the same
directory, as a test or a notebook does, share it). Where ``fcntl`` does not exist (Windows) or
the file system does not support ``flock`` (some network mounts), the lock is not taken and
nothing else changes.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from mabl.errors import MablError

LOCK_NAME = ".lock"
"""The lock file inside a run directory; it holds the owner's pid, host and start time (text)."""

_HELD: dict[Path, list] = {}
"""Locks this process holds: resolved run directory -> [open file, number of holders]."""


class RunLock:
    """``acquire()`` before writing into ``run_dir``, ``release()`` when done (idempotent)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self._key: Path | None = None

    def acquire(self) -> RunLock:
        if self._key is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        key = self.run_dir.resolve()
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return self
        try:
            import fcntl
        except ImportError:  # no flock on this platform: run unlocked
            return self
        path = key / LOCK_NAME
        handle = open(path, "a+")  # noqa: SIM115 (held open for the life of the lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown owner"
            handle.close()
            raise MablError(f"run dir {self.run_dir} is in use by another training process ({owner}); "
                            "wait for it to finish (re-running resumes) or use another --run-dir") from None
        except OSError:  # the file system has no flock (some network mounts): run unlocked
            handle.close()
            return self
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        handle.flush()
        _HELD[key] = [handle, 1]
        self._key = key
        return self

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None or key not in _HELD:
            return
        held = _HELD[key]
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            held[0].close()  # closing the file drops the flock; the file itself stays (harmless)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
