"""The memory engine's settings (``SESSION_ENGINE = "django_memsession"``), their defaults and
their validation.

The same :func:`problems` feed the system checks (at startup) and :func:`limits` (when the store is
first built), so a server that never runs checks — gunicorn, uvicorn, a project without the app in
``INSTALLED_APPS`` — fails with the same message instead of misbehaving later. The settings both
engines read, and the ``Problem`` type, are in ``base.py``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..dirs import dir_problem
from ..memory.store import Limits
from ..sizing import format_size, parse_size
from .base import (
    DEFAULT_MAX_SESSION_SIZE,
    MAX_SESSION_SIZE_EXAMPLE,
    MIN_PRUNE_INTERVAL,
    Problem,
    Setting,
    SharedSettings,
    _interval_ok,
    _is_number,
    channel_problems,
    count_problem,
    merge_problems,
    raise_any,
    size_problem,
    user_problems,
)

DEFAULT_MAX_SIZE = "64M"
DEFAULT_LOW_WATER = 0.75
DEFAULT_SNAPSHOT_INTERVAL = 300.0
# Unless MEMSESSION_MAX_SESSION_SIZE is set, one session may take at most this share of the store
# (1/8 of MEMSESSION_MAX_SIZE), and at most DEFAULT_MAX_SESSION_SIZE.
MAX_SESSION_SHARE = 8
# Below these, every save would be refused or evict everything: a logged-in session serialized
# is about 300 bytes, and the store's empty tables take a few kilobytes.
MIN_MAX_SIZE = 64 * 1024
MIN_MAX_SESSION_SIZE = 1024


class MemsessionSettings(SharedSettings):
    """Shadows Django's settings: each ``MEMSESSION_*`` setting the memory engine reads (those
    of ``SharedSettings`` too), with its default, read at every access."""

    MAX_SIZE = Setting(DEFAULT_MAX_SIZE)
    LOW_WATER = Setting(DEFAULT_LOW_WATER)
    SNAPSHOT_PATH = Setting(None)
    SNAPSHOT_INTERVAL = Setting(DEFAULT_SNAPSHOT_INTERVAL)
    MAX_SESSIONS = Setting(None)


conf = MemsessionSettings()


def problems() -> list[Problem]:
    """Every problem with the current ``MEMSESSION_*`` settings; empty when all is well."""
    return (
        _size_problems()
        + channel_problems()
        + _snapshot_problems()
        + count_problem(
            "MAX_SESSIONS",
            conf.MAX_SESSIONS,
            "memsession.E013",
            "Write a whole number of sessions (at least 1), e.g. MEMSESSION_MAX_SESSIONS = "
            "100_000, or None (the default) for no cap beside MEMSESSION_MAX_SIZE.",
        )
        + user_problems()
        + merge_problems()
    )


def _size_problems() -> list[Problem]:
    """The store's budget, one session's cap, the low-water mark: E001, E008, E002, E009, E004,
    E003."""
    max_bytes, found = size_problem(
        "MAX_SIZE", conf.MAX_SIZE, "memsession.E001", "MEMSESSION_MAX_SIZE = '64M'."
    )
    if max_bytes is not None and max_bytes < MIN_MAX_SIZE:
        found.append(
            Problem(
                "memsession.E008",
                f"MEMSESSION_MAX_SIZE ({format_size(max_bytes)}) is too small to hold sessions.",
                f"Write at least {format_size(MIN_MAX_SIZE)}, e.g. MEMSESSION_MAX_SIZE = '64M' "
                "(the default).",
            )
        )
    session_cap = conf.MAX_SESSION_SIZE
    if session_cap is not None:
        session_bytes, problems = size_problem(
            "MAX_SESSION_SIZE", session_cap, "memsession.E002", MAX_SESSION_SIZE_EXAMPLE
        )
        found += problems
        if session_bytes is not None:
            if session_bytes < MIN_MAX_SESSION_SIZE:
                found.append(
                    Problem(
                        "memsession.E009",
                        f"MEMSESSION_MAX_SESSION_SIZE ({format_size(session_bytes)}) is too "
                        "small to hold a logged-in session: every save would be refused.",
                        f"Write at least {format_size(MIN_MAX_SESSION_SIZE)}, e.g. "
                        "MEMSESSION_MAX_SESSION_SIZE = '64K', or None for the default.",
                    )
                )
            if max_bytes is not None and session_bytes > max_bytes // 2:
                found.append(
                    Problem(
                        "memsession.E004",
                        f"MEMSESSION_MAX_SESSION_SIZE ({format_size(session_bytes)}) is more "
                        f"than half of MEMSESSION_MAX_SIZE ({format_size(max_bytes)}).",
                        "A session that large would evict every other one: lower "
                        "MEMSESSION_MAX_SESSION_SIZE (e.g. to a tenth of MEMSESSION_MAX_SIZE) "
                        "or raise MEMSESSION_MAX_SIZE.",
                    )
                )
    low_water = conf.LOW_WATER
    if not (_is_number(low_water) and 0 < low_water < 1):
        found.append(
            Problem(
                "memsession.E003",
                f"MEMSESSION_LOW_WATER = {low_water!r} is not a fraction between 0 and 1.",
                f"Write a number strictly between 0 and 1, e.g. MEMSESSION_LOW_WATER = "
                f"{DEFAULT_LOW_WATER} (the store is brought down to {DEFAULT_LOW_WATER * 100:g} "
                "% of MEMSESSION_MAX_SIZE when full).",
            )
        )
    return found


def _snapshot_problems() -> list[Problem]:
    """The snapshot file and its schedule: E010, E011, E012."""
    found: list[Problem] = []
    path = conf.SNAPSHOT_PATH
    if path is not None:
        if not (isinstance(path, (str, os.PathLike)) and os.path.isabs(path)):
            found.append(
                Problem(
                    "memsession.E010",
                    f"MEMSESSION_SNAPSHOT_PATH = {path!r} is not an absolute file path.",
                    "Write the absolute path of one file, e.g. MEMSESSION_SNAPSHOT_PATH = "
                    "'/var/lib/myproject/sessions.snapshot', or None (the default) for no "
                    "snapshots.",
                )
            )
        else:
            directory = os.path.dirname(os.fspath(path))
            if not os.path.isdir(directory):
                found.append(
                    Problem(
                        "memsession.E011",
                        f"The directory of MEMSESSION_SNAPSHOT_PATH ({directory}) does not exist.",
                        "Create it (mode 0700, owned by the user the server runs as), or "
                        "point MEMSESSION_SNAPSHOT_PATH at a file in an existing directory.",
                    )
                )
            else:
                problem = dir_problem(Path(directory), forbidden=0o022)
                if problem is not None:
                    found.append(
                        Problem(
                            "memsession.E011",
                            f"The directory of MEMSESSION_SNAPSHOT_PATH will not do: {problem}.",
                            "The snapshot holds session keys (credentials): nobody but the "
                            "user the server runs as may write in its directory, or they could "
                            f"replace or remove it. Use a directory of that user's (chmod go-w "
                            f"{directory}, or 0700).",
                        )
                    )
    interval = conf.SNAPSHOT_INTERVAL
    if interval is not None and not _interval_ok(interval):
        found.append(
            Problem(
                "memsession.E012",
                f"MEMSESSION_SNAPSHOT_INTERVAL = {interval!r} is not a number of seconds the "
                "snapshot writer can wait.",
                f"Write a number of seconds from {MIN_PRUNE_INTERVAL:g} to "
                f"{threading.TIMEOUT_MAX:.0f}, e.g. {DEFAULT_SNAPSHOT_INTERVAL:g} (the default); "
                "0 or None writes only at shutdown and on demand.",
            )
        )
    return found


def snapshot_path() -> str | None:
    """The snapshot file, or None when snapshots are off. Assumes :func:`problems` is empty."""
    path = conf.SNAPSHOT_PATH
    return None if path is None else os.fspath(path)


def snapshot_interval() -> float:
    return float(conf.SNAPSHOT_INTERVAL or 0)


def default_max_session_bytes(max_bytes: int) -> int:
    """One session's cap when ``MEMSESSION_MAX_SESSION_SIZE`` is None: 1 MiB, or an eighth of the
    store if that is smaller."""
    return min(DEFAULT_MAX_SESSION_SIZE, max_bytes // MAX_SESSION_SHARE)


def limits() -> Limits:
    """The validated limits; ``ImproperlyConfigured`` with the system check's text otherwise."""
    raise_any(problems())
    max_bytes = parse_size(conf.MAX_SIZE)
    session_cap = conf.MAX_SESSION_SIZE
    return Limits(
        max_bytes=max_bytes,
        max_session_bytes=(
            default_max_session_bytes(max_bytes) if session_cap is None else parse_size(session_cap)
        ),
        low_water=float(conf.LOW_WATER),
        max_sessions=conf.MAX_SESSIONS,
        max_sessions_per_user=conf.MAX_SESSIONS_PER_USER,
    )
