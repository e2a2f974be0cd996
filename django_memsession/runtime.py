"""The composition root: this process's services, built on first use, stopped at exit, started
again in a forked child, and kept in step with settings. Nothing else in the package imports it
but the public API (the engine, the package's functions, the admin page and the commands).

The services, built in this order the first time anything uses the store (normally the first
request that touches a session; ``stats()`` too):

1. the :class:`~django_memsession.store.MemoryStore`, from the validated settings, reporting
   through an :class:`~django_memsession.events.EventReporter`;
2. its :class:`~django_memsession.pruner.Pruner` (the thread runs when
   ``MEMSESSION_PRUNE_INTERVAL`` is not 0);
3. its :class:`~django_memsession.listener.Listener` on the control socket, when this process
   serves requests (not a management command other than ``runserver``; not a test run, which the
   package's pytest plugin says with :func:`set_listening`).

With ``MEMSESSION_SNAPSHOT_PATH``, a :class:`~django_memsession.snapshotter.Snapshotter` comes
between 1 and 2: it restores the snapshot into the store before anything else can use it, and
writes it on its schedule, on demand, and at exit (``atexit``, and a SIGTERM handler where the
process has none of its own).

On the Redis engine (``SESSION_ENGINE = "django_memsession.redis"``) no memory store is built:
the first use of the Redis store (:func:`redis_store`) starts :class:`RedisServices`, the
listener (as above, so the admin page and ``stats()`` reach every process) and a
:class:`~django_memsession.redis.history.History` sampling Redis's figures every
``MEMSESSION_PRUNE_INTERVAL`` seconds. Its modules (and redis-py) are imported only then.

Each is handed what it uses; none of them imports another. Importing this module starts nothing,
so ``migrate``, ``shell``, ``check`` and runserver's autoreloader parent start nothing.

Fork (gunicorn ``--preload``): before a fork the store's lock is taken (with a timeout, so a
thread stuck holding it cannot hang the parent), paired per forking thread; the child gets fresh
locks and starts its own pruner and listener on first use. A parent that forks stops its pruner
and listener: a process that forks workers (gunicorn's master, with an app that touched the store
at import) does not serve, so it must not answer for sessions or count as a process holding them;
it starts them again if it uses the store after all.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.signals import setting_changed

from . import conf, control, mirror
from .events import EventReporter
from .export import ExportRun
from .listener import Listener
from .logged_in import end_local, local_sessions
from .messages import (
    SESSIONS_PAGE,
    Gathered,
    NearCacheStats,
    PassReport,
    ProcessReport,
    RedisProcessStats,
    Request,
    Sample,
    SnapshotReport,
    StoreStats,
    from_dict,
    split_warning,
)
from .pruner import Pruner
from .serializers import current_codec
from .snapshotter import NotOwner, Snapshotter
from .store import NOT_JOURNALED, MemoryStore

if TYPE_CHECKING:
    from .redis.history import History
    from .redis.store import RedisStore

__all__ = [
    "clear",
    "gather",
    "get_store",
    "peek_store",
    "prune",
    "prune_everywhere",
    "redis_engine",
    "redis_server_figures",
    "redis_store",
    "report",
    "sample_redis",
    "set_listening",
    "snapshot",
    "start_listener",
    "start_pruner",
    "stats",
    "stop_listener",
    "stop_pruner",
]

logger = logging.getLogger("django_memsession")

# Management commands that serve requests, and so hold a live store worth reaching.
SERVING_COMMANDS = frozenset({"runserver", "runserver_plus"})

REDIS_ENGINE = "django_memsession.redis"


class Services:
    """This process's store and the services built around it."""

    def __init__(
        self, store: MemoryStore, events: EventReporter, snapshot_path: str | None
    ) -> None:
        self.store = store
        self.events = events
        self.pruner = Pruner(store)
        self.listener: Listener | None = None
        self.snapshotter: Snapshotter | None = None
        if snapshot_path is not None:
            self.snapshotter = Snapshotter(store, Path(snapshot_path))
            self.snapshotter.user_of_payload = user_of_payload
            store.on_journal = self.snapshotter.journal_write
        self.started = False
        self.restored = False  # the snapshot is restored once per process, on first use
        self.mirror: mirror.Mirror | None = None
        self.export: ExportRun | None = None
        self._mirror_lock = threading.Lock()

    def handle(self, request: Request) -> ProcessReport:
        """What this process answers on the control channel (and to its own fan-outs). A
        listener never fans out: a prune or a snapshot is of this process's store only."""
        export = self.export
        if export is not None and export.idle:
            self.export = None  # a run its command abandoned
        if request.command == "mirror":
            return self.report(refused=self.sync_mirror())
        if request.command == "export":
            return self.export_page(request)
        if request.command == "prune":
            return self.report(self.pruner.run_pass(dry_run=request.dry_run))
        if request.command == "snapshot":
            try:
                return self.report(written=self.write_snapshot("on demand"))
            except (NotOwner, OSError, SnapshotsOff) as exc:
                return self.report(refused=str(exc))
        if request.command == "sessions" and request.user is not None:
            found = local_sessions(self.store, request.user)
            page = found[request.offset : request.offset + SESSIONS_PAGE]
            return replace(self.report(), sessions=page, sessions_total=len(found))
        if request.command == "end" and request.user is not None:
            ended = end_local(
                self.store, request.user, session_id_=request.session_id, keep=request.keep
            )
            return replace(self.report(), ended=ended)
        return self.report()

    def sync_mirror(self) -> str | None:
        """Mirror this process's writes and deletes to Redis while the marker file says so
        (see mirror.py); why not, when it should and cannot."""
        try:
            url = mirror.read_marker()
        except mirror.MarkerError as exc:
            return str(exc)
        with self._mirror_lock:
            current = self.mirror
            if current is not None and current.url == url and current.alive:
                return None
            started = None
            if url is not None:
                from .redis.conf import redacted

                started = mirror.Mirror(url, redacted(url))
                started.start()
            # One attribute swap: the next write, under the store's lock, goes to the new one.
            self.store.on_mirror = started.note if started is not None else None
            self.mirror = started
        if current is not None:
            current.stop()  # sends what it queued before the swap
        return None

    def stop_mirror(self, timeout: float = mirror.DRAIN_TIMEOUT) -> None:
        with self._mirror_lock:
            current, self.mirror = self.mirror, None
            self.store.on_mirror = None
        if current is not None:
            current.stop(timeout)

    def export_page(self, request: Request) -> ProcessReport:
        """A page of this process's live sessions for ``exportsessions`` (see export.py)."""
        if not request.dry_run and (self.mirror is None or not self.mirror.alive):
            return self.report(
                refused="mirroring to Redis is not on in this process, so sessions changed "
                "during the export could be lost; exportsessions turns it on first"
            )
        export = self.export
        if export is None or export.run != request.run:
            if request.offset != 0 or request.run is None:
                return self.report(
                    refused="this export run was replaced or abandoned; run exportsessions again"
                )
            export = self.export = ExportRun(request.run, self.store)
        page = export.page(request.offset)
        if request.offset + len(page) >= export.total:
            self.export = None  # the last page: the copy is let go
        return replace(self.report(), exported=page, export_total=export.total)

    def write_snapshot(self, reason: str) -> SnapshotReport:
        if self.snapshotter is None:
            if conf.snapshot_path() is None:
                raise SnapshotsOff("snapshots are off (MEMSESSION_SNAPSHOT_PATH is not set)")
            raise SnapshotsOff(
                "this process does not serve requests (a management command, a test run), so "
                "it owns no snapshot; manage.py snapshotsessions asks the servers to write theirs"
            )
        return self.snapshotter.write(reason)

    def report(
        self,
        result: PassReport | None = None,
        *,
        written: SnapshotReport | None = None,
        refused: str | None = None,
    ) -> ProcessReport:
        store = self.store
        stats = from_dict(StoreStats, store.stats())
        return ProcessReport(
            pid=os.getpid(),
            uptime=max(0.0, store.clock() - store.created_at),
            stats=stats,
            pruner=self.pruner.state(),
            history=self.pruner.history(),
            result=result,
            snapshot=self.snapshotter.state() if self.snapshotter is not None else None,
            written=written,
            refused=refused,
            mirror=self.mirror.state() if self.mirror is not None else None,
        )


