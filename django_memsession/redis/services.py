"""The Redis engine's process services (``SESSION_ENGINE = "django_memsession.redis"``): built on
first use, stopped at exit, started again in a forked child, and kept in step with settings, as
``memory/services.py`` does for the memory engine. The engine gets its store here
(:func:`redis_store`); the surfaces reach the rest through :data:`engine` (see ``engines.py``)
when the Redis engine is the one in use.

No memory store is built: the first use of the Redis store (:func:`redis_store`) starts
:class:`RedisServices`, the control listener (when this process serves, see ``serving.py``; so
the admin page and ``stats()`` reach every process) and a
:class:`~django_memsession.redis.history.History` sampling Redis's figures every
``MEMSESSION_PRUNE_INTERVAL`` seconds. This module, its modules and redis-py are imported only
when the Redis engine is used. Importing it starts nothing.

Fork (gunicorn ``--preload``): a process that forks before it sent a session's round trip is a
master; it stops listening and sampling, and starts them again if it uses the store after all.
The child starts its own services on first use.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from django.core.signals import setting_changed

from .. import conf, serving
from ..exceptions import SnapshotsOff
from ..listener import Listener
from ..logged_in import session_id, user_session
from ..messages import (
    NearCacheStats,
    ProcessReport,
    RedisProcessStats,
    Request,
    Sample,
    SnapshotReport,
    UserSession,
)
from .exceptions import SessionBackendUnavailable
from .history import History
from .info import FiguresUnavailable, read
from .latency import recorder
from .store import RedisStore, get_store, peek_store

__all__ = [
    "RedisEngine",
    "RedisServices",
    "SharedIndex",
    "engine",
    "redis_server_figures",
    "redis_store",
    "report",
    "sample_redis",
    "start_listener",
    "stats",
    "stop_listener",
]

logger = logging.getLogger("django_memsession")


class RedisServices:
    """This process's services on the Redis engine: no store of its own (sessions are in
    Redis), a listener, and the history of Redis's figures."""

    holds_sessions = False  # every process shares Redis: nothing to warn about (serving.Serves)

    def __init__(self, history: History) -> None:
        self.history = history
        self.listener: Listener | None = None
        self.started = False
        self.created_at = time.time()

    def handle(self, request: Request) -> ProcessReport:
        """A report for any command: what the memory engine does per process (prune, snapshot,
        a user's sessions) is not done per process on Redis, and the reply says so."""
        if request.command == "report":
            return self.report()
        return replace(
            self.report(),
            refused=f"{request.command!r} is not done per process on the Redis engine "
            "(sessions are in Redis, not in this process)",
        )

    def report(self) -> ProcessReport:
        figures = recorder.figures()
        return ProcessReport(
            pid=os.getpid(),
            uptime=max(0.0, time.time() - self.created_at),
            stats=None,
            pruner=None,
            history=self.history.samples(),
            redis=RedisProcessStats(
                **figures,
                sample_interval=self.history.interval,
                sample_failures=self.history.failures,
                near=_near_cache_stats(),
            ),
        )

    @property
    def served(self) -> bool:
        """Whether this process sent a session's round trip (not only built the store)."""
        return recorder.round_trips > 0


_services: RedisServices | None = None
# The Redis store's getter once this process's services run: the fast path of redis_store().
_get_store: Callable[[], RedisStore] | None = None
_lock = threading.Lock()
_process_hooks_registered = False


def redis_store() -> RedisStore:
    """The Redis engine's store (``redis.store.get_store()``), this process's services started
    on the first call: what the Redis engine uses."""
    get = _get_store
    if get is None:
        get = _start().get_store
    return get()


class _Started:
    def __init__(self, services: RedisServices, get_store: Callable[[], RedisStore]) -> None:
        self.services = services
        self.get_store = get_store


def _start() -> _Started:
    global _services, _get_store
    with _lock:
        services = _services
        if services is None:
            services = _services = RedisServices(History(_read_sample))
            _register_process_hooks()
        if not services.started:
            services.started = True
            try:
                services.history.start(conf.prune_interval())
            except Exception:
                logger.exception("Session history did not start; sessions still work.")
            if serving.should_listen():
                serving.start_listener(services)
        _get_store = get_store
    return _Started(services, get_store)


def _register_process_hooks() -> None:
    global _process_hooks_registered
    if not _process_hooks_registered:
        _process_hooks_registered = True
        os.register_at_fork(
            after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
        )
        atexit.register(_stop_services)


def _read_sample() -> Sample:
    store = get_store()
    figures = read(store.client, store.prefix)
    return Sample(time=time.time(), entries=figures.sessions, bytes=figures.used_memory)


def redis_server_figures() -> tuple[dict[str, Any] | None, str | None]:
    """Redis's own figures now (see ``redis/info.py``), or None and why Redis did not give
    them: never an exception for an unreachable Redis."""
    try:
        store = redis_store()
        figures = read(store.client, store.prefix)
    except FiguresUnavailable as exc:
        return None, str(exc)
    except Exception as exc:  # the store could not be built (bad settings): say what
        return None, f"{type(exc).__name__}: {exc}"
    return {**asdict(figures), "used_percent": figures.used_percent}, None


def sample_redis() -> bool:
    """Take one sample of Redis's figures for the history now (the thread takes one every
    ``MEMSESSION_PRUNE_INTERVAL`` seconds); whether Redis gave it."""
    return _start().services.history.sample()


