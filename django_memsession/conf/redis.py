"""The Redis engine's settings (``SESSION_ENGINE = "django_memsession.redis"``), their defaults
and their validation.

The same :func:`problems` feed the system checks (at startup) and :func:`store_settings` (when the
store is first built), so a server that never runs checks fails with the same message instead of
misbehaving later. :func:`url_problem` checks a Redis URL for them and for every command that
takes one. Importing this module does not import redis-py (the system checks import it whichever
engine runs); what only redis-py can tell (the option names it takes, see ``redis/client.py``) is
asked, when redis is installed, inside the functions that need it.

Named ``redis.py`` like the engine it configures; ``import redis`` anywhere is absolute and finds
redis-py, never this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..sizing import parse_size
from .base import (
    DEFAULT_MAX_SESSION_SIZE,
    MAX_SESSION_SIZE_EXAMPLE,
    BaseSettings,
    DictSetting,
    Problem,
    Setting,
    _is_number,
    per_user_problems,
    raise_any,
    shared,
    size_problem,
)
from .memory import DEFAULT_LOW_WATER, MAX_SESSION_SHARE, MIN_MAX_SIZE

DEFAULT_PREFIX = "memsession:"
# One hour: long enough for a visitor's first visit to come back for a second page (which
# promotes the session to its full age), short enough that a flood of one-shot sessions leaves
# Redis within the hour and, under volatile-ttl, is evicted before anything a real user holds.
DEFAULT_PROBATION_AGE = 3600
# The smallest near cache: the memory engine's smallest MEMSESSION_MAX_SIZE (E008), below which
# its tables and the remembered keys' slice leave too little room for sessions.
MIN_NEAR_CACHE_SIZE = MIN_MAX_SIZE
# The near cache is a memory store: emptied down to the memory engine's default low-water mark,
# and a session larger than its share of it (1/8) is not kept there.
NEAR_CACHE_LOW_WATER = DEFAULT_LOW_WATER
NEAR_CACHE_SESSION_SHARE = MAX_SESSION_SHARE

# Connection-pool options for a web request. redis-py's own defaults (5 s timeouts, three
# retries with backoff, also on timeouts) let a hung Redis hold a request for 20 s or more; these
# fail a request within about 1 s per Redis call. The retry policy (one retry, on a dropped
# connection only, never after a timeout) is set in ``redis/store.py``, unless OPTIONS gives
# "retry".
DEFAULT_OPTIONS: dict[str, Any] = {
    "socket_timeout": 1.0,
    "socket_connect_timeout": 1.0,
    "socket_keepalive": True,
    "health_check_interval": 0,
}

# On a Redis Cluster, the same but health_check_interval, which redis-py's RedisCluster
# clients do not take (they never health-check a connection: the default here, 0, says so).
CLUSTER_OPTIONS = {
    name: value for name, value in DEFAULT_OPTIONS.items() if name != "health_check_interval"
}

URL_SCHEMES = ("redis", "rediss", "unix")
URL_EXAMPLE = (
    "e.g. redis://127.0.0.1:6379/0 (a host, a port from 1 to 65535, a database number), "
    "rediss:// for TLS, or unix:///path/redis.sock?db=0"
)
DIGITS = re.compile(r"[0-9]+")

# The sentinels' connections (MEMSESSION_REDIS_SENTINEL_OPTIONS goes over these): a sentinel that
# hangs costs a discovery at most this long before the next one is asked.
DEFAULT_SENTINEL_OPTIONS: dict[str, Any] = {
    "socket_timeout": 1.0,
    "socket_connect_timeout": 1.0,
}
SENTINELS_EXAMPLE = (
    'e.g. MEMSESSION_REDIS_SENTINELS = [("10.0.0.1", 26379), ("10.0.0.2", 26379), '
    '("10.0.0.3", 26379)]'
)
# Waiting for replicas after a logout or a login (redis/replicas.py): every connected replica,
# for at most half a second.
DEFAULT_WAIT_REPLICAS = "connected"
DEFAULT_WAIT_TIMEOUT = 0.5


class RedisSettings(BaseSettings):
    """Shadows Django's settings: each ``MEMSESSION_REDIS_*`` setting with its default, read at
    every access. The settings both engines read (``MEMSESSION_MAX_SESSION_SIZE``...) are on
    ``base.shared``; ``MAX_SESSION_SIZE`` is here too, as the store reads it."""

    setting_prefix = "MEMSESSION_REDIS_"

    URL = Setting(None)
    PREFIX = Setting(DEFAULT_PREFIX)
    OPTIONS = DictSetting({})
    PROBATION_AGE = Setting(DEFAULT_PROBATION_AGE)
    NEAR_CACHE = Setting(None)
    SENTINELS = Setting(None)
    SENTINEL_OPTIONS = DictSetting({})
    # A Redis Cluster (redis-py's RedisCluster): the URL names any one of its nodes.
    CLUSTER = Setting(False)
    # Waiting for replicas (redis/replicas.py): a block of its own.
    WAIT_REPLICAS = Setting(DEFAULT_WAIT_REPLICAS)
    WAIT_TIMEOUT = Setting(DEFAULT_WAIT_TIMEOUT)

    @property
    def MAX_SESSION_SIZE(self) -> Any:
        # The memory engine's setting, with the same meaning: the largest one session may be.
        return shared.MAX_SESSION_SIZE


conf = RedisSettings()


@dataclass(frozen=True)
class StoreSettings:
    """What the store is built from: validated, with the defaults filled in."""

    url: str
    prefix: str
    options: dict[str, Any]
    probation_age: float
    max_session_bytes: int
    # MEMSESSION_MAX_SESSIONS_PER_USER (validated by memsession.E014): enforced by the user index.
    max_sessions_per_user: int | None = None
    # The near cache's budget in bytes (a memory store in front of Redis); None: no near cache.
    near_cache_bytes: int | None = None
    # MEMSESSION_REDIS_SENTINELS as (host, port) tuples: None, no Sentinel (the URL names the
    # server); else the URL's host names the service the sentinels monitor.
    sentinels: tuple[tuple[str, int], ...] | None = None
    # The sentinels' connection options (DEFAULT_SENTINEL_OPTIONS under the setting's).
    sentinel_options: dict[str, Any] | None = None
    # MEMSESSION_REDIS_CLUSTER: the URL names one node of a Redis Cluster (redis-py's
    # RedisCluster finds the others); False, a standalone server (or Sentinel's primary).
    cluster: bool = False

    @property
    def service_name(self) -> str | None:
        """The monitored service's name (the URL's host) under Sentinel; None without."""
        return urlsplit(self.url).hostname if self.sentinels is not None else None

    # Waiting for replicas: MEMSESSION_REDIS_WAIT_REPLICAS ("connected", a number, 0 for never)
    # and MEMSESSION_REDIS_WAIT_TIMEOUT (seconds).
    wait_replicas: str | int = DEFAULT_WAIT_REPLICAS
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def problems() -> list[Problem]:
    """Every problem with the current ``MEMSESSION_REDIS_*`` settings; empty when all is well."""
    found: list[Problem] = []
    url = conf.URL
    if url is None:
        found.append(
            Problem(
                "memsession.E101",
                "MEMSESSION_REDIS_URL is not set; SESSION_ENGINE = 'django_memsession.redis' "
                "needs it.",
                "Write the Redis server's URL, e.g. MEMSESSION_REDIS_URL = "
                "'redis://127.0.0.1:6379/0' (also rediss:// for TLS, unix:///path/redis.sock).",
            )
        )
    else:
        wrong = url_problem(url)
        # Under Sentinel (E113) and on a cluster (E116) a URL with no host says so in their terms.
        excused = conf.SENTINELS is not None or conf.CLUSTER is True
        if wrong is not None and not (excused and _names_no_service(url)):
            shown = redacted(url) if isinstance(url, str) else repr(url)
            found.append(
                Problem(
                    "memsession.E101",
                    f"MEMSESSION_REDIS_URL = {shown!r} is not a Redis URL: {wrong}.",
                    f"Write the Redis server's URL, {URL_EXAMPLE}.",
                )
            )
    if not isinstance(conf.PREFIX, str):
        found.append(
            Problem(
                "memsession.E102",
                f"MEMSESSION_REDIS_PREFIX = {conf.PREFIX!r} is not a string.",
                f"Write a string that no other user of this Redis database starts its keys "
                f"with, e.g. the default {DEFAULT_PREFIX!r}.",
            )
        )
    options = conf.OPTIONS
    if not (isinstance(options, dict) and all(isinstance(name, str) for name in options)):
        found.append(
            Problem(
                "memsession.E103",
                f"MEMSESSION_REDIS_OPTIONS = {options!r} is not a dict of redis-py "
                "connection-pool options.",
                "Write a dict, e.g. MEMSESSION_REDIS_OPTIONS = {'max_connections': 50, "
                "'socket_timeout': 1.0}; {} keeps the defaults.",
            )
        )
    else:
        found.extend(_option_name_problems(options, url))
        found.extend(
            _timeout_problems(
                "memsession.E104", "MEMSESSION_REDIS_OPTIONS", options, DEFAULT_OPTIONS, "a Redis"
            )
        )
    age = conf.PROBATION_AGE
    if not (_is_number(age) and age > 0):
        found.append(
            Problem(
                "memsession.E105",
                f"MEMSESSION_REDIS_PROBATION_AGE = {age!r} is not a positive number of seconds.",
                "Write how long a new anonymous session lives until it comes back, e.g. "
                f"MEMSESSION_REDIS_PROBATION_AGE = {DEFAULT_PROBATION_AGE} (an hour).",
            )
        )
    size = conf.MAX_SESSION_SIZE
    if size is not None:
        found += size_problem(
            "MAX_SESSION_SIZE", size, "memsession.E106", MAX_SESSION_SIZE_EXAMPLE
        )[1]
    found.extend(sentinel_problems(url))
    found.extend(cluster_problems(url))
    near = conf.NEAR_CACHE
    if near is not None:
        near_bytes, problems = size_problem(
            "REDIS_NEAR_CACHE",
            near,
            "memsession.E108",
            "MEMSESSION_REDIS_NEAR_CACHE = '16M', or None for no near cache.",
        )
        found += problems
        if near_bytes is not None and near_bytes < MIN_NEAR_CACHE_SIZE:
            found.append(
                Problem(
                    "memsession.E108",
                    f"MEMSESSION_REDIS_NEAR_CACHE = {near!r} is smaller than "
                    f"{MIN_NEAR_CACHE_SIZE // 1024} KiB.",
                    f"Give the near cache at least '{MIN_NEAR_CACHE_SIZE // 1024}K' (e.g. "
                    "'16M'), or None for no near cache.",
                )
            )
    found += wait_problems()
    return found


def wait_problems() -> list[Problem]:
    """MEMSESSION_REDIS_WAIT_REPLICAS and MEMSESSION_REDIS_WAIT_TIMEOUT (E120, E121)."""
    found: list[Problem] = []
    replicas = conf.WAIT_REPLICAS
    if not (
        replicas == "connected"
        or (isinstance(replicas, int) and not isinstance(replicas, bool) and replicas >= 0)
    ):
        found.append(
            Problem(
                "memsession.E120",
                f"MEMSESSION_REDIS_WAIT_REPLICAS = {replicas!r} is neither 'connected' nor a "
                "whole number of replicas (0 or more).",
                "Write 'connected' (the default: every replica connected to the primary), a "
                "number of replicas, or 0 never to wait for replicas.",
            )
        )
    timeout = conf.WAIT_TIMEOUT
    if not (_is_number(timeout) and timeout > 0):
        found.append(
            Problem(
                "memsession.E121",
                f"MEMSESSION_REDIS_WAIT_TIMEOUT = {timeout!r} is not a positive number of seconds.",
                f"Write how long a logout waits for replicas, e.g. {DEFAULT_WAIT_TIMEOUT} (the "
                "default).",
            )
        )
    return found


CLUSTER_URL_EXAMPLE = "e.g. MEMSESSION_REDIS_URL = 'redis://10.0.0.1:6379/0'"


def cluster_problems(url: object = None) -> list[Problem]:
    """``MEMSESSION_REDIS_CLUSTER`` (E116): True or False; True with no Sentinel, and a URL
    naming one node over TCP (a host, database 0)."""
    cluster = conf.CLUSTER
    if not isinstance(cluster, bool):
        return [
            Problem(
                "memsession.E116",
                f"MEMSESSION_REDIS_CLUSTER = {cluster!r} is not True or False.",
                "Write True when MEMSESSION_REDIS_URL names a node of a Redis Cluster, False "
                "(the default) for a standalone Redis server or Sentinel.",
            )
        ]
    if not cluster:
        return []
    found: list[Problem] = []
    if conf.SENTINELS is not None:
        found.append(
            Problem(
                "memsession.E116",
                "MEMSESSION_REDIS_CLUSTER = True and MEMSESSION_REDIS_SENTINELS are both set: "
                "a Redis Cluster fails over by itself and has no sentinels.",
                "For a Redis Cluster remove MEMSESSION_REDIS_SENTINELS and write one node's "
                f"address as the URL, {CLUSTER_URL_EXAMPLE}; for Sentinel remove "
                "MEMSESSION_REDIS_CLUSTER.",
            )
        )
    elif _names_no_service(url):
        found.append(
            Problem(
                "memsession.E116",
                "MEMSESSION_REDIS_CLUSTER = True, and MEMSESSION_REDIS_URL names no node of "
                "it (a unix:// URL, or no host): a Redis Cluster is reached over TCP, at the "
                "addresses its nodes give each other.",
                f"Write one node's host and port, {CLUSTER_URL_EXAMPLE} (rediss:// for TLS); "
                "the client finds the other nodes from it.",
            )
        )
    elif isinstance(url, str) and url_problem(url) is None and _database(url) not in (None, 0):
        found.append(
            Problem(
                "memsession.E116",
                "MEMSESSION_REDIS_CLUSTER = True, and MEMSESSION_REDIS_URL names a database "
                "other than 0: a Redis Cluster has database 0 only.",
                f"Write /0 (or nothing) as the URL's path, {CLUSTER_URL_EXAMPLE}; "
                "MEMSESSION_REDIS_PREFIX keeps the sessions' keys apart from others.",
            )
        )
    if conf.NEAR_CACHE is not None:
        # Its tracking would be registered on one node only: copies of the sessions the other
        # primaries hold would never be invalidated, and a logout served by another worker
        # could be undone by a stale copy.
        found.append(
            Problem(
                "memsession.E119",
                "MEMSESSION_REDIS_NEAR_CACHE is set with MEMSESSION_REDIS_CLUSTER = True: the "
                "near cache does not work on a Redis Cluster yet (its invalidations would come "
                "from one node only, and a stale copy could undo a logout).",
                "Remove MEMSESSION_REDIS_NEAR_CACHE (or set it to None) on a Redis Cluster.",
            )
        )
    return found


def _database(url: str) -> int | None:
    """The database number a valid URL names (the path, or ``?db=``, which wins), or None."""
    parts = urlsplit(url)
    named = parse_qs(parts.query).get("db") or [parts.path.strip("/")]
    return int(named[-1]) if named[-1] else None


def sentinel_problems(url: object = None) -> list[Problem]:
    """``MEMSESSION_REDIS_SENTINELS`` and ``MEMSESSION_REDIS_SENTINEL_OPTIONS``, and what
    Sentinel asks of the URL (a service name for its host, no socket)."""
    sentinels = conf.SENTINELS
    found: list[Problem] = []
    options = conf.SENTINEL_OPTIONS
    if sentinels is None:
        return found
    if not (
        isinstance(sentinels, (list, tuple))
        and sentinels
        and all(isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in sentinels)
    ):
        found.append(
            Problem(
                "memsession.E111",
                f"MEMSESSION_REDIS_SENTINELS = {sentinels!r} is not a list of (host, port) pairs.",
                f"Write each sentinel's address as a pair, {SENTINELS_EXAMPLE}; None (the "
                "default) for no Sentinel.",
            )
        )
    else:
        for host, port in sentinels:
            if not (isinstance(host, str) and host.strip()):
                wrong = "its host is not a non-empty string"
            elif not (isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535):
                wrong = "its port is not a number from 1 to 65535"
            else:
                continue
            found.append(
                Problem(
                    "memsession.E112",
                    f"MEMSESSION_REDIS_SENTINELS names the sentinel {(host, port)!r}: {wrong}.",
                    f"Write a host name or address and a port (26379 by default), "
                    f"{SENTINELS_EXAMPLE}.",
                )
            )
    if _names_no_service(url):
        found.append(
            Problem(
                "memsession.E113",
                "MEMSESSION_REDIS_SENTINELS is set, and MEMSESSION_REDIS_URL names no "
                "service: under Sentinel its host is the name of the service the sentinels "
                "monitor.",
                "Write the service's name (sentinel monitor <name> ... in sentinel.conf) as "
                "the URL's host, e.g. MEMSESSION_REDIS_URL = 'redis://mymaster/0' "
                "(rediss:// for TLS to the servers; the sentinels' own options in "
                "MEMSESSION_REDIS_SENTINEL_OPTIONS).",
            )
        )
    if not (isinstance(options, dict) and all(isinstance(name, str) for name in options)):
        found.append(
            Problem(
                "memsession.E114",
                f"MEMSESSION_REDIS_SENTINEL_OPTIONS = {options!r} is not a dict of redis-py "
                "connection options.",
                "Write a dict, e.g. {'password': '...', 'socket_timeout': 0.5}; {} keeps the "
                "defaults.",
            )
        )
        return found
    try:
        from ..redis.client import accepted_text, refused_sentinel_options
    except ImportError:  # no redis-py: the engine says so when it is built
        refused: list[str] = []
    else:
        refused = refused_sentinel_options(list(options))
    if refused:
        found.append(
            Problem(
                "memsession.E114",
                "MEMSESSION_REDIS_SENTINEL_OPTIONS names what redis-py's connections to the "
                f"sentinels do not take: {', '.join(refused)}.",
                f"Remove them. {accepted_text(None)} (and 'ssl', 'username', 'password').",
            )
        )
    found.extend(
        _timeout_problems(
            "memsession.E114",
            "MEMSESSION_REDIS_SENTINEL_OPTIONS",
            options,
            DEFAULT_SENTINEL_OPTIONS,
            "a sentinel",
        )
    )
    return found


def _names_no_service(url: object) -> bool:
    """Whether a URL of a Redis scheme has no host to name Sentinel's service (a unix:// URL,
    ``redis:///0``)."""
    if not isinstance(url, str):
        return False
    scheme = url.partition("://")[0].lower()
    if scheme not in URL_SCHEMES:
        return False
    try:
        return scheme == "unix" or not urlsplit(url).hostname
    except ValueError:
        return False


