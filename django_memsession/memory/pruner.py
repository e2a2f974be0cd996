"""Pruning: one pass over a store, the periodic thread that runs them, and what they did.

A pass removes expired sessions and brings an over-full store down to the low-water mark, both
in chunks that release the store's lock between them (``MemoryStore.prune_expired`` and
``shrink``), so a request waits a few milliseconds at most even when a million sessions expire.
Each pass is recorded (its :class:`~django_memsession.messages.PassReport`) and takes a sample of
the store's size for the admin page's plot.

A :class:`Pruner` is handed its store; it imports neither the services nor the control channel.
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

from ..messages import PassReport, PrunerState, Sample
from ..periodic import Periodic
from .store import MemoryStore

__all__ = ["Pruner", "release_free_memory"]

logger = logging.getLogger("django_memsession")

# 360 samples are six hours at the default interval of 60 s.
HISTORY_SAMPLES = 360


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
    a gigabyte, once per pass and outside the store's lock. pymalloc frees its own arenas.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class Pruner:
    """Passes over one store, on demand (:meth:`run_pass`) and on a thread (:meth:`start`)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self._lock = threading.Lock()  # guards the fields below; never held during a pass
        self._last_pass: PassReport | None = None
        self._passes = 0
        self._failures = 0
        self._history: deque[Sample] = deque(maxlen=HISTORY_SAMPLES)
        self._thread = Periodic(self._scheduled_pass, "django_memsession-pruner")

    def run_pass(self, *, dry_run: bool = False) -> PassReport:
        """One pass now: what it removed (or, ``dry_run``, would remove)."""
        store = self.store
        started_at = store.clock()
        started = time.perf_counter()
        expired = store.prune_expired(dry_run=dry_run)
        shrunk = store.shrink(dry_run=dry_run, freed_first=expired.expired_bytes)
        report = PassReport(
            started_at=started_at,
            duration=time.perf_counter() - started,
            expired=expired.expired + shrunk.expired,
            expired_bytes=expired.expired_bytes + shrunk.expired_bytes,
            evicted=shrunk.evicted,
            evicted_bytes=shrunk.evicted_bytes,
            longest_lock_hold=max(expired.longest_lock_hold, shrunk.longest_lock_hold),
            dry_run=dry_run,
        )
        if not dry_run:
            release_free_memory()
            with self._lock:
                self._last_pass = report
                self._passes += 1
            self.sample()
        return report

    def sample(self) -> None:
        """Record the store's size now, for the history plot."""
        figures = self.store.stats()
        sample = Sample(
            time=self.store.clock(),
            entries=int(figures["entries"]),  # type: ignore[call-overload]
            bytes=int(figures["bytes"]),  # type: ignore[call-overload]
        )
        with self._lock:
            self._history.append(sample)

    def history(self) -> list[Sample]:
        with self._lock:
            return list(self._history)

    def state(self) -> PrunerState:
        interval = self._thread.interval
        with self._lock:
            return PrunerState(
                alive=interval is not None,
                interval=interval,
                passes=self._passes,
                failures=self._failures,
                last_pass=self._last_pass,
            )

    # -- the thread ------------------------------------------------------------------------------

    def _scheduled_pass(self) -> None:
        try:
            self.run_pass()
        except Exception:
            with self._lock:
                self._failures += 1
            logger.exception("Session pruner: a pass failed; the next one runs as planned.")

    def start(self, interval: float) -> bool:
        """Run a pass every ``interval`` seconds on a thread; ``0`` stops it. Calling it with
        another interval restarts the thread with the new one. Whether a thread runs after."""
        return self._thread.start(interval)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread, waiting up to ``timeout`` seconds (0: do not wait); whether it has
        stopped."""
        return self._thread.stop(timeout)
