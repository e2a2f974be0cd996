"""What both engines' settings share: the settings object, the ``Problem`` type, the one way
problems become an ``ImproperlyConfigured``, and the ``MEMSESSION_*`` settings both engines read
(the control channel, the pruner's interval, who is logged in, the size of one session).

Each engine lists its problems once (``memory.problems()``, ``redis.problems()``); the system
checks show them as errors, and the code that builds a store raises them with :func:`raise_any`,
so a server that never runs checks fails with the same text.
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ..sizing import parse_size

# SESSION_ENGINE for each of the package's engines.
MEMORY_ENGINE = "django_memsession"
REDIS_ENGINE = "django_memsession.redis"

# The largest one session may be, serialized, unless MEMSESSION_MAX_SESSION_SIZE says (the memory
# engine also caps it at MEMSESSION_MAX_SIZE / MAX_SESSION_SHARE, see memory.py).
DEFAULT_MAX_SESSION_SIZE = 1024 * 1024
DEFAULT_PRUNE_INTERVAL = 60.0
DEFAULT_CONTROL = True
DEFAULT_TRACK_CLIENTS = False
DEFAULT_END_SESSIONS_ON_PASSWORD_CHANGE = True
DEFAULT_MERGE_SAVES = True
# Under a second a periodic thread would be a busy loop; above TIMEOUT_MAX it cannot wait.
MIN_PRUNE_INTERVAL = 1.0


class Setting:
    """One ``MEMSESSION_*`` setting on a settings class: its name and default, read from
    ``django.conf.settings`` at every access, so ``override_settings`` works."""

    __slots__ = ("attribute", "default", "name")

    def __init__(self, default: Any = None) -> None:
        self.default = default
        self.attribute = ""
        self.name = ""

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute
        self.name = f"{owner.setting_prefix}{attribute}"

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return getattr(settings, self.name, self.default)


class DictSetting(Setting):
    """A setting whose default is a dict: a fresh copy each time it is not set, so that nobody
    shares (and changes) the default."""

    __slots__ = ()

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = getattr(settings, self.name, self)
        return dict(self.default) if value is self else value


class BaseSettings:
    """Shadows Django's settings: each class attribute that is a :class:`Setting` reads the
    ``setting_prefix`` + its name, with its default."""

    setting_prefix = "MEMSESSION_"

    @classmethod
    def settings(cls) -> dict[str, Setting]:
        """Every setting this class reads, by its full name (``MEMSESSION_MAX_SIZE``)."""
        found: dict[str, Setting] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                if isinstance(value, Setting):
                    found[value.name] = value
        return found


class SharedSettings(BaseSettings):
    """The settings both engines read."""

    MAX_SESSION_SIZE = Setting(None)  # None: DEFAULT_MAX_SESSION_SIZE (memory: capped, see there)
    PRUNE_INTERVAL = Setting(DEFAULT_PRUNE_INTERVAL)
    CONTROL = Setting(DEFAULT_CONTROL)
    CONTROL_DIR = Setting(None)
    MAX_SESSIONS_PER_USER = Setting(None)
    TRACK_CLIENTS = Setting(DEFAULT_TRACK_CLIENTS)
    CLIENT_IP = Setting(None)
    END_SESSIONS_ON_PASSWORD_CHANGE = Setting(DEFAULT_END_SESSIONS_ON_PASSWORD_CHANGE)
    MERGE_SAVES = Setting(DEFAULT_MERGE_SAVES)


shared = SharedSettings()


@dataclass(frozen=True)
class Problem:
    """One bad setting: a stable id (``memsession.E001``), what is wrong, and what to write."""

    id: str
    msg: str
    hint: str


def problems_text(found: list[Problem]) -> str:
    """The problems as one message: each one's text, hint and id, as the system check shows them."""
    return "; ".join(f"{problem.msg} {problem.hint} ({problem.id})" for problem in found)


def raise_any(found: list[Problem]) -> None:
    """``ImproperlyConfigured`` with the system checks' text, if anything was found."""
    if found:
        raise ImproperlyConfigured(problems_text(found))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _interval_ok(value: object) -> bool:
    return _is_number(value) and (
        value == 0 or MIN_PRUNE_INTERVAL <= value <= threading.TIMEOUT_MAX  # type: ignore[operator]
    )


