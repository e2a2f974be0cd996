"""Mirroring, the Redis side of a move from the memory engine: between ``exportsessions`` and the
restart onto the Redis engine, every write and delete of a memory process's store is sent to
Redis too, so a change or a logout made in that window is neither lost nor undone by the switch.

The memory engine knows nothing of this module: its services accept a write observer built by
their ``mirror_factory`` hook (see ``memory/services.py``; the package sets it to
:func:`mirror_for`, through ``engines.py``), and this module talks to the store only through it.

Order per key is what matters (a save and a later logout of the same session must reach Redis in
that order). The store calls :meth:`Mirror.note` under its own lock, right after it changed the
entry, and ``note`` only appends to a queue: so the queue holds the changes in the order the
store made them. One thread per process drains it, in order, in pipelined batches over one
connection (Redis applies a connection's commands in the order they are sent), and a failed
batch is sent again, whole and first, before anything queued after it. Nothing of this is on a
request's path but one ``deque.append`` and waking the thread.

Who mirrors: the processes that read the marker file (see ``mirror.py``). A process also sends
what it has queued when it exits (``atexit``, within
:data:`~django_memsession.mirror.DRAIN_TIMEOUT`), so a restart loses nothing it had accepted.

Fork-safe: the thread and the Redis connection are this process's; a forked child drops both
and builds its own on first use (see :mod:`~django_memsession.memory.services`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from django.core.exceptions import ImproperlyConfigured

from ..messages import MirrorState
from ..mirror import DRAIN_TIMEOUT
from .conf import redacted

if TYPE_CHECKING:
    from .importer import Write

__all__ = ["Mirror", "mirror_for"]

logger = logging.getLogger("django_memsession")

BATCH = 500  # writes sent in one pipelined round trip
MAX_QUEUED = 1_000_000  # writes held while Redis cannot take them; beyond, counted as lost
RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)


class Writer(Protocol):
    def write(self, writes: list[Write]) -> object: ...

    def close(self) -> None: ...


# -- the mirror --------------------------------------------------------------------------------


def connect(url: str) -> Writer:
    """The Redis side (imported here, on the mirror's thread: without redis-py the mirror says
    so in its state instead of failing the request that started it)."""
    from .importer import importer_for

    return importer_for(url)


def mirror_for(url: str) -> Mirror:
    """A mirror of a memory store's writes to the Redis at ``url`` (not started): what the
    memory services' ``mirror_factory`` builds."""
    return Mirror(url, redacted(url))


class Mirror:
    """This process's queue of store changes and the thread that sends them to Redis."""

    def __init__(
        self,
        url: str,
        shown_url: str,
        connect: Callable[[str], Writer] = connect,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.shown_url = shown_url  # without its password
        self.connect = connect
        self.since = clock()
        self._queue: deque[tuple[str, bytes | None, float]] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self.mirrored = 0
        self.failures = 0
        self.lost = 0
        self.last_error: str | None = None
        self.pid = os.getpid()

    # Called by the store under its lock: nothing here may block, raise or do I/O.
    def note(self, key: str, payload: bytes | None, expires_at: float) -> None:
        """A session written (``payload``) or deleted (``payload`` None) just now."""
        if len(self._queue) >= MAX_QUEUED:
            self.lost += 1
            return
        self._queue.append((key, payload, expires_at))
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="django_memsession-mirror", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = DRAIN_TIMEOUT) -> bool:
        """Send what is queued (within ``timeout`` seconds), then stop; whether all was sent."""
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # timeout 0 (a master that forked, which queued nothing): no wait at all.
            thread.join(timeout + 1.0 if timeout > 0 else 0)
        return not self._queue and self.lost == 0

    def state(self) -> MirrorState:
        return MirrorState(
            on=self.alive and not self._stopping.is_set(),
            url=self.shown_url,
            since=self.since,
            queued=len(self._queue),
            mirrored=self.mirrored,
            failures=self.failures,
            lost=self.lost,
            last_error=self.last_error,
        )

    def _take(self) -> list[tuple[str, bytes | None, float]]:
        batch = []
        queue = self._queue
        while queue and len(batch) < BATCH:
            batch.append(queue.popleft())
        return batch

    def _run(self) -> None:
        writer: Writer | None = None
        pending: list[tuple[str, bytes | None, float]] = []
        attempt = 0
        try:
            while True:
                self._wake.clear()
                if not pending:
                    pending = self._take()
                if not pending:
                    if self._stopping.is_set():
                        return
                    self._wake.wait(1.0)
                    continue
                try:
                    if writer is None:
                        writer = self.connect(self.url)
                    writer.write(as_writes(pending))
                except Exception as exc:
                    # Never a key or a payload: redis-py's messages name host and errno.
                    self.failures += 1
                    self.last_error = _reason(exc)
                    if self.failures == 1 or self.failures % 100 == 0:
                        logger.warning(
                            "Session mirror to Redis failed (%d failures so far; %d writes "
                            "queued, sent again when Redis answers): %s",
                            self.failures,
                            len(pending) + len(self._queue),
                            self.last_error,
                        )
                    if self._stopping.is_set() and time.monotonic() >= self._deadline:
                        self._give_up(len(pending) + len(self._queue))
                        return
                    delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                    attempt += 1
                    if self._stopping.is_set():
                        delay = min(delay, max(0.0, self._deadline - time.monotonic()))
                    time.sleep(delay)
                    continue
                self.mirrored += len(pending)
                pending = []
                attempt = 0
        finally:
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()

    def _give_up(self, count: int) -> None:
        self.lost += count
        self._queue.clear()
        logger.error(
            "Session mirror stopped with %d writes not sent to Redis (%s). Changes and logouts "
            "made in this window may be missing from Redis: run exportsessions again before "
            "the switch.",
            count,
            self.last_error,
        )


def as_writes(changes: list[tuple[str, bytes | None, float]]) -> list[Write]:
    """The queued changes as the importer's writes."""
    from .importer import Kind, Write

    return [
        Write(Kind.DELETE, key) if payload is None else Write(Kind.MIRROR, key, payload, expires)
        for key, payload, expires in changes
    ]


def _reason(exc: Exception) -> str:
    if isinstance(exc, ImportError):
        return 'redis-py is not installed (pip install "django-memsession[redis]")'
    if isinstance(exc, ImproperlyConfigured):
        return str(exc)
    text = str(exc)
    # Our own SessionBackendUnavailable carries a reason; anything else, only its type.
    if type(exc).__name__ == "SessionBackendUnavailable" and text:
        return text
    return type(exc).__name__
