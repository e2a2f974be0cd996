"""Settings, read through one object with typed defaults, and their validation.

The same :func:`problems` feed the system checks (at startup) and :func:`limits` (when the store is
first built), so a server that never runs checks — gunicorn, uvicorn, a project without the app in
``INSTALLED_APPS`` — fails with the same message instead of misbehaving later.
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .dirs import dir_problem
from .memory.store import Limits
from .sizing import format_size, parse_size

# SESSION_ENGINE for each of the package's engines.
MEMORY_ENGINE = "django_memsession"
REDIS_ENGINE = "django_memsession.redis"

DEFAULT_MAX_SIZE = "64M"
DEFAULT_MAX_SESSION_SIZE = 1024 * 1024  # capped at MAX_SIZE / 8 unless set explicitly
DEFAULT_LOW_WATER = 0.75
DEFAULT_PRUNE_INTERVAL = 60.0
DEFAULT_SNAPSHOT_INTERVAL = 300.0
# Below these, every save would be refused or evict everything: a logged-in session serialized
# is about 300 bytes, and the store's empty tables take a few kilobytes.
MIN_MAX_SIZE = 64 * 1024
MIN_MAX_SESSION_SIZE = 1024
# Under a second the pruner would be a busy loop; above TIMEOUT_MAX its thread cannot wait.
MIN_PRUNE_INTERVAL = 1.0


class MemsessionSettings:
    """Shadows Django's settings: each ``MEMSESSION_*`` setting as a property with its default.

    Properties read ``django.conf.settings`` on every access, so ``override_settings`` works.
    """

    @property
    def MAX_SIZE(self) -> Any:
        return getattr(settings, "MEMSESSION_MAX_SIZE", DEFAULT_MAX_SIZE)

    @property
    def MAX_SESSION_SIZE(self) -> Any:
        return getattr(settings, "MEMSESSION_MAX_SESSION_SIZE", None)

    @property
    def LOW_WATER(self) -> Any:
        return getattr(settings, "MEMSESSION_LOW_WATER", DEFAULT_LOW_WATER)

    @property
    def PRUNE_INTERVAL(self) -> Any:
        return getattr(settings, "MEMSESSION_PRUNE_INTERVAL", DEFAULT_PRUNE_INTERVAL)

    @property
    def CONTROL(self) -> Any:
        return getattr(settings, "MEMSESSION_CONTROL", True)

    @property
    def CONTROL_DIR(self) -> Any:
        return getattr(settings, "MEMSESSION_CONTROL_DIR", None)

    @property
    def SNAPSHOT_PATH(self) -> Any:
        return getattr(settings, "MEMSESSION_SNAPSHOT_PATH", None)

    @property
    def SNAPSHOT_INTERVAL(self) -> Any:
        return getattr(settings, "MEMSESSION_SNAPSHOT_INTERVAL", DEFAULT_SNAPSHOT_INTERVAL)

    @property
    def MAX_SESSIONS(self) -> Any:
        return getattr(settings, "MEMSESSION_MAX_SESSIONS", None)

    @property
    def MAX_SESSIONS_PER_USER(self) -> Any:
        return getattr(settings, "MEMSESSION_MAX_SESSIONS_PER_USER", None)

    @property
    def TRACK_CLIENTS(self) -> Any:
        return getattr(settings, "MEMSESSION_TRACK_CLIENTS", False)

    @property
    def CLIENT_IP(self) -> Any:
        return getattr(settings, "MEMSESSION_CLIENT_IP", None)

    @property
    def END_SESSIONS_ON_PASSWORD_CHANGE(self) -> Any:
        return getattr(settings, "MEMSESSION_END_SESSIONS_ON_PASSWORD_CHANGE", True)


conf = MemsessionSettings()


@dataclass(frozen=True)
class Problem:
    """One bad setting: a stable id (``memsession.E001``), what is wrong, and what to write."""

    id: str
    msg: str
    hint: str


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def problems() -> list[Problem]:
    """Every problem with the current ``MEMSESSION_*`` settings; empty when all is well."""
    found: list[Problem] = []
    max_bytes: int | None = None
    try:
        max_bytes = parse_size(conf.MAX_SIZE)
    except ValueError as exc:
        found.append(
            Problem(
                "memsession.E001",
                f"MEMSESSION_MAX_SIZE = {conf.MAX_SIZE!r} is not a size.",
                f"{exc} Example: MEMSESSION_MAX_SIZE = '64M'.",
            )
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
        try:
            session_bytes = parse_size(session_cap)
        except ValueError as exc:
            found.append(
                Problem(
                    "memsession.E002",
                    f"MEMSESSION_MAX_SESSION_SIZE = {session_cap!r} is not a size.",
                    f"{exc} Example: MEMSESSION_MAX_SESSION_SIZE = '1M', or None for the default.",
                )
            )
        else:
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
                "Write a number strictly between 0 and 1, e.g. MEMSESSION_LOW_WATER = 0.75 "
                "(the store is brought down to 75 % of MEMSESSION_MAX_SIZE when full).",
            )
        )
    interval = conf.PRUNE_INTERVAL
    if interval is not None and not _interval_ok(interval):
        found.append(
            Problem(
                "memsession.E005",
                f"MEMSESSION_PRUNE_INTERVAL = {interval!r} is not a number of seconds the "
                "pruner can wait.",
                f"Write a number of seconds from {MIN_PRUNE_INTERVAL:g} to "
                f"{threading.TIMEOUT_MAX:.0f}, e.g. MEMSESSION_PRUNE_INTERVAL = 60; 0 or None "
                "turns the periodic pruner off.",
            )
        )
    if not isinstance(conf.CONTROL, bool):
        found.append(
            Problem(
                "memsession.E006",
                f"MEMSESSION_CONTROL = {conf.CONTROL!r} is not True or False.",
                "Write MEMSESSION_CONTROL = True (the default) or False to turn the control "
                "socket off.",
            )
        )
    control_dir = conf.CONTROL_DIR
    if control_dir is not None and not (
        isinstance(control_dir, str) and control_dir.strip() and os.path.isabs(control_dir)
    ):
        found.append(
            Problem(
                "memsession.E007",
                f"MEMSESSION_CONTROL_DIR = {control_dir!r} is not an absolute directory path.",
                "Write an absolute directory path as a string, e.g. "
                "MEMSESSION_CONTROL_DIR = '/run/myproject/memsession', or None for the default "
                "(under the system temp directory).",
            )
        )
    found += _snapshot_problems()
    found += _user_problems()
    return found


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# A header as Django puts it in request.META: HTTP_X_FORWARDED_FOR, or REMOTE_ADDR itself.
_META_NAME = re.compile(r"^(REMOTE_ADDR|HTTP_[A-Z0-9_]+)$")


def client_ip_problem(value: object) -> str | None:
    """Why ``MEMSESSION_CLIENT_IP`` is not usable, or None. A header name is taken as written;
    a dotted path must import and be callable."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        return "is not a string"
    if _META_NAME.match(value):
        return None
    if "." not in value:
        return "is neither a request.META name (e.g. 'HTTP_X_FORWARDED_FOR') nor a dotted path"
    try:
        found = import_string(value)
    except ImportError as exc:
        return f"does not import ({exc})"
    if not callable(found):
        return "is not callable"
    return None


