"""The engine on Redis: ``SESSION_ENGINE = "django_memsession.redis"``.

Needs ``MEMSESSION_REDIS_URL`` and ``pip install "django-memsession[redis]"``. ``SessionStore``
is imported on first access, so that importing this package (for its exception, its checks or its
settings) does not import redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exceptions import SessionBackendUnavailable

if TYPE_CHECKING:
    from .engine import SessionStore

__all__ = ["SessionBackendUnavailable", "SessionStore", "stats"]


def stats() -> dict[str, Any]:
    """This process's figures on the Redis engine: loads answered by the near cache (L1), by
    Redis (L2), or finding no session, with their rates; invalidations received; the near
    cache's own figures (``None`` when ``MEMSESSION_REDIS_NEAR_CACHE`` is off)."""
    from .store import stats as store_stats

    return store_stats()


def __getattr__(name: str) -> Any:
    if name == "SessionStore":
        from .engine import SessionStore

        return SessionStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
