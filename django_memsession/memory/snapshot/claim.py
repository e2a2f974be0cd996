"""The claim, ``<path>.lock``: the process holding an exclusive ``flock`` on it owns the
snapshot (it restored it, and only it writes it). Its pid and when it claimed are written in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from .safety import open_checked

__all__ = ["Claim"]


class Claim:
    """An exclusive ``flock`` on ``<path>.lock``: the process holding it owns the snapshot."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(f"{path.name}.lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_take(self) -> bool:
        """Whether this process took the claim; ``OSError`` (``UnsafeFile`` for a symlink, a
        FIFO, another user's file or one open to others) when the file cannot be used."""
        fd = open_checked(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "claimed_at": time.time()}).encode())
        self._fd = fd
        return True

    def holder(self) -> tuple[int, float] | None:
        """(pid, when it claimed) of the process holding the claim, as it wrote them."""
        try:
            fd = open_checked(self.path, os.O_RDONLY)
            with open(fd, "rb") as claim:
                info = json.loads(claim.read(200))
            return int(info["pid"]), float(info["claimed_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def release(self) -> None:
        """Close our descriptor: the flock goes with the last one (a forked child's copy
        closed leaves the parent's claim as it was)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
