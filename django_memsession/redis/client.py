"""One place that builds redis-py clients from the Redis engine's settings, and knows what
redis-py accepts in them.

- :func:`sync_client`, :func:`async_client`: the store's clients (timed, see ``latency.py``),
  with the engine's retry policy and a connect hook that refuses a node of a Redis Cluster
  (unless ``MEMSESSION_REDIS_CLUSTER = True``: then redis-py's ``RedisCluster`` and its asyncio
  twin, built from the URL of any node and the same options, see :func:`cluster_options`). At
  a plain URL their connections turn a ``READONLY`` reply into :class:`Demoted` (a
  ``ConnectionError``: retried once at once on a new connection, through the URL's name); under
  Sentinel (``MEMSESSION_REDIS_SENTINELS``) they are redis-py's Sentinel clients, whose
  connections ask the sentinels for the primary on connect and do the same on ``READONLY``.
- :func:`primary_connection`: one connection of its own at the primary (the near cache's
  tracking pair); :func:`discover`: the primary and live replicas the sentinels name (the
  deploy check); :func:`node_client`: a plain client of one node of a Redis Cluster, with the
  URL's user, password and TLS (the deploy check; whatever must talk to one node).
- :func:`refused_options`, :func:`accepted_options`: which ``MEMSESSION_REDIS_OPTIONS`` names a
  client takes, read from redis-py's own pool and connection signatures (sync and async), so the
  list follows the installed redis-py instead of a copy that drifts.

A Redis Cluster node answers a standalone client with ``MOVED`` and ``CROSSSLOT``: every request
would be a 500. Without ``MEMSESSION_REDIS_CLUSTER = True``, each new connection asks ``INFO
cluster`` once, after its handshake, and a node with ``cluster_enabled:1`` raises
:class:`ClusterNode`, which the store turns into ``SessionBackendUnavailable`` (a 503, logged once
per outage, saying to set it). It costs one round trip per connection, nothing per request.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.retry
import redis.sentinel
from redis.backoff import NoBackoff

from .latency import TimedAsyncRedis, TimedAsyncRedisCluster, TimedRedis, TimedRedisCluster

if TYPE_CHECKING:
    from .conf import StoreSettings

__all__ = [
    "AsyncScript",
    "ClusterNode",
    "accepted_options",
    "accepted_text",
    "async_client",
    "client_options",
    "close_client",
    "cluster_options",
    "discover",
    "from_url_problem",
    "node_client",
    "primary_connection",
    "refused_options",
    "refused_sentinel_options",
    "sync_client",
]

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
    "cluster": "for a Redis Cluster, set MEMSESSION_REDIS_CLUSTER = True",
}
# The same for redis-py's RedisCluster (MEMSESSION_REDIS_CLUSTER = True).
NOT_FOR_THE_CLUSTER = {
    "startup_nodes": "the URL names the node to start from; it finds the others",
    "url": "MEMSESSION_REDIS_URL gives it",
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


def _own_names(function: Callable[..., Any]) -> set[str]:
    """The keyword arguments a function names itself (not its ``**kwargs``)."""
    parameters = inspect.signature(function).parameters.values()
    return {
        parameter.name
        for parameter in parameters
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    } - {"self"}


@functools.cache
def _cluster_names() -> tuple[frozenset[str], frozenset[str]]:
    """What redis-py's RedisCluster clients take: (every name both the sync and the async one
    take, the cluster's own among them: ``require_full_coverage``, ``read_from_replicas``...).
    The sync one passes on to its nodes only the names in ``REDIS_ALLOWED_KEYS`` (it drops the
    others without a word); the async one takes only what it names."""
    sync_own = _own_names(redis.cluster.RedisCluster.__init__)
    sync = (set(redis.cluster.REDIS_ALLOWED_KEYS) - set(redis.cluster.KWARGS_DISABLED_KEYS)) | (
        sync_own
    )
    async_all = _own_names(redis.asyncio.cluster.RedisCluster.__init__)
    return frozenset(sync & async_all), frozenset(sync_own & async_all)


@functools.cache
def accepted_options(scheme: str | None = "redis", cluster: bool = False) -> frozenset[str]:
    """The ``MEMSESSION_REDIS_OPTIONS`` names a client for a URL of this scheme takes: what
    redis-py's pool and that scheme's connection class accept, in both the sync and the async
    client (the engine builds both from the same options), minus what the URL, redis-py's pool
    or the engine set. ``None`` (no URL to tell): what a client for any of them takes.
    ``cluster``: what both of redis-py's RedisCluster clients take, of those and of their own."""
    if cluster:
        both, own = _cluster_names()
        return frozenset(
            ((accepted_options(scheme) | own) & both)
            - set(NOT_FOR_THE_ENGINE)
            - set(NOT_FOR_THE_CLUSTER)
        )
    if scheme is None:
        return frozenset().union(*(accepted_options(known) for known in CONNECTION_CLASSES))
    sync_class, async_class = CONNECTION_CLASSES[scheme]
    sync_pool, async_pool = POOL_CLASSES
    accepted = (_init_names(sync_pool) | _init_names(sync_class)) & (
        _init_names(async_pool) | _init_names(async_class)
    )
    return frozenset(accepted - set(NOT_FOR_THE_ENGINE) - _set_by_redis_py())


