"""A daemon thread that calls a function every ``interval`` seconds until stopped: the pruner's
passes and the Redis history's samples. The first call comes one interval after the start.

:meth:`Periodic.start` with the interval already running does nothing, with another restarts
the thread, with 0 stops it; :meth:`Periodic.stop` waits for the thread, up to a timeout. Starts
and stops are taken one at a time (the last one wins), and a restart waits for the old thread's
tick in progress, so that two ticks never run at once but after a stop that did not wait
(``timeout=0``, as a forking parent does) or timed out. The function handles its own errors (an
exception would end the thread). Imports nothing of the package.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Periodic"]


class Periodic:
    """Calls ``tick`` every ``interval`` seconds on a thread called ``name``."""

    def __init__(self, tick: Callable[[], object], name: str) -> None:
        self.tick = tick
        self.name = name
        # Guards the fields below and orders starts and stops; never taken by the thread, so a
        # stop may wait for it under the lock.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._interval = 0.0

    @property
    def interval(self) -> float | None:
        """Seconds between ticks while the thread runs; None when it does not."""
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            return self._interval if alive else None

    def _loop(self, stop_event: threading.Event, interval: float) -> None:
        while not stop_event.wait(interval):
            self.tick()

    def start(self, interval: float) -> bool:
        """Tick every ``interval`` seconds on a thread; ``0`` stops it. Another interval restarts
        the thread. Whether a thread runs after."""
        with self._lock:
            thread = self._thread
            if thread is not None and thread.is_alive() and self._interval == interval:
                return True
            self._stop(timeout=5.0)
            if interval <= 0:
                return False
            self._stop_event = threading.Event()
            self._interval = interval
            self._thread = threading.Thread(
                target=self._loop,
                args=(self._stop_event, interval),
                name=self.name,
                daemon=True,
            )
            self._thread.start()
            return True

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread, waiting up to ``timeout`` seconds (0: do not wait); whether it has
        stopped."""
        with self._lock:
            return self._stop(timeout)

    def _stop(self, timeout: float) -> bool:
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        self._stop_event.set()
        if timeout and thread is not threading.current_thread():
            thread.join(timeout)
        return not thread.is_alive()
