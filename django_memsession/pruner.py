"""Pruning: the periodic thread, one pass now (``prune()``), and what each pass did.

The thread starts lazily, from the store's first-use hook (see ``runtime``), so ``migrate``,
``shell``, ``check`` and runserver's autoreloader parent — which never touch a session — start
nothing. A pass removes expired sessions and brings an over-full store down to the low-water mark,
both in chunks that release the store's lock between them (``MemoryStore.prune_expired`` and
``shrink``), so a request waits a few milliseconds at most even when a million sessions expire.

Each pass is recorded (time, removed, bytes freed, duration) and takes a sample of the store's
size for the admin page's plot; both are kept in bounded deques.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from . import conf, runtime
from .store import MemoryStore

logger = logging.getLogger("django_memsession")

# Bounded records: 360 samples are six hours at the default interval of 60 s.
HISTORY_SAMPLES = 360
PASS_RECORDS = 100
# clearsessions (a cron job) can wait for a large store's pass; a pass over a million sessions
# takes about a second.
CLEAR_EXPIRED_TIMEOUT = 30.0


@dataclass(frozen=True)
class PassResult:
    """What one pass removed: expired sessions, and sessions evicted to reach the low-water mark."""

    started_at: float
    duration: float
    removed: int
    bytes_freed: int
    evicted: int
    bytes_evicted: int
    longest_lock_hold: float
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _State:
    """This process's pruner: its thread, and the records of its passes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards the fields below, never held during a pass
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.interval: float = 0.0
        self.passes: deque[PassResult] = deque(maxlen=PASS_RECORDS)
        self.pass_count = 0
        self.failures = 0
        self.history: deque[tuple[float, int, int]] = deque(maxlen=HISTORY_SAMPLES)


_state = _State()


def _sample(store: MemoryStore) -> None:
    figures = store.stats()
    with _state.lock:
        _state.history.append((store.clock(), int(figures["entries"]), int(figures["bytes"])))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # a libc without it (musl)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_memory() -> None:
    """Give the C heap's free pages back to the operating system.

    Hash tables that grow under churn are reallocated, and a pass frees the ones it compacts;
    glibc keeps those freed blocks in its heap, so the process's RSS would stay at its peak.
    ``malloc_trim(0)`` returns them: under a millisecond on a small heap, 10-20 ms on a heap of
    a gigabyte, once per pass and outside the store's lock (other threads' mallocs wait on
    glibc's own locks meanwhile). pymalloc frees its own arenas when they empty.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _run_pass(store: MemoryStore, *, dry_run: bool) -> PassResult:
    started_at = store.clock()
    started = time.perf_counter()
    expired = store.prune_expired(dry_run=dry_run)
    shrunk = store.shrink(dry_run=dry_run, freed_first=expired.bytes_freed)
    result = PassResult(
        started_at=started_at,
        duration=time.perf_counter() - started,
        removed=expired.removed + shrunk.removed,
        bytes_freed=expired.bytes_freed + shrunk.bytes_freed,
        evicted=shrunk.evicted,
        bytes_evicted=shrunk.bytes_evicted,
        longest_lock_hold=max(expired.longest_lock_hold, shrunk.longest_lock_hold),
        dry_run=dry_run,
    )
    if not dry_run:
        release_free_memory()
        with _state.lock:
            _state.passes.append(result)
            _state.pass_count += 1
        _sample(store)
    return result


def prune(*, dry_run: bool = False) -> PassResult:
    """Run one pass over this process's store now and return what it removed (or would)."""
    return _run_pass(runtime.get_store(), dry_run=dry_run)


def clear_expired() -> None:
    """``SessionStore.clear_expired()`` (Django's ``clearsessions``): prune every live process.

    Reaches the running servers of this project through the control channel and prunes this
    process's store too, if it has one. The listener itself calls :func:`prune` only, so a prune
    never fans out twice.
    """
    from .control import gather

    gathered = gather("prune", timeout=CLEAR_EXPIRED_TIMEOUT)
    for error in gathered.errors:
        logger.warning("clear_expired: %s", error)


# -- the thread ---------------------------------------------------------------------------------


def _loop(stop_event: threading.Event, interval: float) -> None:
    while not stop_event.wait(interval):
        store = runtime.peek_store()
        if store is None:
            continue
        try:
            _run_pass(store, dry_run=False)
        except Exception:
            with _state.lock:
                _state.failures += 1
            logger.exception("Session pruner: a pass failed; the next one runs as planned.")


def start_pruner(interval: float | None = None) -> bool:
    """Start this process's pruner thread (``MEMSESSION_PRUNE_INTERVAL`` unless given).

    Returns whether a thread is running afterwards: an interval of ``0`` starts nothing. Calling
    it while a thread runs with another interval restarts it with the new one.
    """
    seconds = conf.prune_interval() if interval is None else float(interval)
    with _state.lock:
        running = _state.thread is not None and _state.thread.is_alive()
        if running and _state.interval == seconds:
            return True
    if running:
        stop_pruner()
    if seconds <= 0:
        return False
    with _state.lock:
        if _state.thread is not None and _state.thread.is_alive():
            return True
        _state.stop_event = threading.Event()
        _state.interval = seconds
        _state.thread = threading.Thread(
            target=_loop,
            args=(_state.stop_event, seconds),
            name="django_memsession-pruner",
            daemon=True,
        )
        _state.thread.start()
    return True


def stop_pruner(timeout: float = 5.0) -> bool:
    """Stop the pruner thread, waiting up to ``timeout`` seconds; whether it has stopped."""
    with _state.lock:
        thread, event = _state.thread, _state.stop_event
        _state.thread = None
    if thread is None:
        return True
    event.set()
    if thread is not threading.current_thread():
        thread.join(timeout)
    return not thread.is_alive()


def pruner_state() -> dict[str, Any]:
    """Whether the thread is alive, its interval, and its passes so far."""
    with _state.lock:
        alive = _state.thread is not None and _state.thread.is_alive()
        last = _state.passes[-1] if _state.passes else None
        return {
            "alive": alive,
            "interval": _state.interval if alive else None,
            "passes": _state.pass_count,
            "failures": _state.failures,
            "last_pass": None
            if last is None
            else {
                "time": last.started_at,
                "removed": last.removed + last.evicted,
                "bytes_freed": last.bytes_freed + last.bytes_evicted,
                "duration": last.duration,
            },
        }


def report() -> dict[str, Any]:
    """This process's full picture, JSON-ready: ``stats()``, uptime, pruner, size history."""
    store = runtime.get_store()
    figures: dict[str, Any] = dict(store.stats())
    figures["uptime"] = max(0.0, store.clock() - store.created_at)
    figures["pruner"] = pruner_state()
    with _state.lock:
        figures["history"] = [
            {"time": at, "entries": entries, "bytes": size} for at, entries, size in _state.history
        ]
    return figures


# -- wiring into the runtime's hooks ------------------------------------------------------------


def _on_first_use(store: MemoryStore) -> None:
    _sample(store)
    start_pruner()


def _after_fork_in_child() -> None:
    """The parent's thread does not exist in the child: forget it; first use starts a new one."""
    global _state
    _state = _State()


def _on_setting_changed(setting: str) -> None:
    watched = setting == "MEMSESSION_PRUNE_INTERVAL" and runtime.peek_store() is not None
    if watched and not conf.problems():
        start_pruner()


runtime.first_use_hooks.append(_on_first_use)
runtime.fork_child_hooks.append(_after_fork_in_child)
runtime.settings_hooks.append(_on_setting_changed)