def user_of_payload(payload: bytes) -> str | None:
    """Django's ``_auth_user_id`` in a stored payload (None: anonymous, or unreadable)."""
    try:
        user = current_codec().loads(payload).get("_auth_user_id")
    except Exception:
        return None
    return None if user is None else str(user)


class SnapshotsOff(Exception):
    """Asked for a snapshot where ``MEMSESSION_SNAPSHOT_PATH`` is not set."""


class RedisServices:
    """This process's services on the Redis engine: no store of its own (sessions are in
    Redis), a listener, and the history of Redis's figures."""

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
        from .redis.latency import recorder

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
        from .redis.latency import recorder

        return recorder.round_trips > 0


_store: MemoryStore | None = None  # set once this process's services run: the fast path
_services: Services | None = None
_lock = threading.Lock()
_listening: bool | None = None
_process_hooks_registered = False
_fork = threading.local()
_warned: set[str] = set()


def get_store() -> MemoryStore:
    """This process's store (its services built and started on the first call)."""
    store = _store
    if store is None:
        store = _start().store
    return store


def peek_store() -> MemoryStore | None:
    """The store if this process has built one, without building it or starting anything."""
    return _services.store if _services is not None else None


def _start() -> Services:
    global _services, _store
    with _lock:
        services = _services
        if services is None:
            events = EventReporter()
            store = MemoryStore(conf.limits(), on_event=events)
            events.store = store
            # Only a serving process restores and writes the snapshot: a management command
            # (shell, migrate, prunesessions) must neither take the server's sessions nor wait
            # for its claim.
            snapshot_path = conf.snapshot_path() if should_listen() else None
            services = _services = Services(store, events, snapshot_path)
            _register_process_hooks()
        if not services.started:
            services.started = True
            _start_snapshots(services)
            services.pruner.sample()
            _start_pruner_thread(services, conf.prune_interval())
            if should_listen():
                _start_listener(services)
                _start_mirror(services)
            install_signal_handlers()
        _store = services.store
    return services