def channel_problems() -> list[Problem]:
    """The pruner's interval and the control channel: E005, E006, E007."""
    found: list[Problem] = []
    interval = shared.PRUNE_INTERVAL
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
    if not isinstance(shared.CONTROL, bool):
        found.append(
            Problem(
                "memsession.E006",
                f"MEMSESSION_CONTROL = {shared.CONTROL!r} is not True or False.",
                "Write MEMSESSION_CONTROL = True (the default) or False to turn the control "
                "socket off.",
            )
        )
    control_dir = shared.CONTROL_DIR
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
    return found


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


def count_problem(name: str, value: object, id_: str, hint: str) -> list[Problem]:
    """``MEMSESSION_<name>`` as a number of sessions (None allowed): E013, E014."""
    if value is None or _is_count(value):
        return []
    return [Problem(id_, f"MEMSESSION_{name} = {value!r} is not a number of sessions.", hint)]


def size_problem(
    name: str, value: object, id_: str, example: str
) -> tuple[int | None, list[Problem]]:
    """``MEMSESSION_<name>`` as a size: its bytes and no problem, or None and the problem
    (``example`` ends its hint): E001, E002, E106, E108."""
    try:
        return parse_size(value), []
    except ValueError as exc:
        hint = f"{exc} Example: {example}"
        return None, [Problem(id_, f"MEMSESSION_{name} = {value!r} is not a size.", hint)]


# Both engines' hint for a MEMSESSION_MAX_SESSION_SIZE that is not a size.
MAX_SESSION_SIZE_EXAMPLE = "MEMSESSION_MAX_SESSION_SIZE = '1M', or None for the default."


def per_user_problems() -> list[Problem]:
    """``MEMSESSION_MAX_SESSIONS_PER_USER`` (E014): both engines enforce it."""
    return count_problem(
        "MAX_SESSIONS_PER_USER",
        shared.MAX_SESSIONS_PER_USER,
        "memsession.E014",
        "Write a whole number of sessions (at least 1), e.g. "
        "MEMSESSION_MAX_SESSIONS_PER_USER = 5, or None (the default) for no limit.",
    )


def user_problems() -> list[Problem]:
    """Who is logged in: E014, E015, E017, E016."""
    found = per_user_problems()
    for name, id_ in (
        ("TRACK_CLIENTS", "memsession.E015"),
        ("END_SESSIONS_ON_PASSWORD_CHANGE", "memsession.E017"),
    ):
        setting = SharedSettings.__dict__[name]
        value = getattr(shared, name)
        if not isinstance(value, bool):
            found.append(
                Problem(
                    id_,
                    f"MEMSESSION_{name} = {value!r} is not True or False.",
                    f"Write MEMSESSION_{name} = True or False (the default is {setting.default}).",
                )
            )
    problem = client_ip_problem(shared.CLIENT_IP)
    if problem is not None:
        found.append(
            Problem(
                "memsession.E016",
                f"MEMSESSION_CLIENT_IP = {shared.CLIENT_IP!r} {problem}.",
                "Write None (the default: REMOTE_ADDR), the request.META name of a header your "
                "proxy sets, e.g. 'HTTP_X_FORWARDED_FOR' (its last address is taken: the one "
                "your proxy saw), or the dotted path of a function taking the request and "
                "returning the address as a string.",
            )
        )
    return found


def merge_problems() -> list[Problem]:
    """``MEMSESSION_MERGE_SAVES`` (E018): both engines merge concurrent saves (merge.py)."""
    value = shared.MERGE_SAVES
    if isinstance(value, bool):
        return []
    return [
        Problem(
            "memsession.E018",
            f"MEMSESSION_MERGE_SAVES = {value!r} is not True or False.",
            "Write MEMSESSION_MERGE_SAVES = True (the default: concurrent saves of one session "
            "are merged) or False (the later save replaces the whole session).",
        )
    ]


def prune_interval() -> float:
    """Seconds between pruner passes; 0 means off. Assumes :func:`channel_problems` is empty."""
    return float(shared.PRUNE_INTERVAL or 0)
