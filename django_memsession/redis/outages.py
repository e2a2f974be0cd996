"""What a redis-py error means: Redis cannot answer now (an outage, raised as
:class:`~django_memsession.redis.exceptions.SessionBackendUnavailable` with its reason), or a
bug (raised as redis-py raised it). Reasons never hold a key or data."""

from __future__ import annotations

from typing import NoReturn

import redis

from .client import ClusterNode
from .exceptions import SessionBackendUnavailable

__all__ = ["availability_reason", "unavailable", "wrong_type"]

# Redis error codes that mean "cannot answer now", not "wrong request", and what each means.
UNAVAILABLE_CODES = {
    "OOM": "Redis is out of memory and refuses writes (maxmemory is reached and its "
    "maxmemory-policy evicts nothing; volatile-ttl would evict the shortest-lived sessions)",
    "READONLY": "Redis is a read-only replica (a failover in progress, or the URL names a replica)",
    "LOADING": "Redis is loading its data set",
    "MASTERDOWN": "Redis is a replica that lost its master",
    "MISCONF": "Redis refuses writes because it cannot save to disk",
    "BUSY": "Redis is busy running a script",
    "NOREPLICAS": "Redis has too few replicas to accept writes",
    "TRYAGAIN": "Redis asks to try again",
    # Without MEMSESSION_REDIS_CLUSTER, a node of a Redis Cluster whose INFO the connection
    # could not read (client.py refuses one it can): a 503 that says why, not a 500.
    **dict.fromkeys(
        ("MOVED", "ASK", "CROSSSLOT", "CLUSTERDOWN"),
        "MEMSESSION_REDIS_URL names a node of a Redis Cluster, or the cluster is failing over "
        "or moving slots: on a cluster, set MEMSESSION_REDIS_CLUSTER = True",
    ),
}


def wrong_type(exc: redis.RedisError) -> bool:
    """Whether Redis refused a command because the key holds another type (``WRONGTYPE``)."""
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("WRONGTYPE")


# For redis-py versions whose exceptions do not carry the code (before 7).
_CODES_BY_CLASS = {
    redis.exceptions.ReadOnlyError: "READONLY",
    redis.exceptions.OutOfMemoryError: "OOM",
}


def availability_reason(exc: redis.RedisError) -> str | None:
    """Why Redis could not answer, in words that never hold a key or data; None for a bug."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        # redis-py's own messages: host, port, errno; never a command's arguments.
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ClusterNode):
        return str(exc)
    if isinstance(exc, redis.ResponseError):
        # redis-py keeps the error code apart; Redis 7 keeps it for errors inside a script too.
        code = (
            getattr(exc, "status_code", None)
            or _CODES_BY_CLASS.get(type(exc))
            or str(exc).split(" ", 1)[0]
        )
        if code in UNAVAILABLE_CODES:
            return f"{UNAVAILABLE_CODES[code]} ({code})"
    return None


def unavailable(exc: redis.RedisError) -> NoReturn:
    """Raise what a redis-py error means: ours for an outage, the error itself for a bug.

    Called from ``except`` clauses rather than wrapping each call in a context manager: the
    success path then costs nothing (a generator-based context manager costs about 1 µs a call).
    """
    reason = availability_reason(exc)
    if reason is None:
        raise exc
    raise SessionBackendUnavailable(reason) from exc
