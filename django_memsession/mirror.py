"""The marker of a move to Redis: between ``exportsessions`` and the restart onto the Redis
engine, every memory process mirrors its store's writes and deletes to Redis (the mirror itself
is the Redis side's, ``redis/move.py``); this file tells them to, and where.

The export writes the marker, ``<control dir>/<project id>.mirror`` (``0600`` in the private
control directory: it holds the Redis URL, which may hold a password), then asks every running
process to read it. A process started later (a gunicorn worker respawned after
``--max-requests`` or a crash, a new deploy still on the memory engine) reads it when it first
uses its store. ``exportsessions --stop-mirroring`` removes the file and asks every process to
stop (each sends what it has queued first, within :data:`DRAIN_TIMEOUT`).

Knows the control directory only: neither engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from . import control

__all__ = [
    "DRAIN_TIMEOUT",
    "MarkerError",
    "marker_path",
    "read_marker",
    "remove_marker",
    "write_marker",
]

DRAIN_TIMEOUT = 5.0  # seconds a stopping mirror (or an exiting process) spends sending its queue
MAX_MARKER_BYTES = 4096


class MarkerError(Exception):
    """The marker file cannot be written or read; the message is safe to show."""


# -- the marker --------------------------------------------------------------------------------


def marker_path() -> Path:
    return control.control_dir() / f"{control.project_id()}.mirror"


def write_marker(url: str) -> Path:
    """Tell every process of this project, now and later, to mirror to ``url``."""
    directory = control.control_dir()
    problem = control.dir_problem(directory, create=True)
    if problem is not None:
        raise MarkerError(f"the control directory {directory} was refused: {problem}")
    path = marker_path()
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    body = json.dumps({"url": url, "since": time.time()}).encode()
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise MarkerError(f"cannot write {path}: {exc.strerror}") from None
    return path


def read_marker() -> str | None:
    """The URL to mirror to, or None (no export is in progress)."""
    path = marker_path()
    try:
        stat = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MarkerError(f"cannot read {path}: {exc.strerror}") from None
    if stat.st_uid != os.getuid() or stat.st_mode & 0o077 or not path.is_file():
        raise MarkerError(f"{path} is not a private file of this user: refused")
    try:
        with path.open("rb") as source:
            url = json.loads(source.read(MAX_MARKER_BYTES))["url"]
    except (OSError, ValueError, KeyError, TypeError):
        raise MarkerError(f"{path} is unreadable; run exportsessions again") from None
    if not isinstance(url, str):
        raise MarkerError(f"{path} is unreadable; run exportsessions again")
    return url


def remove_marker() -> bool:
    """Stop mirroring in processes started from now on; whether there was a marker."""
    try:
        marker_path().unlink()
    except FileNotFoundError:
        return False
    return True
