"""The history of Redis's figures for the admin page's plot: a sample (sessions stored, Redis's
used memory) every ``MEMSESSION_PRUNE_INTERVAL`` seconds, on a thread of each serving process.

The memory engine's pruner takes its samples at each pass; on Redis there is no pass to run
(Redis expires sessions itself), so this thread only samples. Each process samples the same
Redis: the page draws the longest history it is sent. A sample that fails (Redis unreachable)
is counted and skipped; the thread goes on.

A :class:`History` is handed the function that reads a sample; it imports neither the runtime
nor the store.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from ..messages import Sample
from ..periodic import Periodic

__all__ = ["HISTORY_SAMPLES", "History"]

logger = logging.getLogger("django_memsession.redis")

HISTORY_SAMPLES = 360  # six hours at the default interval of 60 s, as the memory engine's


class History:
    """Samples of Redis's figures, on demand (:meth:`sample`) and on a thread (:meth:`start`)."""

    def __init__(self, read: Callable[[], Sample]) -> None:
        self.read = read
        self._lock = threading.Lock()  # guards the fields below; never held while reading
        self._samples: deque[Sample] = deque(maxlen=HISTORY_SAMPLES)
        self.failures = 0
        # The first sample one interval after the start, as the pruner's first pass: not at
        # once, which under gunicorn --preload put a connection (and its imports) in flight on
        # this thread while the master forked, leaving a worker a half-imported module.
        self._thread = Periodic(self.sample, "django_memsession-redis-history")

    def sample(self) -> bool:
        """Read one sample now and keep it; whether Redis gave it."""
        try:
            sample = self.read()
        except Exception as exc:
            with self._lock:
                self.failures += 1
            # The reason names the host and Redis's error, never a key.
            logger.debug("Session history: no sample of Redis's figures (%s).", exc)
            return False
        with self._lock:
            self._samples.append(sample)
        return True

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    @property
    def interval(self) -> float | None:
        """Seconds between samples while the thread runs; None when it does not."""
        return self._thread.interval

    def start(self, interval: float) -> bool:
        """Sample now and then every ``interval`` seconds on a thread; ``0`` stops it. Another
        interval restarts the thread. Whether a thread runs after."""
        return self._thread.start(interval)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread, waiting up to ``timeout`` seconds (0: do not wait); whether it has
        stopped."""
        return self._thread.stop(timeout)
