"""What the store reports becomes signals and log lines, after its lock is released.

Evictions made to fit a write into a full store are summed and logged as one warning a minute at
most: a full store under load must not flood the log. Everything else is logged at DEBUG. No
signal or log line carries a session key or session data.
"""

from __future__ import annotations

import logging
import threading
import time

from ..signals import sessions_evicted, sessions_expired, user_sessions_ended
from ..sizing import format_size
from .store import MemoryStore, StoreEvent

__all__ = ["EventReporter"]

logger = logging.getLogger("django_memsession")

EVICTION_LOG_INTERVAL = 60.0


class EventReporter:
    """The store's ``on_event`` callback: signals for every batch, rate-limited warnings."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store  # for the budget named in the warning
        self._lock = threading.Lock()
        self._count = 0
        self._bytes = 0
        self._since = 0.0

    def reset(self) -> None:
        """Forget the evictions summed for the next warning (``clear()``, for tests)."""
        with self._lock:
            self._count = self._bytes = 0
            self._since = 0.0

    def __call__(self, events: list[StoreEvent]) -> None:
        for event in events:
            if event.kind == "ended":
                self._ended(event)
                continue
            signal = sessions_evicted if event.kind == "evicted" else sessions_expired
            signal.send(
                sender=MemoryStore, count=event.count, bytes=event.bytes, reason=event.reason
            )
            if event.kind == "evicted" and event.reason == "write":
                self._warn(event)
            else:
                logger.debug(
                    "%s %d sessions (%s) [%s]",
                    event.kind,
                    event.count,
                    format_size(event.bytes),
                    event.reason,
                )

    def _ended(self, event: StoreEvent) -> None:
        """A user logged in beyond MEMSESSION_MAX_SESSIONS_PER_USER: their oldest ended."""
        limit = self.store.limits.max_sessions_per_user if self.store is not None else None
        logger.info(
            "Ended %d session(s) of user %s (limit): over MEMSESSION_MAX_SESSIONS_PER_USER (%s).",
            event.count,
            event.user,
            limit,
        )
        user_sessions_ended.send(
            sender=MemoryStore, user=event.user, count=event.count, reason="limit", by=None
        )

    def _warn(self, event: StoreEvent) -> None:
        now = time.monotonic()
        with self._lock:
            self._count += event.count
            self._bytes += event.bytes
            if now - self._since < EVICTION_LOG_INTERVAL:
                return
            count, size = self._count, self._bytes
            self._count = self._bytes = 0
            self._since = now
        budget = format_size(self.store.limits.max_bytes) if self.store is not None else "?"
        logger.warning(
            "Session store full: evicted %d least-recently-used sessions (%s) to stay within "
            "MEMSESSION_MAX_SIZE (%s). Evicted users keep their current request but must log in "
            "again later; raise MEMSESSION_MAX_SIZE if this happens often.",
            count,
            format_size(size),
            budget,
        )