def _start_snapshots(services: Services) -> None:
    snapshotter = services.snapshotter
    if snapshotter is None:
        return
    try:
        if services.restored:
            return  # a master that forked gave the file up for good
        services.restored = True
        snapshotter.restore()
        snapshotter.start(conf.snapshot_interval())
    except Exception:
        logger.exception("Session snapshots did not start; sessions still work.")


def _start_mirror(services: Services) -> None:
    """A process started while a move to Redis is under way mirrors as the others do."""
    try:
        problem = services.sync_mirror()
    except Exception:
        logger.exception("Session mirror to Redis did not start; sessions still work.")
        return
    if problem is not None:
        _warn_once("mirror", "Session mirror to Redis did not start: %s.", problem)


def _start_pruner_thread(services: Services, interval: float) -> None:
    try:
        services.pruner.start(interval)
    except Exception:
        logger.exception("Session pruner did not start; sessions still work.")


def _register_process_hooks() -> None:
    global _process_hooks_registered
    if not _process_hooks_registered:
        _process_hooks_registered = True
        os.register_at_fork(
            before=_before_fork,
            after_in_parent=_after_fork_in_parent,
            after_in_child=_after_fork_in_child,
        )
        atexit.register(_stop_services)


# -- the control listener -------------------------------------------------------------------------


def set_listening(value: bool | None) -> None:
    """Whether this process listens on the control channel: ``None`` (the default) decides from
    the command line; the pytest plugin says ``False`` (a test run serves nothing)."""
    global _listening
    _listening = value