def _near_cache_stats() -> NearCacheStats | None:
    """This process's near cache figures, if its Redis store is built and has one (never builds
    it: a report must not open connections)."""
    if _get_store is None:
        return None
    store = peek_store()
    if store is None or store.near is None:
        return None
    figures = store.stats()
    near = figures["near_cache"]
    return NearCacheStats(
        l1_hits=figures["l1_hits"],
        l2_hits=figures["l2_hits"],
        misses=figures["misses"],
        invalidations=figures["invalidations"],
        flushes=near["flushes"],
        tracking=bool(near["tracking"]),
        tracking_losses=near["tracking_losses"],
        entries=near["entries"],
        bytes=near["bytes"],
        max_bytes=near["max_bytes"],
        evictions=near["evictions"],
    )


# -- the public API's Redis side (see engines.py) ------------------------------------------------


def stats() -> dict[str, Any]:
    """``django_memsession.stats()`` on the Redis engine."""
    services = _start().services
    # (with a near cache, "near" holds its figures: L1 and L2 hits, misses, invalidations)
    process = asdict(services.report().redis)  # type: ignore[arg-type]
    server, problem = redis_server_figures()
    return {"engine": "redis", "pid": os.getpid(), **process, "redis": server, "problem": problem}


def report() -> ProcessReport:
    """This process's picture on the Redis engine: its figures and Redis's history."""
    return _start().services.report()


def start_listener() -> Listener | None:
    """Listen for this process now (idempotent), its services started if need be."""
    services = _start().services
    with _lock:
        return serving.start_listener(services)


def stop_listener() -> None:
    serving.close_listener(_services)


def local_handler() -> Callable[[Request], ProcessReport] | None:
    """What answers this process's own part of a fan-out: its services, once built."""
    services = _services
    return services.handle if services is not None else None


class SharedIndex:
    """The Redis engine's user index: one index in Redis for every process (``redis/users.py``),
    read and changed there in a round trip or two, with no fan-out. Records carry ``pid`` 0 (the
    sessions are in Redis, not in a process)."""

    sender = RedisStore

    def sessions(self, uid: str) -> list[UserSession]:
        return [user_session(row, 0) for row in get_store().user_sessions(uid)]

    def end(self, uid: str, *, session_id_: str | None = None, keep: str | None = None) -> int:
        store = get_store()
        if session_id_ is None:
            # Every member, not only the live ones listed: a login between its two steps (its
            # member written, its record not yet) is ended too (see steps.py).
            found = store.index.member_keys(uid)
        else:
            found = [row.key for row in store.user_sessions(uid)]
        keys = [
            key
            for key in found
            if (session_id(key) == session_id_ if session_id_ is not None else True)
            and (keep is None or session_id(key) != keep)
        ]
        return int(store.end_sessions(uid, keys)) if keys else 0

    def end_in_background(self, uid: str, keep: str | None, done: Any) -> threading.Thread | None:
        """No peers to wait for: two round trips to Redis, each bounded by its socket timeout.
        When Redis cannot answer, the request goes on (the password is already changed, and
        Django rejects the other sessions when they come back): logged, nothing ended."""
        try:
            count = self.end(uid, keep=keep)
        except SessionBackendUnavailable as exc:
            logger.warning(
                "end_user_sessions: Redis could not be reached (%s); the other sessions of "
                "user %s stay in Redis until they come back (then Django rejects them) or "
                "expire.",
                exc.reason,
                uid,
            )
            return None
        done(count)
        return None


class RedisEngine:
    """The Redis engine's services behind the seam (see ``engines.Engine``)."""

    name = "redis"
    shared = True  # every process shares the sessions in Redis

    stats = staticmethod(stats)
    report = staticmethod(report)
    local_handler = staticmethod(local_handler)
    start_listener = staticmethod(start_listener)
    stop_listener = staticmethod(stop_listener)
    server_figures = staticmethod(redis_server_figures)

    def snapshot(self) -> SnapshotReport:
        raise SnapshotsOff("the Redis engine keeps no snapshots (sessions are in Redis)")

    def prune_shared(self, *, dry_run: bool = False) -> Any:
        """One pass over the user index (Redis expires the sessions themselves); an
        ``IndexPrune``."""
        return get_store().prune_index(dry_run=dry_run)

    def index(self) -> SharedIndex:
        return SharedIndex()


engine = RedisEngine()


# -- process events -----------------------------------------------------------------------------


def _stop_services() -> None:
    """The shutdown path (``atexit``): stop serving the channel and sampling."""
    serving.close_listener(_services)
    if _services is not None:
        _services.history.stop(timeout=1.0)


def _after_fork_in_parent() -> None:
    """As for a memory store: a process that forks before it served is a master, and stops
    listening (and sampling) until it uses the store itself."""
    global _get_store
    services = _services
    if services is None or not services.started or services.served:
        return
    _get_store = None
    services.started = False
    serving.close_listener(services, wait=False)
    services.history.stop(timeout=0)


def _after_fork_in_child() -> None:
    """The child starts its own services on first use: the parent's listener is the
    parent's, its sampler thread does not exist here (and its lock may have been held)."""
    global _services, _get_store, _lock
    _lock = threading.Lock()
    services = _services
    _services = None
    _get_store = None
    serving.close_listener(services, unlink=False)


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    """``override_settings(MEMSESSION_*=...)`` takes effect on the live services."""
    services = _services
    if services is None or not setting.startswith("MEMSESSION_") or conf.problems():
        return
    if not services.started:
        return
    if setting == "MEMSESSION_PRUNE_INTERVAL":
        services.history.start(conf.prune_interval())
    if setting in ("MEMSESSION_CONTROL", "MEMSESSION_CONTROL_DIR"):
        serving.listen_again(services, _lock)


setting_changed.connect(_settings_changed, dispatch_uid="django_memsession.redis.services")
