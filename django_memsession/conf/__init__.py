"""Settings: each engine's ``MEMSESSION_*`` settings, their defaults, and one validation path
(a list of ``Problem``) feeding both the system checks and ``ImproperlyConfigured``.

- ``base.py``: what both engines share: the settings object, ``Problem``, the settings both read.
- ``memory.py``: the memory engine's (``SESSION_ENGINE = "django_memsession"``).
- ``redis.py``: the Redis engine's (``"django_memsession.redis"``); not imported here, though it
  imports no redis-py either: the Redis engine imports it (``django_memsession.redis.conf``).

This package re-exports what other modules read as ``conf.x``: the memory engine's settings
object (``conf.conf``), its ``problems()`` and ``limits()``, and the shared helpers.
"""

from __future__ import annotations

from .base import (
    DEFAULT_CONTROL,
    DEFAULT_END_SESSIONS_ON_PASSWORD_CHANGE,
    DEFAULT_MAX_SESSION_SIZE,
    DEFAULT_PRUNE_INTERVAL,
    DEFAULT_TRACK_CLIENTS,
    MEMORY_ENGINE,
    MIN_PRUNE_INTERVAL,
    REDIS_ENGINE,
    BaseSettings,
    Problem,
    Setting,
    SharedSettings,
    client_ip_problem,
    problems_text,
    prune_interval,
    raise_any,
)
from .memory import (
    DEFAULT_LOW_WATER,
    DEFAULT_MAX_SIZE,
    DEFAULT_SNAPSHOT_INTERVAL,
    MAX_SESSION_SHARE,
    MIN_MAX_SESSION_SIZE,
    MIN_MAX_SIZE,
    MemsessionSettings,
    conf,
    default_max_session_bytes,
    limits,
    problems,
    snapshot_interval,
    snapshot_path,
)

__all__ = [
    "DEFAULT_CONTROL",
    "DEFAULT_END_SESSIONS_ON_PASSWORD_CHANGE",
    "DEFAULT_LOW_WATER",
    "DEFAULT_MAX_SESSION_SIZE",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_PRUNE_INTERVAL",
    "DEFAULT_SNAPSHOT_INTERVAL",
    "DEFAULT_TRACK_CLIENTS",
    "MAX_SESSION_SHARE",
    "MEMORY_ENGINE",
    "MIN_MAX_SESSION_SIZE",
    "MIN_MAX_SIZE",
    "MIN_PRUNE_INTERVAL",
    "REDIS_ENGINE",
    "BaseSettings",
    "MemsessionSettings",
    "Problem",
    "Setting",
    "SharedSettings",
    "client_ip_problem",
    "conf",
    "default_max_session_bytes",
    "limits",
    "problems",
    "problems_text",
    "prune_interval",
    "raise_any",
    "snapshot_interval",
    "snapshot_path",
]
