"""Whether a file at one of the snapshot's paths is one this process made: a regular file of
this user's that no one else may read or write, reached through no symlink; and opening it so
that what was checked is what is read (``lstat``, then ``O_NOFOLLOW | O_NONBLOCK``, then
``fstat`` of the open file). Used for the snapshot, its journals and its claim: each holds or
guards session keys, and ssh refuses a private key others can read for the same reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileProblem", "UnsafeFile", "file_problem", "open_checked"]


@dataclass(frozen=True)
class FileProblem:
    """Why a file at one of the snapshot's paths is not one this process made, and what to do."""

    reason: str
    remedy: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.remedy}"


class UnsafeFile(OSError):
    """A journal or the claim file that :func:`file_problem` finds fault with."""

    def __init__(self, path: Path, problem: FileProblem) -> None:
        super().__init__(errno.EPERM, str(problem), str(path))
        self.problem = problem


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _problem(info: os.stat_result, path: Path, *, private: bool = True) -> FileProblem | None:
    """What is wrong with the file ``info`` describes (an ``lstat``, or an ``fstat`` of the file
    opened), or None. The files this process makes are regular files of its own, ``0600``;
    anything else was put there by someone else: a FIFO would hang the open, a device or a
    symlink would read or write elsewhere, and a file others may read or write gives away the
    session keys in it or lets them choose what is restored (``ssh`` refuses a private key
    others can read). ``private=False``: only the kind is checked."""
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        return FileProblem(
            "it is a symlink (the snapshot's files are never opened through one)",
            f"replace {path} with the file itself (a symlinked directory above it is fine)",
        )
    if not stat.S_ISREG(mode):
        kind = next((name for is_kind, name in _KINDS if is_kind(mode)), "a special file")
        return FileProblem(
            f"it is {kind}, not a regular file",
            f"remove {path}; the server writes a regular file there",
        )
    if not private:
        return None
    uid = os.geteuid()
    if info.st_uid != uid:
        return FileProblem(
            f"it belongs to another user (uid {info.st_uid}; the server runs as uid {uid})",
            f"remove {path}, or chown it to the user the server runs as",
        )
    if stat.S_IMODE(mode) & 0o077:
        return FileProblem(
            f"other users may read or write it (mode {stat.S_IMODE(mode):04o})",
            f"chmod 600 {path}",
        )
    return None


def file_problem(path: Path) -> FileProblem | None:
    """What is wrong with the file at ``path`` itself (a symlink is not followed), or None when
    it will do or there is none."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return _problem(info, path)


def open_checked(path: Path, flags: int, *, private: bool = True) -> int:
    """``path`` opened, once :func:`file_problem` finds nothing wrong with it; ``UnsafeFile``
    otherwise. Never through a symlink (``O_NOFOLLOW``), never waiting for a FIFO's other end
    (``O_NONBLOCK``: no effect on a regular file's reads and writes), and checked again on the
    file opened (``fstat``), so a file swapped in after the first check is refused too."""
    info = None
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(path)
    problem = _problem(info, path, private=private) if info is not None else None
    if problem is None:
        extra = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
        fd = os.open(path, flags | extra, 0o600)
        try:
            problem = _problem(os.fstat(fd), path, private=private)
        except BaseException:
            os.close(fd)
            raise
        if problem is None:
            return fd
        os.close(fd)
    raise UnsafeFile(path, problem)