def refused_options(
    names: list[str], scheme: str | None = "redis", cluster: bool = False
) -> list[str]:
    """Each name a client for this scheme would not take, with why (or a close match): e.g.
    ``"'socket_timout' (did you mean 'socket_timeout'?)"``. Empty when all are accepted.
    ``cluster``: for redis-py's RedisCluster clients (``MEMSESSION_REDIS_CLUSTER = True``)."""
    accepted = accepted_options(scheme, cluster)
    refused = []
    for name in names:
        if name in accepted:
            continue
        reason = NOT_FOR_THE_ENGINE.get(name)
        if reason is None and cluster:
            reason = NOT_FOR_THE_CLUSTER.get(name)
            if reason is None and name in accepted_options(scheme):
                reason = "redis-py's RedisCluster clients do not take it"
        if reason is None and name in _set_by_redis_py():
            reason = "redis-py's pool sets it"
        if reason is None:
            other = [s for s in CONNECTION_CLASSES if name in accepted_options(s, cluster)]
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


def refused_sentinel_options(names: list[str]) -> list[str]:
    """The ``MEMSESSION_REDIS_SENTINEL_OPTIONS`` names redis-py's clients of the sentinels would
    not take (they are built from keyword arguments, not a URL: a password, TLS are options)."""
    own = {"username", "password", "ssl", "retry"}
    return refused_options([name for name in names if name not in own], None)