def url_problem(url: object) -> str | None:
    """What is wrong with a Redis URL, as a clause ("its port is not a number from 1 to 65535"),
    or None if redis-py can connect with it: a redis://, rediss:// or unix:// scheme; for TCP a
    host, a port from 1 to 65535 and a database number (the path, or ``?db=``) that is a whole
    number; for a socket, its path. The clause never quotes a part of the URL, which could be a
    misplaced password."""
    if not isinstance(url, str):
        return "it is not a string"
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in URL_SCHEMES:
        return "it does not start with redis://, rediss:// or unix://"
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
    except ValueError:
        return "it cannot be read as a URL (a stray '[', ']' or '@'?)"
    if scheme == "unix":
        if not parts.path:
            return "it names no socket: write unix:///path/redis.sock"
    else:
        if not parts.hostname:
            return "it names no host"
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port is not None and not 1 <= port <= 65535:
            return "its port is not a number from 1 to 65535"
        database = parts.path.strip("/")
        if database and not DIGITS.fullmatch(database):
            return "its database number (the path) is not a whole number: write /0, /1 ..."
    for database in query.get("db", []):
        if not DIGITS.fullmatch(database):
            return "its ?db= is not a whole number"
    try:
        from ..redis.client import from_url_problem
    except ImportError:  # no redis-py: the shape is all that can be checked
        return None
    return from_url_problem(url)