def should_listen() -> bool:
    """Whether this process serves requests: not a management command other than runserver.

    runserver's autoreloader parent never uses the store, so only the serving child gets here.
    """
    if _listening is not None:
        return _listening
    program = sys.argv[0] if sys.argv else ""
    name = os.path.basename(program)
    # ``python -m django``: the program is django/__main__.py (and only the folder name says so:
    # a virtualenv called "django-site" holds gunicorn/__main__.py too).
    is_manage = name in {"manage.py", "django-admin", "django-admin.py"} or (
        name == "__main__.py" and os.path.basename(os.path.dirname(program)) == "django"
    )
    if is_manage:
        return len(sys.argv) > 1 and sys.argv[1] in SERVING_COMMANDS
    return True


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def _start_listener(services: Services | RedisServices) -> Listener | None:
    if services.listener is not None or not control.enabled():
        return services.listener
    directory = control.control_dir()
    problem = control.dir_problem(directory, create=True)
    if problem is not None:
        _warn_once(
            "dir",
            "Session control channel off: %s. prunesessions and the admin page will not reach "
            "this process; set MEMSESSION_CONTROL_DIR to a private directory (0700) of this "
            "user, or MEMSESSION_CONTROL = False.",
            problem,
        )
        return None
    path = control.socket_path(os.getpid())
    if len(os.fsencode(path)) + 1 > control.MAX_SOCKET_PATH:  # bound as <path>~ first
        _warn_once(
            "path",
            "Session control channel off: the socket path %s is longer than %d bytes; set "
            "MEMSESSION_CONTROL_DIR to a shorter directory.",
            path,
            control.MAX_SOCKET_PATH,
        )
        return None
    try:
        services.listener = Listener(path, services.handle)
    except OSError as exc:
        _warn_once(
            "bind", "Session control channel off: cannot listen on %s (%s).", path, exc.strerror
        )
        return None
    others = control.live_peers()
    if others:
        logger.warning(
            "%s (pids %s)",
            split_warning(len(others) + 1),
            ", ".join(str(pid) for pid in [os.getpid(), *others]),
        )
    return services.listener


def start_listener() -> Listener | None:
    """Listen for this process now (idempotent); ``None`` when the channel is off or cannot
    start. Builds the store (or, on the Redis engine, its services) if needed."""
    if redis_engine():
        services = _start_redis().services
        with _lock:
            return _start_listener(services)
    get_store()
    assert _services is not None
    with _lock:
        return _start_listener(_services)


def stop_listener() -> None:
    # No lock: one attribute swap is atomic, and the SIGTERM handler comes here, possibly while
    # the main thread holds the build lock (a signal handler waiting on it would never return).
    for services in (_services, _redis_services):
        if services is None:
            continue
        listener, services.listener = services.listener, None
        if listener is not None:
            listener.close()


# -- the Redis engine's services ------------------------------------------------------------------

_redis_services: RedisServices | None = None
# The Redis store's getter once this process's services run: the fast path of redis_store().
_redis_get_store: Callable[[], RedisStore] | None = None


def redis_engine() -> bool:
    """Whether ``SESSION_ENGINE`` is the Redis engine."""
    return getattr(settings, "SESSION_ENGINE", "") == REDIS_ENGINE


def redis_store() -> RedisStore:
    """The Redis engine's store (``redis.store.get_store()``), this process's services started
    on the first call: what the Redis engine uses."""
    get = _redis_get_store
    if get is None:
        get = _start_redis().get_store
    return get()


class _StartedRedis:
    def __init__(self, services: RedisServices, get_store: Callable[[], RedisStore]) -> None:
        self.services = services
        self.get_store = get_store