def accepted_text(scheme: str | None = "redis", cluster: bool = False) -> str:
    """The accepted names, for a hint."""
    url = f"a {scheme}:// URL" if scheme is not None else "some URL scheme"
    what = "RedisCluster's and its connections'" if cluster else "connection and pool"
    return (
        f"Accepted (redis-py {redis.__version__}'s {what} options, for {url}): "
        f"{', '.join(sorted(accepted_options(scheme, cluster)))}."
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


# -- the clients --------------------------------------------------------------------------------


def client_options(config: StoreSettings, asynchronous: bool = False) -> dict[str, Any]:
    """``from_url``'s keyword arguments for the store's clients: the settings' options, the
    engine's retry policy unless they give ``"retry"``, and the cluster check on connect."""
    options = dict(config.options)
    retry_class = redis.asyncio.retry.Retry if asynchronous else redis.retry.Retry
    # One retry, at once, after a dropped connection (an idle connection that Redis or a
    # proxy closed); none after a timeout: Redis may have applied the write, or may hang.
    options.setdefault(
        "retry", retry_class(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
    )
    handshake = options.get("redis_connect_func")
    options["redis_connect_func"] = (
        _async_refusing_cluster_nodes(handshake)
        if asynchronous
        else _refusing_cluster_nodes(handshake)
    )
    return options


def cluster_options(config: StoreSettings, asynchronous: bool = False) -> dict[str, Any]:
    """The keyword arguments of the store's RedisCluster clients: the settings' options (see
    ``conf.pool_options()``), and unless they give ``"retry"``, one
    retry at once of a command that failed on a dropped connection, a timeout or
    ``CLUSTERDOWN`` (redis-py's cluster client retries those, and refreshes its map of the
    slots first; ``MOVED`` and ``ASK`` it follows without a retry). No connect hook: the nodes
    are cluster nodes."""
    options = dict(config.options)
    retry_class = redis.asyncio.retry.Retry if asynchronous else redis.retry.Retry
    options.setdefault("retry", retry_class(NoBackoff(), 1))
    return options


def node_client(config: StoreSettings, host: str, port: int) -> redis.Redis:
    """A plain client (a pool of its own, not timed) of one node of a Redis Cluster, with what
    the URL says of every node (user, password, TLS, query-string options) and the settings'
    connection options (not ``"retry"``: the engine's, as at a plain URL); the caller closes
    it."""
    scheme = _scheme(config.url)
    options = {
        name: value
        for name, value in config.options.items()
        if name in accepted_options(scheme) and name != "retry"
    }
    url_options = _primary_options(config)
    url_options.pop("db", None)
    # The engine's policy: one retry at once after a dropped connection (redis-py's default
    # backs off three times, seconds for a node that is down).
    retry = redis.retry.Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
    return redis.Redis(host=host, port=port, retry=retry, **{**options, **url_options})


def sync_client(config: StoreSettings) -> TimedRedis | TimedRedisCluster:
    """The store's client: at the URL's server, or under Sentinel at the primary of the URL's
    service (found again after a failover: on a dropped connection and on ``READONLY``, which
    redis-py's Sentinel connections turn into a dropped connection, retried once at once), or
    on a Redis Cluster (``MEMSESSION_REDIS_CLUSTER``) redis-py's RedisCluster, which asks the
    URL's node for the map of the slots as it is built (``CLUSTER SLOTS``: a redis-py error,
    ``RedisClusterException`` or ``ConnectionError``, when no node answers)."""
    if config.cluster:
        return TimedRedisCluster.from_url(config.url, **cluster_options(config))
    if config.sentinels is not None:
        sentinel = redis.sentinel.Sentinel(
            config.sentinels, sentinel_kwargs=config.sentinel_options
        )
        return sentinel.master_for(
            config.service_name,
            redis_class=TimedRedis,
            **{**_primary_options(config), **client_options(config)},
        )
    pool = redis.connection.ConnectionPool.from_url(
        config.url,
        **client_options(config),
        connection_class=FAILOVER_CLASSES[_scheme(config.url)][0],
    )
    pool.connection_kwargs["owner"] = weakref.ref(pool)
    return TimedRedis.from_pool(pool)


def async_client(config: StoreSettings) -> TimedAsyncRedis | TimedAsyncRedisCluster:
    """The same on ``redis.asyncio`` (one per event loop: its connections belong to it). The
    asyncio RedisCluster asks for the map of the slots at its first command, not when built."""
    if config.cluster:
        return TimedAsyncRedisCluster.from_url(
            config.url, **cluster_options(config, asynchronous=True)
        )
    if config.sentinels is not None:
        sentinel = redis.asyncio.sentinel.Sentinel(
            config.sentinels, sentinel_kwargs=config.sentinel_options
        )
        return sentinel.master_for(
            config.service_name,
            redis_class=TimedAsyncRedis,
            **{**_primary_options(config), **client_options(config, asynchronous=True)},
        )
    pool = redis.asyncio.connection.ConnectionPool.from_url(
        config.url,
        **client_options(config, asynchronous=True),
        connection_class=FAILOVER_CLASSES[_scheme(config.url)][1],
    )
    pool.connection_kwargs["owner"] = weakref.ref(pool)
    return TimedAsyncRedis.from_pool(pool)


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower()


# -- READONLY at a plain URL: a failover behind one name ------------------------------------------


class Demoted(redis.ConnectionError):
    """The server answered ``READONLY``: it was the primary and is a replica now (a failover
    behind the URL's name, as managed services do), or the URL names a replica. A
    ``ConnectionError``, so the store's retry sends the command again at once on a new connection,
    which finds the new primary; the command was refused, never applied."""


def _demoted(connection: Any) -> Demoted:
    return Demoted(
        f"Redis at {_address(connection)} answered READONLY: it is a read-only replica now (a "
        "failover, or the URL names a replica); the engine dropped its connections to it and "
        "reconnects"
    )


class _DropsPoolOnReadOnly:
    """A plain URL's connection: a ``READONLY`` reply drops it and its pool's idle connections
    (each reconnects on its next use, through the URL's name) and raises :class:`Demoted`.
    Sentinel's connections do the same through redis-py (``SentinelManagedConnection``). Costs
    nothing on a reply that is not an error but a Python call."""

    def __init__(self, *args: Any, owner: Any = None, **kwargs: Any) -> None:
        self._owner = owner
        super().__init__(*args, **kwargs)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.exceptions.ReadOnlyError as exc:
            self.disconnect()  # type: ignore[attr-defined]
            pool = self._owner() if self._owner is not None else None
            if pool is not None:
                pool.disconnect(inuse_connections=False)
            raise _demoted(self) from exc


class _AsyncDropsPoolOnReadOnly:
    """The same for ``redis.asyncio``."""

    def __init__(self, *args: Any, owner: Any = None, **kwargs: Any) -> None:
        self._owner = owner
        super().__init__(*args, **kwargs)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.exceptions.ReadOnlyError as exc:
            await self.disconnect()  # type: ignore[attr-defined]
            pool = self._owner() if self._owner is not None else None
            if pool is not None:
                await pool.disconnect(inuse_connections=False)
            raise _demoted(self) from exc


def _failover_class(base: type, mixin: type) -> type:
    return type(base.__name__, (mixin, base), {"__module__": __name__})


FAILOVER_CLASSES = {
    scheme: (
        _failover_class(sync_class, _DropsPoolOnReadOnly),
        _failover_class(async_class, _AsyncDropsPoolOnReadOnly),
    )
    for scheme, (sync_class, async_class) in CONNECTION_CLASSES.items()
}


class AsyncScript:
    """A Lua script on a ``redis.asyncio`` client: ``EVALSHA``, and ``EVAL`` (which loads it
    too) if the server does not know it. Not redis-py's ``SCRIPT LOAD`` then ``EVALSHA``: a
    retry on a new connection after a failover may reach another server between the two."""

    def __init__(self, client: redis.asyncio.Redis, script: str) -> None:
        self.client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()  # Redis's id of it

    async def __call__(self, keys: Any = (), args: Any = ()) -> Any:
        try:
            return await self.client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            # Redis ran nothing: sending it again cannot apply a write twice.
            return await self.client.execute_command("EVAL", self.script, len(keys), *keys, *args)


def close_client(client: redis.Redis) -> None:
    """Close a client :func:`sync_client` built, and its sentinels' connections if any."""
    client.close()
    sentinel = getattr(client.connection_pool, "sentinel_manager", None)
    if sentinel is not None:
        sentinel.close()


def _primary_options(config: StoreSettings) -> dict[str, Any]:
    """What the URL says of the servers under Sentinel, but their address (the sentinels
    give it): the database, a user and password, TLS (``rediss://``), query-string options."""
    options = redis.connection.parse_url(config.url)
    for name in ("host", "port", "path"):
        options.pop(name, None)
    connection_class = options.pop("connection_class", None)
    if connection_class is not None and issubclass(
        connection_class, redis.connection.SSLConnection
    ):
        options["ssl"] = True
    return options


def discover(config: StoreSettings) -> tuple[tuple[str, int], list[tuple[str, int]]]:
    """Ask the sentinels for the service's primary and its live replicas: ``MasterNotFoundError``
    (a ``ConnectionError``) when none of them knows a primary that is up."""
    assert config.sentinels is not None
    sentinel = redis.sentinel.Sentinel(config.sentinels, sentinel_kwargs=config.sentinel_options)
    try:
        primary = sentinel.discover_master(config.service_name)
        replicas = list(sentinel.discover_slaves(config.service_name))
    finally:
        sentinel.close()
    return primary, replicas


def primary_connection(config: StoreSettings, options: dict[str, Any]) -> redis.Connection:
    """One connected connection of its own (no pool) to the URL's server, or under Sentinel to
    the service's primary as the sentinels name it now: the near cache's tracking connections,
    which never reconnect by themselves (a loss of tracking makes a new pair)."""
    if config.sentinels is None:
        pool = redis.ConnectionPool.from_url(
            config.url, **options, connection_class=FAILOVER_CLASSES[_scheme(config.url)][0]
        )
        connection = pool.connection_class(**pool.connection_kwargs)
    else:
        primary = _primary_address(config)
        kwargs = {**_primary_options(config), **options}
        connection_class = FAILOVER_CLASSES["rediss" if kwargs.pop("ssl", False) else "redis"][0]
        connection = connection_class(host=primary[0], port=primary[1], **kwargs)
    connection.connect()
    return connection


def _primary_address(config: StoreSettings) -> tuple[str, int]:
    sentinel = redis.sentinel.Sentinel(config.sentinels, sentinel_kwargs=config.sentinel_options)
    try:
        return sentinel.discover_master(config.service_name)
    finally:
        sentinel.close()


# -- a Redis Cluster node, refused on connect ----------------------------------------------------


class ClusterNode(redis.RedisError):
    """The URL names a node of a Redis Cluster, and ``MEMSESSION_REDIS_CLUSTER`` is not set. Not
    a ``ConnectionError``, so redis-py does not retry it; the store makes it
    ``SessionBackendUnavailable``."""

    def __init__(self, address: str) -> None:
        super().__init__(
            f"the Redis server at {address} is a node of a Redis Cluster (cluster_enabled:1) "
            "and MEMSESSION_REDIS_CLUSTER is not True: set MEMSESSION_REDIS_CLUSTER = True "
            "(the URL may name any node), or point MEMSESSION_REDIS_URL at a standalone Redis "
            "server"
        )


def is_cluster_node(info: Any) -> bool:
    """Whether an ``INFO cluster`` reply says cluster mode is on."""
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    return "cluster_enabled:1" in text


def _refused_in_cluster_mode(exc: redis.ResponseError) -> bool:
    # A cluster node refuses SELECT of a database but 0 during the handshake.
    return "cluster mode" in str(exc)


def _address(connection: Any) -> str:
    path = getattr(connection, "path", None)
    return path if path else f"{connection.host}:{connection.port}"


def _refusing_cluster_nodes(handshake: Callable[[Any], None] | None) -> Callable[[Any], None]:
    """A ``redis_connect_func``: redis-py's handshake (or the one given in the options), then
    ``INFO cluster`` once on the new connection."""

    def connect(connection: Any) -> None:
        try:
            if handshake is None:
                connection.on_connect()
            else:
                handshake(connection)
        except redis.ResponseError as exc:
            if _refused_in_cluster_mode(exc):
                raise ClusterNode(_address(connection)) from exc
            raise
        connection.send_command("INFO", "cluster")
        try:
            info = connection.read_response()
        except redis.ResponseError:
            return  # INFO refused (an ACL): cannot tell; MOVED and CROSSSLOT are 503s too
        if is_cluster_node(info):
            raise ClusterNode(_address(connection))

    return connect


def _async_refusing_cluster_nodes(
    handshake: Callable[[Any], Awaitable[None] | None] | None,
) -> Callable[[Any], Awaitable[None]]:
    """The same for ``redis.asyncio``."""

    async def connect(connection: Any) -> None:
        try:
            if handshake is None:
                await connection.on_connect()
            else:
                done = handshake(connection)
                if inspect.isawaitable(done):
                    await done
        except redis.ResponseError as exc:
            if _refused_in_cluster_mode(exc):
                raise ClusterNode(_address(connection)) from exc
            raise
        await connection.send_command("INFO", "cluster")
        try:
            info = await connection.read_response()
        except redis.ResponseError:
            return
        if is_cluster_node(info):
            raise ClusterNode(_address(connection))

    return connect
