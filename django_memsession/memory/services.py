"""The memory engine's composition root: this process's services, built on first use, stopped at
exit, started again in a forked child, and kept in step with settings. Nothing else in the
package imports it but the memory engine's ``SessionStore``, the seam (``engines.py``: the
:class:`MemoryEngine` at the bottom is what the surfaces see) and the public API
(``runtime.py``, which re-exports the memory engine's own functions: ``prune()``,
``snapshot()``, ``clear()``...).

The services, built in this order the first time anything uses the store (normally the first
request that touches a session; ``stats()`` too):

1. the :class:`~django_memsession.memory.store.MemoryStore`, from the validated settings,
   reporting through an :class:`~django_memsession.memory.events.EventReporter`;
2. its :class:`~django_memsession.memory.pruner.Pruner` (the thread runs when
   ``MEMSESSION_PRUNE_INTERVAL`` is not 0);
3. its :class:`~django_memsession.listener.Listener` on the control socket, when this process
   serves requests (see ``serving.py``: not a management command other than ``runserver``; not
   a test run).

With ``MEMSESSION_SNAPSHOT_PATH``, a :class:`~django_memsession.memory.snapshot.writer.Snapshotter`
comes
between 1 and 2: it restores the snapshot into the store before anything else can use it, and
writes it on its schedule, on demand, and at exit (``atexit``, and a SIGTERM handler where the
process has none of its own).

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
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from django.core.signals import setting_changed

from .. import conf, mirror, serving
from ..exceptions import SnapshotsOff
from ..listener import Listener
from ..messages import (
    SESSIONS_PAGE,
    MirrorState,
    PassReport,
    ProcessReport,
    Request,
    SnapshotReport,
    StoreStats,
    from_dict,
)
from ..serializers import current_codec
from .events import EventReporter
from .export import ExportRun
from .pruner import Pruner
from .snapshot.writer import NotOwner, Snapshotter
from .store import NOT_JOURNALED, MemoryStore
from .who import EveryProcess, end_local, local_sessions

__all__ = [
    "MemoryEngine",
    "WriteMirror",
    "clear",
    "engine",
    "get_store",
    "local_handler",
    "peek_store",
    "prune",
    "report",
    "snapshot",
    "start_listener",
    "start_pruner",
    "stats",
    "stop_listener",
    "stop_pruner",
]

logger = logging.getLogger("django_memsession")


class WriteMirror(Protocol):
    """A copy of the store's writes and deletes sent elsewhere while a move to another engine is
    under way (the Redis side's, ``redis/move.py``). The store calls ``note`` under its lock:
    it must not block, raise or do I/O."""

    url: str

    @property
    def alive(self) -> bool: ...

    def note(self, key: str, payload: bytes | None, expires_at: float) -> None: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = mirror.DRAIN_TIMEOUT) -> bool: ...

    def state(self) -> MirrorState: ...


# The hook that builds a mirror to the URL in the marker file (see mirror.py). The package sets
# it (runtime.py, to the Redis side's, through engines.py), so this engine imports no other
# engine; None: this process cannot mirror.
mirror_factory: Callable[[str], WriteMirror] | None = None


class Services:
    """This process's store and the services built around it."""

    holds_sessions = True  # see serving.Serves

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
        self.mirror: WriteMirror | None = None
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
        (see mirror.py), through the mirror ``mirror_factory`` builds; why not, when it should
        and cannot."""
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
                factory = mirror_factory
                if factory is None:
                    return "this process cannot mirror (no mirror_factory is set)"
                started = factory(url)
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


_store: MemoryStore | None = None  # set once this process's services run: the fast path
_services: Services | None = None
_lock = threading.Lock()
_process_hooks_registered = False
_fork = threading.local()


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
            snapshot_path = conf.snapshot_path() if serving.should_listen() else None
            services = _services = Services(store, events, snapshot_path)
            _register_process_hooks()
        if not services.started:
            services.started = True
            _start_snapshots(services)
            services.pruner.sample()
            _start_pruner_thread(services, conf.prune_interval())
            if serving.should_listen():
                serving.start_listener(services)
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
        serving.warn_once("mirror", "Session mirror to Redis did not start: %s.", problem)


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


def start_listener() -> Listener | None:
    """Listen for this process now (idempotent); ``None`` when the channel is off or cannot
    start. Builds the store if needed."""
    get_store()
    assert _services is not None
    with _lock:
        return serving.start_listener(_services)


def stop_listener() -> None:
    """Stop this process's listener (no lock: see ``serving.close_listener``)."""
    serving.close_listener(_services)


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
    ``misses``, ``evictions``, ``expired`` and more (see README, "Stats")."""
    return get_store().stats()


def report() -> ProcessReport:
    """This process's full picture: stats, uptime, pruner, size history."""
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


def local_handler() -> Callable[[Request], ProcessReport] | None:
    """What answers this process's own part of a fan-out: its services, once built."""
    services = _services
    return services.handle if services is not None else None


class MemoryEngine:
    """The memory engine's services behind the seam (see ``engines.Engine``)."""

    name = "memory"
    shared = False  # each process holds its own sessions

    stats = staticmethod(stats)
    report = staticmethod(report)
    local_handler = staticmethod(local_handler)
    start_listener = staticmethod(start_listener)
    stop_listener = staticmethod(stop_listener)
    snapshot = staticmethod(snapshot)

    def prune_shared(self, *, dry_run: bool = False) -> None:
        """Nothing is shared: each process prunes its own store (ask them all)."""
        return None

    def server_figures(self) -> tuple[dict[str, Any] | None, str | None]:
        return None, "the memory engine has no session server"

    def index(self) -> EveryProcess:
        return EveryProcess(local_handler, peek_store)


engine = MemoryEngine()


# -- process events -----------------------------------------------------------------------------


def _stop_services() -> None:
    """The shutdown path (``atexit``, SIGTERM): stop serving the channel and pruning, then
    write the final snapshot and give its claim up. (The Redis engine's services have their
    own, in ``redis/services.py``.)"""
    services = _services
    serving.close_listener(services)
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
    services = _services
    if getattr(_fork, "locked", False) and services is not None:
        services.store.lock.release()
    _fork.locked = False
    if services is None or not services.started or services.store.served:
        return  # a serving process that forks a helper goes on serving as it was
    # A process that forks before it served anything is a master (see the module's docstring).
    _store = None
    services.started = False
    serving.close_listener(services, wait=False)
    services.pruner.stop(timeout=0)
    services.stop_mirror(timeout=0)
    if services.snapshotter is not None:
        services.snapshotter.abandon()
        if services.restored:
            services.store.clear()  # the file's sessions belong to the worker that claims it


def _after_fork_in_child() -> None:
    global _services, _store, _lock
    _lock = threading.Lock()
    _store = None
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
    serving.close_listener(services, unlink=False)  # the parent's socket: its file is theirs
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
    """``override_settings(MEMSESSION_*=...)`` takes effect on the live services (the Redis
    engine's have their own receiver, in ``redis/services.py``)."""
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
    if setting in ("MEMSESSION_CONTROL", "MEMSESSION_CONTROL_DIR"):
        serving.listen_again(services, _lock)


setting_changed.connect(_settings_changed, dispatch_uid="django_memsession.runtime")