def _start_redis() -> _StartedRedis:
    global _redis_services, _redis_get_store
    from .redis.history import History
    from .redis.store import get_store as get

    with _lock:
        services = _redis_services
        if services is None:
            services = _redis_services = RedisServices(History(_read_redis_sample))
            _register_process_hooks()
        if not services.started:
            services.started = True
            try:
                services.history.start(conf.prune_interval())
            except Exception:
                logger.exception("Session history did not start; sessions still work.")
            if should_listen():
                _start_listener(services)
        _redis_get_store = get
    return _StartedRedis(services, get)


def _read_redis_sample() -> Sample:
    from .redis.info import read
    from .redis.store import get_store as get_redis_store

    store = get_redis_store()
    figures = read(store.client, store.prefix)
    return Sample(time=time.time(), entries=figures.sessions, bytes=figures.used_memory)


def redis_server_figures() -> tuple[dict[str, Any] | None, str | None]:
    """Redis's own figures now (see ``redis/info.py``), or None and why Redis did not give
    them: never an exception for an unreachable Redis."""
    from .redis.info import FiguresUnavailable, read

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
    return _start_redis().services.history.sample()


def _near_cache_stats() -> NearCacheStats | None:
    """This process's near cache figures, if its Redis store is built and has one (never builds
    it: a report must not open connections)."""
    get = _redis_get_store
    if get is None:
        return None
    from .redis.store import peek_store

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


def _redis_stats() -> dict[str, Any]:
    services = _start_redis().services
    # (with a near cache, "near" holds its figures: L1 and L2 hits, misses, invalidations)
    process = asdict(services.report().redis)  # type: ignore[arg-type]
    server, problem = redis_server_figures()
    return {"engine": "redis", "pid": os.getpid(), **process, "redis": server, "problem": problem}


# -- the pruner ---------------------------------------------------------------------------------


def prune(*, dry_run: bool = False) -> PassReport:
    """Run one pass over this process's store now and return what it removed (or would)."""
    get_store()
    assert _services is not None
    return _services.pruner.run_pass(dry_run=dry_run)


def start_pruner(interval: float | None = None) -> bool:
    """Start this process's pruner thread (``MEMSESSION_PRUNE_INTERVAL`` unless given); whether
    a thread runs afterwards (an interval of 0 starts nothing)."""
    get_store()
    assert _services is not None
    seconds = conf.prune_interval() if interval is None else float(interval)
    return _services.pruner.start(seconds)


def stop_pruner(timeout: float = 5.0) -> bool:
    """Stop the pruner thread, waiting up to ``timeout`` seconds; whether it has stopped."""
    services = _services
    return True if services is None else services.pruner.stop(timeout)


# -- figures and fan-out --------------------------------------------------------------------------


def stats() -> dict[str, Any]:
    """This process's figures: ``pid``, ``entries``, ``bytes``, ``max_bytes``, ``hits``,
    ``misses``, ``evictions``, ``expired`` and more (see README, "Stats"). On the Redis engine:
    this process's hits, misses and latency, and Redis's own figures under ``"redis"`` (None,
    and ``"problem"`` saying why, when Redis cannot give them)."""
    if redis_engine():
        return _redis_stats()
    return get_store().stats()


def report() -> ProcessReport:
    """This process's full picture: stats, uptime, pruner, size history."""
    if redis_engine():
        return _start_redis().services.report()
    get_store()
    assert _services is not None
    return _services.report()


def snapshot() -> SnapshotReport:
    """Write this process's snapshot now; what it wrote. Raises ``SnapshotsOff`` without
    ``MEMSESSION_SNAPSHOT_PATH``, ``NotOwner`` where another process owns the file."""
    get_store()
    assert _services is not None
    return _services.write_snapshot("on demand")


def clear() -> None:
    """Empty this process's store and reset its counters, the once-a-minute eviction warning's
    among them (for tests)."""
    services = _services
    if services is not None:
        services.store.clear()
        services.events.reset()


def _local_handler() -> Callable[[Request], ProcessReport] | None:
    if redis_engine():
        redis_services = _redis_services
        return redis_services.handle if redis_services is not None else None
    services = _services
    return services.handle if services is not None else None


