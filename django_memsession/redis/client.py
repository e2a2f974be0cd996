"""What redis-py accepts from the Redis engine's settings: which ``MEMSESSION_REDIS_OPTIONS``
names a client takes (:func:`refused_options`, :func:`accepted_options`), read from redis-py's own
pool and connection signatures (sync and async), so the list follows the installed redis-py
instead of a copy that drifts; and what its ``from_url`` refuses in a URL.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from urllib.parse import parse_qs, urlsplit

import redis
import redis.asyncio.connection
import redis.connection

__all__ = ["accepted_options", "accepted_text", "from_url_problem", "refused_options"]

# What each scheme's URL makes redis-py build (parse_url's choice), sync and async.
CONNECTION_CLASSES = {
    "redis": (redis.connection.Connection, redis.asyncio.connection.Connection),
    "rediss": (redis.connection.SSLConnection, redis.asyncio.connection.SSLConnection),
    "unix": (
        redis.connection.UnixDomainSocketConnection,
        redis.asyncio.connection.UnixDomainSocketConnection,
    ),
}
POOL_CLASSES = (redis.connection.ConnectionPool, redis.asyncio.connection.ConnectionPool)

# Names redis-py would take that the engine must not be given, or that users reach for and
# redis-py does not take; each with what to do instead.
NOT_FOR_THE_ENGINE = {
    **dict.fromkeys(("host", "port", "db", "path", "username", "password"), "the URL gives it"),
    "connection_class": "the URL's scheme chooses it: redis://, rediss:// (TLS), unix://",
    "connection_pool": "the engine builds its own pool from the URL and these options",
    "decode_responses": "the engine reads and writes bytes",
    "single_connection_client": "every thread would share one connection",
    "ssl": "write a rediss:// URL",
    "unix_socket_path": "write a unix:// URL",
    "cluster": "cluster mode is not supported yet",
}


def _init_names(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` takes: its ``__init__``'s, and its bases' for as long
    as each passes ``**kwargs`` on."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names.update(
            parameter.name
            for parameter in parameters
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        )
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
            break
    names.discard("self")
    return names


@functools.cache
def _set_by_redis_py() -> frozenset[str]:
    """What redis-py's pool puts into its connections' arguments itself (a pool built from a URL
    does no I/O): not for a user to give."""
    own: set[str] = set()
    for pool_class in POOL_CLASSES:
        pool = pool_class.from_url("redis://localhost")
        own.update(set(pool.connection_kwargs) - _init_names(pool_class))
    return frozenset(own)


@functools.cache
def accepted_options(scheme: str = "redis") -> frozenset[str]:
    """The ``MEMSESSION_REDIS_OPTIONS`` names a client for a URL of this scheme takes: what
    redis-py's pool and that scheme's connection class accept, in both the sync and the async
    client (the engine builds both from the same options), minus what the URL, redis-py's pool
    or the engine set."""
    sync_class, async_class = CONNECTION_CLASSES.get(scheme, CONNECTION_CLASSES["redis"])
    sync_pool, async_pool = POOL_CLASSES
    accepted = (_init_names(sync_pool) | _init_names(sync_class)) & (
        _init_names(async_pool) | _init_names(async_class)
    )
    return frozenset(accepted - set(NOT_FOR_THE_ENGINE) - _set_by_redis_py())


def refused_options(names: list[str], scheme: str = "redis") -> list[str]:
    """Each name a client for this scheme would not take, with why (or a close match): e.g.
    ``"'socket_timout' (did you mean 'socket_timeout'?)"``. Empty when all are accepted."""
    accepted = accepted_options(scheme)
    refused = []
    for name in names:
        if name in accepted:
            continue
        reason = NOT_FOR_THE_ENGINE.get(name)
        if reason is None and name in _set_by_redis_py():
            reason = "redis-py's pool sets it"
        if reason is None:
            other = [s for s in CONNECTION_CLASSES if name in accepted_options(s)]
            if other:
                reason = "only with a " + " or ".join(f"{s}://" for s in other) + " URL"
            else:
                close = difflib.get_close_matches(name, sorted(accepted), n=2)
                reason = (
                    "did you mean " + " or ".join(repr(match) for match in close) + "?"
                    if close
                    else "not a redis-py connection option"
                )
        refused.append(f"{name!r} ({reason})")
    return refused


def accepted_text(scheme: str = "redis") -> str:
    """The accepted names, for a hint."""
    return (
        f"Accepted (redis-py {redis.__version__}'s connection and pool options, for a "
        f"{scheme}:// URL): {', '.join(sorted(accepted_options(scheme)))}."
    )


def from_url_problem(url: str) -> str | None:
    """What redis-py's ``from_url`` would refuse in a URL of the right shape (see
    :func:`~.conf.url_problem`): a value it cannot read, a query-string name that no client
    takes. None when it would build a client from it."""
    try:
        redis.connection.parse_url(url)
    except ValueError as exc:
        return str(exc).rstrip(".")
    parts = urlsplit(url)
    names = [name for name in parse_qs(parts.query) if name != "db"]
    refused = refused_options(names, parts.scheme.lower())
    if refused:
        return f"its query string names what the engine cannot pass on: {', '.join(refused)}"
    return None