def _option_name_problems(options: dict[str, Any], url: object) -> list[Problem]:
    """MEMSESSION_REDIS_OPTIONS names that redis-py (or the engine) would not take."""
    try:
        from ..redis.client import accepted_text, refused_options
    except ImportError:  # no redis-py: the engine says so when it is built
        return []
    # Checked for the URL's scheme (ssl_* only with rediss://); with no URL to tell (not set yet,
    # as before exportsessions), for whichever scheme takes the name.
    scheme: str | None = url.partition("://")[0].lower() if isinstance(url, str) else None
    scheme = scheme if scheme in URL_SCHEMES else None
    cluster = conf.CLUSTER is True
    refused = refused_options(list(options), scheme, cluster=cluster)
    if not refused:
        return []
    return [
        Problem(
            "memsession.E109",
            f"MEMSESSION_REDIS_OPTIONS names what the engine cannot pass to redis-py: "
            f"{', '.join(refused)}.",
            f"Remove them. {accepted_text(scheme, cluster=cluster)}",
        )
    ]


def max_session_bytes() -> int:
    """The largest one session may be on Redis. Assumes :func:`problems` found nothing."""
    size = conf.MAX_SESSION_SIZE
    return DEFAULT_MAX_SESSION_SIZE if size is None else parse_size(size)