def gather(
    command: str = "report",
    *,
    dry_run: bool = False,
    timeout: float | None = None,
    fields: control.Fields | None = None,
    local: bool = True,
) -> Gathered:
    """Ask every live process of this project for ``command`` (see ``messages.COMMANDS``),
    this one directly when it holds a store (and ``local``)."""
    if timeout is None:
        timeout = control.PRUNE_TIMEOUT if command == "prune" else control.REPORT_TIMEOUT
    return control.fan_out(
        command,
        dry_run=dry_run,
        timeout=timeout,
        local=_local_handler() if local else None,
        fields=fields,
    )


def ask(
    pid: int,
    command: str,
    *,
    fields: control.Fields,
    timeout: float,
    dry_run: bool = False,
) -> ProcessReport:
    """Ask one process (this one directly): the next page of a long answer. Raises
    ``control.ChannelError``."""
    if pid == os.getpid():
        handler = _local_handler()
        if handler is None:
            raise control.Gone("this process holds no store")
        return handler(control.new_request(command, dry_run=dry_run, fields=fields))
    return control.request(
        control.socket_path(pid), command, dry_run=dry_run, timeout=timeout, fields=fields
    )


def prune_everywhere(*, dry_run: bool = False, timeout: float | None = None) -> Gathered:
    """Prune every live process of this project (``clearsessions``), all asked at once, within
    ``control.PRUNE_TIMEOUT`` seconds unless given; errors are logged."""
    gathered = gather("prune", dry_run=dry_run, timeout=timeout)
    for error in gathered.errors:
        logger.warning("clear_expired: %s", error)
    if gathered.problem:
        logger.warning("clear_expired: %s", gathered.problem)
    return gathered


# -- process events -----------------------------------------------------------------------------


def _stop_services() -> None:
    """The shutdown path (``atexit``, SIGTERM): stop serving the channel and pruning, then
    write the final snapshot and give its claim up."""
    stop_listener()
    if _redis_services is not None:
        _redis_services.history.stop(timeout=1.0)
    services = _services
    if services is None:
        return
    services.pruner.stop(timeout=1.0)
    # What the mirror queued goes to Redis before the process ends: a restart onto the Redis
    # engine loses no change or logout this process accepted.
    services.stop_mirror()
    if services.snapshotter is not None:
        services.snapshotter.shutdown()


_signal_handlers_installed = False


def install_signal_handlers() -> None:
    """With snapshots on, make SIGTERM run the shutdown path where nothing else handles it
    (runserver, a plain Python process; Python's default for SIGTERM is to die without
    ``atexit``). A server's own handler (gunicorn, uvicorn) is never replaced: those exit
    through ``atexit``. Only the main thread can install a handler; elsewhere this does
    nothing."""
    global _signal_handlers_installed
    if _signal_handlers_installed or conf.problems() or conf.snapshot_path() is None:
        return
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    _signal_handlers_installed = True
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    """End the process as the default would, but through ``SystemExit``: the main thread's
    stack unwinds first (releasing any lock it held: writing the snapshot from inside the
    handler could wait for ever on a lock the interrupted code holds), then ``atexit`` writes
    the snapshot. The exit status is the shell's for a SIGTERM, 143."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
    raise SystemExit(128 + signum)


def _before_fork() -> None:
    # Per forking thread: two threads forking at once must each release only what they took.
    services = _services
    store = services.store if services is not None else None
    _fork.locked = store is not None and store.lock.acquire(timeout=1.0)


def _after_fork_in_parent() -> None:
    global _store
    _redis_after_fork_in_parent()
    services = _services
    if getattr(_fork, "locked", False) and services is not None:
        services.store.lock.release()
    _fork.locked = False
    if services is None or not services.started or services.store.served:
        return  # a serving process that forks a helper goes on serving as it was
    # A process that forks before it served anything is a master (see the module's docstring).
    _store = None
    services.started = False
    listener, services.listener = services.listener, None
    if listener is not None:
        listener.close(wait=False)
    services.pruner.stop(timeout=0)
    services.stop_mirror(timeout=0)
    if services.snapshotter is not None:
        services.snapshotter.abandon()
        if services.restored:
            services.store.clear()  # the file's sessions belong to the worker that claims it


def _redis_after_fork_in_parent() -> None:
    """On Redis, as for a memory store: a process that forks before it served is a master, and
    stops listening (and sampling) until it uses the store itself."""
    global _redis_get_store
    services = _redis_services
    if services is None or not services.started or services.served:
        return
    _redis_get_store = None
    services.started = False
    listener, services.listener = services.listener, None
    if listener is not None:
        listener.close(wait=False)
    services.history.stop(timeout=0)


def _redis_after_fork_in_child() -> None:
    """The child starts its own services on first use: the parent's listener is the
    parent's, its sampler thread does not exist here (and its lock may have been held)."""
    global _redis_services, _redis_get_store
    services = _redis_services
    _redis_services = None
    _redis_get_store = None
    if services is not None and services.listener is not None:
        services.listener.close(unlink=False)