def _user_problems() -> list[Problem]:
    found: list[Problem] = []
    for name, hint in (
        (
            "MAX_SESSIONS",
            "Write a whole number of sessions (at least 1), e.g. MEMSESSION_MAX_SESSIONS = "
            "100_000, or None (the default) for no cap beside MEMSESSION_MAX_SIZE.",
        ),
        (
            "MAX_SESSIONS_PER_USER",
            "Write a whole number of sessions (at least 1), e.g. "
            "MEMSESSION_MAX_SESSIONS_PER_USER = 5, or None (the default) for no limit.",
        ),
    ):
        value = getattr(conf, name)
        if value is not None and not _is_count(value):
            found.append(
                Problem(
                    "memsession.E013" if name == "MAX_SESSIONS" else "memsession.E014",
                    f"MEMSESSION_{name} = {value!r} is not a number of sessions.",
                    hint,
                )
            )
    for name, id_, default in (
        ("TRACK_CLIENTS", "memsession.E015", "False"),
        ("END_SESSIONS_ON_PASSWORD_CHANGE", "memsession.E017", "True"),
    ):
        value = getattr(conf, name)
        if not isinstance(value, bool):
            found.append(
                Problem(
                    id_,
                    f"MEMSESSION_{name} = {value!r} is not True or False.",
                    f"Write MEMSESSION_{name} = True or False (the default is {default}).",
                )
            )
    problem = client_ip_problem(conf.CLIENT_IP)
    if problem is not None:
        found.append(
            Problem(
                "memsession.E016",
                f"MEMSESSION_CLIENT_IP = {conf.CLIENT_IP!r} {problem}.",
                "Write None (the default: REMOTE_ADDR), the request.META name of a header your "
                "proxy sets, e.g. 'HTTP_X_FORWARDED_FOR' (its last address is taken: the one "
                "your proxy saw), or the dotted path of a function taking the request and "
                "returning the address as a string.",
            )
        )
    return found


def _interval_ok(value: object) -> bool:
    return _is_number(value) and (
        value == 0 or MIN_PRUNE_INTERVAL <= value <= threading.TIMEOUT_MAX  # type: ignore[operator]
    )


def _snapshot_problems() -> list[Problem]:
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
                f"{threading.TIMEOUT_MAX:.0f}, e.g. 300 (the default); 0 or None writes only at "
                "shutdown and on demand.",
            )
        )
    return found


def snapshot_path() -> str | None:
    """The snapshot file, or None when snapshots are off. Assumes :func:`problems` is empty."""
    path = conf.SNAPSHOT_PATH
    return None if path is None else os.fspath(path)


def snapshot_interval() -> float:
    return float(conf.SNAPSHOT_INTERVAL or 0)


def limits() -> Limits:
    """The validated limits; ``ImproperlyConfigured`` with the system check's text otherwise."""
    found = problems()
    if found:
        raise ImproperlyConfigured(
            "; ".join(f"{problem.msg} {problem.hint} ({problem.id})" for problem in found)
        )
    max_bytes = parse_size(conf.MAX_SIZE)
    session_cap = conf.MAX_SESSION_SIZE
    max_session_bytes = (
        min(DEFAULT_MAX_SESSION_SIZE, max_bytes // 8)
        if session_cap is None
        else parse_size(session_cap)
    )
    return Limits(
        max_bytes=max_bytes,
        max_session_bytes=max_session_bytes,
        low_water=float(conf.LOW_WATER),
        max_sessions=conf.MAX_SESSIONS,
        max_sessions_per_user=conf.MAX_SESSIONS_PER_USER,
    )


def prune_interval() -> float:
    """Seconds between pruner passes; 0 means off. Assumes :func:`problems` found nothing."""
    return float(conf.PRUNE_INTERVAL or 0)


def redis_engine() -> bool:
    """Whether ``SESSION_ENGINE`` is the Redis engine (read at each call: tests change it)."""
    return getattr(settings, "SESSION_ENGINE", "") == REDIS_ENGINE