def pool_options() -> dict[str, Any]:
    """The connection-pool options: ``DEFAULT_OPTIONS`` (on a cluster, ``CLUSTER_OPTIONS``)
    under ``MEMSESSION_REDIS_OPTIONS``."""
    return {**(CLUSTER_OPTIONS if conf.CLUSTER is True else DEFAULT_OPTIONS), **conf.OPTIONS}


def store_settings() -> StoreSettings:
    """The validated settings; ``ImproperlyConfigured`` with the system check's text otherwise.

    ``MEMSESSION_MAX_SESSIONS_PER_USER`` is validated here too (E014, the system check's text):
    its system check is the memory engine's list, which runs for both engines."""
    raise_any(problems() + per_user_problems())
    return StoreSettings(
        url=conf.URL,
        prefix=conf.PREFIX,
        options=pool_options(),
        probation_age=float(conf.PROBATION_AGE),
        max_session_bytes=max_session_bytes(),
        max_sessions_per_user=shared.MAX_SESSIONS_PER_USER,
        near_cache_bytes=None if conf.NEAR_CACHE is None else parse_size(conf.NEAR_CACHE),
        **sentinel_settings(),
        cluster=conf.CLUSTER is True,
        wait_replicas=conf.WAIT_REPLICAS,
        wait_timeout=float(conf.WAIT_TIMEOUT),
    )


def sentinel_settings() -> dict[str, Any]:
    """``StoreSettings``' Sentinel fields from the settings (for every store built from them:
    the engine's, ``exportsessions``'s). Assumes :func:`problems` found nothing."""
    sentinels = conf.SENTINELS
    return {
        "sentinels": (
            None if sentinels is None else tuple((host, int(port)) for host, port in sentinels)
        ),
        "sentinel_options": {**DEFAULT_SENTINEL_OPTIONS, **conf.SENTINEL_OPTIONS},
    }


def _timeout_problems(
    check: str, setting: str, options: dict[str, Any], defaults: dict[str, Any], server: str
) -> list[Problem]:
    """The socket timeouts in ``options`` (or their defaults) that are not a positive number of
    seconds: one each, with ``check``'s id."""
    return [
        Problem(
            check,
            f"{setting}[{name!r}] = {value!r} is not a number of seconds: {server} that hangs "
            "would hold every request forever.",
            f"Write a number of seconds, e.g. {name!r}: 1.0 (the default).",
        )
        for name in ("socket_timeout", "socket_connect_timeout")
        if not (_is_number(value := options.get(name, defaults[name])) and value > 0)
    ]