def _after_fork_in_child() -> None:
    global _services, _store, _lock
    _lock = threading.Lock()
    _store = None
    _redis_after_fork_in_child()
    services = _services
    consistent = getattr(_fork, "locked", False)
    _fork.locked = False
    if services is None:
        return
    store = services.store
    store.after_fork_in_child(consistent=consistent)
    # The parent's mirror (its thread, its connection, its queue) is the parent's: the child
    # reads the marker and builds its own on first use.
    store.on_mirror = None
    listener = services.listener
    if listener is not None:
        listener.close(unlink=False)  # the parent's socket: its file is the parent's
    snapshotter = services.snapshotter
    parent_served = store.served
    if snapshotter is not None:
        if services.restored and not parent_served:
            # A master's sessions came from the snapshot: the worker that claims it restores
            # them, once; copies in every worker would outlive a logout served by one of them.
            store.clear()
        snapshotter.forget()
        store.on_journal = None
        store.epoch = NOT_JOURNALED
    # The parent's threads do not exist here, and their locks may have been held at the fork.
    events = EventReporter(store)
    store.on_event = events
    # A helper forked by a serving process (multiprocessing) takes no part in the snapshot: the
    # serving process owns it.
    keeps_snapshots = snapshotter is not None and not parent_served
    _services = Services(store, events, conf.snapshot_path() if keeps_snapshots else None)


# -- settings -----------------------------------------------------------------------------------


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    """``override_settings(MEMSESSION_*=...)`` takes effect on the live services."""
    if setting.startswith("MEMSESSION_") and not conf.problems():
        _redis_settings_changed(setting)
    services = _services
    if services is None or not setting.startswith("MEMSESSION_") or conf.problems():
        return
    services.store.reconfigure(conf.limits())
    if not services.started:
        return
    if setting == "MEMSESSION_PRUNE_INTERVAL":
        _start_pruner_thread(services, conf.prune_interval())
    if setting == "MEMSESSION_SNAPSHOT_INTERVAL" and services.snapshotter is not None:
        services.snapshotter.start(conf.snapshot_interval())
    if setting in ("MEMSESSION_CONTROL", "MEMSESSION_CONTROL_DIR") and (
        services.listener is not None or should_listen()
    ):
        stop_listener()
        with _lock:
            _start_listener(services)


def _redis_settings_changed(setting: str) -> None:
    services = _redis_services
    if services is None or not services.started:
        return
    if setting == "MEMSESSION_PRUNE_INTERVAL":
        services.history.start(conf.prune_interval())
    if setting in ("MEMSESSION_CONTROL", "MEMSESSION_CONTROL_DIR") and (
        services.listener is not None or should_listen()
    ):
        listener, services.listener = services.listener, None
        if listener is not None:
            listener.close()
        with _lock:
            _start_listener(services)


setting_changed.connect(_settings_changed, dispatch_uid="django_memsession.runtime")
