"""Whether a directory is private enough to hold what the package keeps on disk: the control
sockets (closed to others: 0700) and the snapshot (which nobody else may write to or replace)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["dir_problem"]


def dir_problem(directory: Path, *, create: bool = False, forbidden: int = 0o077) -> str | None:
    """Why ``directory`` will not do, or None when it will.

    It must be a directory owned by this user, with none of the ``forbidden`` mode bits. Checked
    with ``lstat`` first: a symlink is followed only if this user owns it, so nobody else can
    point it elsewhere.
    """
    uid = os.getuid()
    try:
        if create:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        link = directory.lstat()
        if stat.S_ISLNK(link.st_mode) and link.st_uid != uid:
            return f"{directory} is a symlink owned by another user"
        info = directory.stat()
    except OSError as exc:
        return f"cannot use {directory} ({exc.strerror})"
    if not stat.S_ISDIR(info.st_mode):
        return f"{directory} is not a directory"
    if info.st_uid != uid:
        return f"{directory} belongs to another user"
    mode = stat.S_IMODE(info.st_mode)
    if mode & forbidden:
        opened = "open to" if forbidden & 0o044 else "writable by"
        return f"{directory} is {opened} other users (mode {mode:o})"
    return None
