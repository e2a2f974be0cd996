"""What each call of the Redis store decides, before and after its round trip: the sync runners
and the async ones (both in ``store.py``) share it, and only do the I/O.

:class:`StorePlans` is a base of :class:`~django_memsession.redis.store.RedisStore`: its methods
read the store's state (``prefix``, ``clock``, ``near``, ``tombstone_ms``, the counters), set in
``store.py``, and do no I/O (the near cache's ``get`` only polls its invalidation socket).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from enum import Enum
from typing import Any

import redis

from ..signals import sessions_expired
from .near import NearCache, Ticket
from .outages import unavailable, wrong_type
from .record import (
    PROBATION_BYTE,
    RECORD_KINDS,
    TOMBSTONE,
    Loaded,
    foreign,
    pack,
    unpack,
)

__all__ = [
    "DISCARD",
    "DONE",
    "PROMOTE",
    "RESULTS",
    "StorePlans",
    "UpdateResult",
    "log_foreign",
    "rest_ms",
]

logger = logging.getLogger("django_memsession.redis")


class UpdateResult(Enum):
    STORED = 1
    RESTORED = 2  # the key was evicted between load and save: stored again
    DELETED = 0  # a tombstone: deleted (logout) since it was loaded
    GONE = -1  # missing and expired by the engine's clock
    MISSING = 3  # evicted, logged in, not stored: indexed again first, then stored


# What a load leaves to do after its GET (see StorePlans._found()).
DONE, DISCARD, PROMOTE = 0, 1, 2

# The update script's answers (a dict lookup costs a tenth of Enum's own call).
RESULTS = {result.value: result for result in UpdateResult}


def log_foreign(of_another_type: bool) -> None:
    # Never the key: it is the visitor's credential.
    logger.warning(
        "A session key held %s, not a session record; it was treated as no session and "
        "deleted (the visitor gets a new session).",
        "a value of another Redis type" if of_another_type else "a value in no format of ours",
    )


def rest_ms(loaded: Loaded, now: float) -> int:
    return max(1, math.ceil((loaded.expires_at - now) * 1000))


class StorePlans:
    """The decisions of :class:`~django_memsession.redis.store.RedisStore`'s calls (a base of
    it)."""

    prefix: bytes
    tombstone_ms: int
    clock: Callable[[], float]
    near: NearCache | None
    _count: Callable[[bool], None]

    def _update_args(
        self, payload: bytes, expires_at: float, ttl_ms: int, full_ttl_ms: int, may_restore: bool
    ) -> list[bytes | int]:
        record = pack(payload, expires_at, settled=ttl_ms >= full_ttl_ms)
        # may_restore 2 (a logged-in session): a missing key is answered MISSING, not restored.
        return [record, ttl_ms, full_ttl_ms, int(self.clock() * 1000), int(may_restore)]

    def _from_near(self, session_key: str) -> tuple[Loaded | None, Ticket | None]:
        """Before a load's ``GET``: a valid copy from L1 (then no round trip), else the ticket
        the ``GET`` takes (None without a near cache)."""
        near = self.near
        if near is None:
            return None, None
        record = near.get(session_key)  # no I/O: the invalidation socket is only polled
        if record is not None:
            loaded = unpack(record, self.clock())
            if loaded is not None:
                return loaded, None
        return None, near.begin(session_key)

    def _get_failed(self, ticket: Ticket | None, exc: redis.RedisError) -> None:
        """A load's ``GET`` failed: raised as an outage or a bug, unless the key holds a value
        of another type; that is no session, which the caller discards."""
        if ticket is not None:
            self.near.fill(ticket, None, 0.0, wrote=False)  # type: ignore[union-attr]
        if not wrong_type(exc):
            unavailable(exc)
        self._count(False)

    def _found(
        self, record: bytes | None, ticket: Ticket | None
    ) -> tuple[Loaded | None, int, float]:
        """What a load's ``GET`` found: the live session or None, what is left to do (DISCARD a
        value not ours, PROMOTE a session back from probation, or DONE), and now. L1 gets the
        record if it may keep it; the load is counted."""
        now = self.clock()
        loaded = unpack(record, now)
        then = DONE
        if loaded is None:
            if record is not None:
                if foreign(record):
                    then = DISCARD
                else:
                    self._expired_on_load(record)
        elif record[0] == PROBATION_BYTE:  # type: ignore[index]
            then = PROMOTE
        if ticket is not None:
            self._fill_from_load(self.near, ticket, record, loaded)  # type: ignore[arg-type]
        self._count(loaded is not None)
        return loaded, then, now

    def _create_command(
        self, session_key: str, payload: bytes, expires_at: float, ttl_ms: int, settled: bool
    ) -> tuple[tuple[Any, ...], bytes]:
        """A create's command (``SET NX`` with its TTL), and the record it writes."""
        record = pack(payload, expires_at, settled)
        return ("SET", self.prefix + session_key.encode(), record, "PX", ttl_ms, "NX"), record

    def _tombstone_command(self, session_key: str) -> tuple[Any, ...]:
        return ("SET", self.prefix + session_key.encode(), TOMBSTONE, "PX", self.tombstone_ms)

    def _exists_failed(self, exc: redis.RedisError) -> bool:
        if wrong_type(exc):
            return False  # not ours: no session (the load that finds it deletes it)
        unavailable(exc)

    @staticmethod
    def _fill_from_load(
        near: NearCache, ticket: Ticket, record: bytes | None, loaded: Loaded | None
    ) -> None:
        """Put what a ``GET`` found into L1: a settled session only (one on probation must
        reach Redis on its next load too, to be promoted)."""
        if loaded is not None and record[0] != PROBATION_BYTE:  # type: ignore[index]
            near.fill(ticket, record, loaded.expires_at, wrote=False)
        else:
            near.fill(ticket, None, 0.0, wrote=False)

    def _expired_on_load(self, record: bytes) -> None:
        """A load found a session that has expired by the web server's clock (Redis has not
        removed it yet): the engine treats it as gone, and says so as the memory engine does."""
        if record[:1] in RECORD_KINDS:
            sessions_expired.send(sender=type(self), count=1, bytes=len(record), reason="load")
