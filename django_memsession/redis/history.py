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

__all__ = ["HISTORY_SAMPLES", "History"]

logger = logging.getLogger("django_memsession.redis")

HISTORY_SAMPLES = 360  # six hours at the default interval of 60 s, as the memory engine's


class History:
    """Samples of Redis's figures, on demand (:meth:`sample`) and on a thread (:meth:`start`)."""

    def __init__(self, read: Callable[[], Sample]) -> None:
        self.read = read
        self._lock = threading.Lock()  # guards the fields below; never held while reading
        self._samples: deque[Sample] = deque(maxlen=HISTORY_SAMPLES)
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._interval = 0.0
        self.failures = 0

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
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            return self._interval if alive else None

    def _loop(self, stop_event: threading.Event, interval: float) -> None:
        while True:
            self.sample()
            if stop_event.wait(interval):
                return

    def start(self, interval: float) -> bool:
        """Sample now and then every ``interval`` seconds on a thread; ``0`` stops it. Another
        interval restarts the thread. Whether a thread runs after."""
        with self._lock:
            thread = self._thread
            running = thread is not None and thread.is_alive()
            if running and self._interval == interval:
                return True
        if running:
            self.stop()
        if interval <= 0:
            return False
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return True
            self._stop_event = threading.Event()
            self._interval = interval
            self._thread = threading.Thread(
                target=self._loop,
                args=(self._stop_event, interval),
                name="django_memsession-redis-history",
                daemon=True,
            )
            self._thread.start()
        return True

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread, waiting up to ``timeout`` seconds (0: do not wait); whether it has
        stopped."""
        with self._lock:
            thread, event = self._thread, self._stop_event
            self._thread = None
        if thread is None:
            return True
        event.set()
        if timeout and thread is not threading.current_thread():
            thread.join(timeout)
        return not thread.is_alive()
