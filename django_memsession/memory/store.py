"""The process-global session memory: entries, byte budget, recency, expiry, eviction, counters.

Knows nothing of Django requests (the engine in ``engine.py`` does). Time comes from an injected
clock and sizes from an injected :class:`~django_memsession.sizing.EntrySizer`, so tests move time
instead of sleeping. The eviction policy is
:class:`~django_memsession.memory.lru.SegmentedLRU`; the keys of evicted sessions are
:class:`~django_memsession.memory.remembered.RememberedKeys`.

Layout, chosen for memory (see README, "Memory"): one ``bytes`` value per session, whose first 12
bytes are its expiry time and its journal epoch, so an entry is a key, a value and a slot in an
``OrderedDict``; no per-entry tuple, float or bookkeeping object. Recency is the ``OrderedDict``
order.

Journal (when snapshots are on, see :mod:`~django_memsession.memory.snapshot.writer`): a snapshot is
copied while requests go on, so after a crash the file may hold an older version of a session
written after the copy began, or a session deleted since. The store tells its ``on_journal``
callback, after the lock is released, about the first write or delete of each session in each
*epoch* (one epoch per snapshot); a restore leaves out every session journaled since its snapshot
began. Each entry carries the epoch it was last journaled in, so a session written on every request
is journaled once per snapshot, not once per write. A new session is not journaled (it cannot be in
an older snapshot at an older version); its first update is.

Locking: one ``threading.Lock``, held only for dictionary work. Packing, sizing, serialization,
logging and signals all happen outside it; events gathered under the lock are handed to the
``on_event`` callback after it is released.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum

from ..clock import wall_clock
from ..sizing import EntrySizer
from . import index as facts
from .index import FACTS, FACTS_SIZE, SessionFacts, UserIndex, user_key
from .lru import AUTHENTICATED, PROBATION, RETURNING, SEGMENT_NAMES, SegmentedLRU
from .remembered import RememberedKeys

__all__ = [
    "EntryTooLarge",
    "Limits",
    "MemoryStore",
    "PruneResult",
    "PutResult",
    "RestoreResult",
    "StoreEvent",
    "wall_clock",
]

# expires_at (seconds since the epoch, on the store's clock); the journal epoch of the entry's
# last journaled write (NOT_JOURNALED: none).
HEADER = struct.Struct("<dI")
HEADER_SIZE = HEADER.size
NOT_JOURNALED = 0

# Parts of a logged-in session's facts (see users.FACTS): created and the two lengths; expiry,
# epoch, created and last use.
_CARRIED = struct.Struct("<I4xHH")
_TIMES = struct.Struct("<dIII")

# How many of the coldest entries of each segment a write over budget looks at for expired ones
# before it evicts live sessions: bounded work per request; the pruner does the thorough job.
EXPIRED_PROBE = 8
# A restore fills this share of the sessions' room with entries; their tables take the rest.
RESTORE_FILL = 0.9
_SEGMENTS = frozenset(range(len(SEGMENT_NAMES)))


def _expiry(index: int, key: str, value: bytes) -> float | None:
    """The expiry of a record read back from a snapshot, or None when it is not one the store
    wrote, whole: a segment it does not have, a key that is not ASCII (every key it accepts
    is), a value too short for its header, an expiry that is not a time, a logged-in session's
    value too short for its facts. Such a record is treated as absent, never half used."""
    if len(value) < HEADER_SIZE or not key.isascii() or index not in _SEGMENTS:
        return None
    expires_at = HEADER.unpack_from(value)[0]
    if not math.isfinite(expires_at):
        return None
    if index == AUTHENTICATED:
        if len(value) < FACTS_SIZE:
            return None
        *_, user_length, client_length = FACTS.unpack_from(value)
        if FACTS_SIZE + user_length + client_length > len(value):
            return None
    return expires_at


class EntryTooLarge(ValueError):
    """One entry alone is larger than the per-session limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"entry of {size} bytes exceeds the per-session limit of {limit} bytes")
        self.size = size
        self.limit = limit


class PutResult(Enum):
    STORED = "stored"
    RESTORED = "restored"  # a recently evicted key came back: stored again
    EXISTS = "exists"  # create of a key that is present (live, or expired and not yet pruned)
    MISSING = "missing"  # update of a key that is gone (deleted, expired, or forgotten)


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_session_bytes: int
    low_water: float
    # A cap on the number of sessions beside the bytes (None: none), and on each user's.
    max_sessions: int | None = None
    max_sessions_per_user: int | None = None

    @property
    def low_water_bytes(self) -> int:
        return int(self.max_bytes * self.low_water)

    @property
    def remember_bytes(self) -> int:
        """The slice of the budget set aside for the keys of evicted sessions (so eviction is
        not logout)."""
        return self.max_bytes // 16

    @property
    def session_bytes(self) -> int:
        """The rest, for sessions and their tables (see
        :mod:`~django_memsession.memory.remembered`)."""
        return self.max_bytes - self.remember_bytes


@dataclass(frozen=True)
class StoreEvent:
    """Something that removed sessions, reported once per batch after the lock is released."""

    kind: str  # "evicted", "expired", or "ended" (a user's session over their limit)
    count: int
    bytes: int
    # "write" (a save needed room), "load" (found expired), "prune" (a prune pass), "shrink"
    # (brought down to the low-water mark), "settings" (a smaller MEMSESSION_MAX_SIZE),
    # "limit" (MEMSESSION_MAX_SESSIONS_PER_USER, with ``user``)
    reason: str
    user: str | None = None


@dataclass
class RestoreResult:
    """What a restore put back, and what it left out (expired; over the budget, or present)."""

    sessions: int = 0
    expired: int = 0
    left_out: int = 0
    unreadable: int = 0  # records the store could not use (see _expiry): left out too


@dataclass
class PruneResult:
    """What a walk removed: expired sessions, and live ones evicted to reach the low-water mark.

    ``removed`` is always both together, everywhere it is shown.
    """

    expired: int = 0
    expired_bytes: int = 0
    evicted: int = 0
    evicted_bytes: int = 0
    longest_lock_hold: float = 0.0
    events: list[StoreEvent] = field(default_factory=list)

    @property
    def removed(self) -> int:
        return self.expired + self.evicted

    @property
    def bytes_freed(self) -> int:
        return self.expired_bytes + self.evicted_bytes


class MemoryStore:
    """Sessions in memory under a byte budget. Every operation is O(1) in the number of entries.

    ``get``/``put``/``delete``/``exists`` (and their async twins, for the
    :class:`~django_memsession.backend.SessionBackend` interface) are what a request uses;
    ``prune_expired`` and ``shrink`` are background work done in chunks, releasing the lock
    between chunks.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float] = wall_clock,
        sizer: EntrySizer | None = None,
        on_event: Callable[[list[StoreEvent]], None] | None = None,
        on_journal: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.sizer = sizer or EntrySizer()
        self.on_event = on_event
        self.on_journal = on_journal
        # Called under the lock with each session written (key, payload, expiry) or deleted
        # (key, None, 0.0), in the order the store made the changes: the mirror to Redis while a
        # move to the Redis engine is under way (see mirror.py). It only queues.
        self.on_mirror: Callable[[str, bytes | None, float], None] | None = None
        # The current journal epoch; NOT_JOURNALED while nothing journals.
        self.epoch = NOT_JOURNALED
        self._lock = threading.Lock()
        self._prune_lock = threading.Lock()
        self._policy = SegmentedLRU()
        self._remembered = RememberedKeys(self.sizer)
        self._users = UserIndex()
        # Running total of the sessions (key, value, list node); with the policy's table_bytes
        # and the remembered keys' bytes it makes up the store's size.
        self._entry_bytes = 0
        self.created_at = clock()
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expired = 0
        self.restored = 0
        self.rejected = 0
        self.writes = 0  # saves that stored a session

    # -- the request path ---------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The stored payload of a live session (and it becomes most recently used), or None.

        A logged-in session's last use is noted to the second: its value is copied with the new
        second at most once a second (see :mod:`~django_memsession.memory.index`).
        """
        now = self.clock()
        events = None
        with self._lock:
            # Read under the lock: a prune walk replaces the tuple of tables when it is through.
            segments = self._policy.segments
            # The two loads nearly every request makes come first: a live logged-in session, or
            # a live returning visitor, in its segment's table, where it stays (only the order
            # changes). The rest (probation, a restore's front tables, expired, absent) goes
            # through the policy.
            index = AUTHENTICATED
            table = segments[AUTHENTICATED]
            value = table.get(key)
            if value is None:
                table = segments[RETURNING]
                value = table.get(key)
                if value is not None and HEADER.unpack_from(value)[0] > now:
                    table.move_to_end(key)
                    self.hits += 1
                    return value[HEADER_SIZE:]
                index, value = self._policy.find(key)
                if value is None:
                    self.misses += 1
                    return None
                if index == AUTHENTICATED and HEADER.unpack_from(value)[0] > now:
                    # In a restore's front table: into the table, and indexed under the key
                    # object the table now holds.
                    self._policy.touch(key, index)
                    self._index_add(value, key)
                    table = segments[AUTHENTICATED]
            if index == AUTHENTICATED:
                # One unpack for the expiry, the last use and where the payload starts.
                expires_at, _, _, last_used, user_length, client_length = FACTS.unpack_from(value)
                if expires_at > now:
                    table.move_to_end(key)
                    self.hits += 1
                    if now >= last_used + 1:  # a new second since (int() only then)
                        value = facts.with_last_used(value, int(now))
                        table[key] = value
                    return value[FACTS_SIZE + user_length + client_length :]
            if HEADER.unpack_from(value)[0] <= now:
                events = []
                self._remove_expired(key, index, value, events, "load")
                self.misses += 1
            else:
                self._policy.touch(key, index)
                self.hits += 1
        if events is not None:
            self._emit(events)
            return None
        return value[HEADER_SIZE:]

    def exists(self, key: str) -> bool:
        """Whether a live (unexpired) session has this key. Does not change recency."""
        now = self.clock()
        with self._lock:
            value = self._policy.find(key)[1]
        return value is not None and HEADER.unpack_from(value)[0] > now

    @staticmethod
    def _pack_facts(
        payload: bytes,
        expires_at: float,
        tag: int,
        user: bytes,
        client: bytes | None,
        old: bytes | None,
        now: float,
    ) -> tuple[bytes, bool]:
        """A logged-in session's value, carrying the creation time and the client from ``old``
        (its value in the authenticated segment, if any) when it is the same user's; and
        whether it is new to this user. On every save of a logged-in session: the common case
        (same user, client kept) reuses the old value's user and client bytes as they are."""
        second = int(now)
        if old is not None:
            created, user_length, client_length = _CARRIED.unpack_from(old, 12)
            if user_length == len(user) and old.startswith(user, FACTS_SIZE):
                if client is None:
                    end = FACTS_SIZE + user_length + client_length
                    head = _TIMES.pack(expires_at, tag, created, second)
                    return b"".join((head, old[20:end], payload)), False
                head = FACTS.pack(expires_at, tag, created, second, len(user), len(client))
                return b"".join((head, user, client, payload)), False
        if client is None:
            client = b""
        head = FACTS.pack(expires_at, tag, second, second, len(user), len(client))
        return b"".join((head, user, client, payload)), True

    def put(
        self,
        key: str,
        payload: bytes,
        expires_at: float,
        *,
        authenticated: bool,
        create: bool,
        user: str | None = None,
        client: str | None = None,
    ) -> PutResult:
        """Store a session. ``create`` fails on a present key; an update fails on a missing one.

        A create fails on a key whose session expired but was not pruned yet too, as with
        Django's db engine (the row is still there). An update of a key evicted recently (and
        not deleted or expired since) stores it again: eviction is not logout. Raises
        :class:`EntryTooLarge` before touching anything.

        A logged-in session (``authenticated``) is indexed under ``user`` (Django's
        ``_auth_user_id``; not indexed without it) with its facts; ``client`` (opaque text)
        replaces the client noted for it, None keeps it.
        """
        now = self.clock()
        if not create and client is None:
            result = self._update_in_place(key, payload, expires_at, authenticated, user, now)
            if result is not None:
                return result
        hint = user_bytes = client_bytes = None
        new_to_user = True
        if authenticated:
            user_bytes = user.encode() if user else b""
            if len(user_bytes) > facts.MAX_FIELD:
                user_bytes = facts.encode(user)
            client_bytes = None if client is None else facts.encode(client)
            # Packed outside the lock from what the authenticated segment holds now (read
            # without the lock: a hint, one dict.get, atomic under the GIL); under the lock,
            # packed again if that changed.
            if not create:
                hint = self._policy.segments[AUTHENTICATED].get(key)
        events: list[StoreEvent] = []
        tag = NOT_JOURNALED
        while True:
            if self.epoch != NOT_JOURNALED and not create:
                tag = self._journal_first(key)
            if user_bytes is None:
                value = HEADER.pack(expires_at, tag) + payload
            else:
                value, new_to_user = self._pack_facts(
                    payload, expires_at, tag, user_bytes, client_bytes, hint, now
                )
            size = self.sizer.entry(len(key), len(value))
            if size > self.limits.max_session_bytes:
                with self._lock:
                    self.rejected += 1
                raise EntryTooLarge(size, self.limits.max_session_bytes)
            self._lock.acquire()
            if tag == NOT_JOURNALED or tag == self.epoch:
                break  # (else a snapshot began since: journal under its epoch, and again)
            self._lock.release()
        ended: list[tuple[str, int]] = []  # sessions a login over the per-user limit ended
        try:
            index, old_value = self._policy.find(key)
            if old_value is not None and create:
                return PutResult.EXISTS
            was_expired = old_value is not None and HEADER.unpack_from(old_value)[0] <= now
            if was_expired:
                self._remove_expired(key, index, old_value, events, "write")
                index = old_value = None
            source = old_value if index == AUTHENTICATED else None
            if source is not hint and user_bytes is not None:
                # The session changed since the value was packed: packed again, with the tag
                # it was journaled under.
                value, new_to_user = self._pack_facts(
                    payload, expires_at, tag, user_bytes, client_bytes, source, now
                )
                size = self.sizer.entry(len(key), len(value))
            if old_value is not None:  # an update of a live session
                self._entry_bytes -= self.sizer.entry(len(key), len(old_value))
                previous, result = index, PutResult.STORED
            elif create:
                self._remembered.forget(key)
                previous, result = None, PutResult.STORED
            else:
                remembered_until = None if was_expired else self._remembered.forget(key)
                if remembered_until is None or remembered_until <= now:
                    result = PutResult.MISSING
                else:
                    # Somebody is using it right now: not a probation newcomer.
                    previous, result = RETURNING, PutResult.RESTORED
                    self.restored += 1
            if result is not PutResult.MISSING:
                self.writes += 1
                segment = self._policy.segment_for_write(previous, authenticated)
                if source is not None and new_to_user:
                    # Another user on the same key (rare): out of the old user's sessions, and
                    # stored afresh, so that the index and the policy hold one key object.
                    self._index_remove(source, key)
                    self._policy.remove(key, index)
                    index = None
                moved = self._policy.put(key, value, segment, index)
                self._entry_bytes += size
                if self.on_mirror is not None:
                    self.on_mirror(key, payload, expires_at)
                if segment == AUTHENTICATED and moved:
                    count = self._index_add(value, key)
                    limit = self.limits.max_sessions_per_user
                    # A login (a new session of this user), not an evicted one coming back.
                    logged_in_now = new_to_user and result is PutResult.STORED
                    if limit is not None and count > limit and logged_in_now:
                        self._end_over_limit(value, key, limit, events, ended)
                limits = self.limits
                if self._session_bytes() > limits.session_bytes or (
                    limits.max_sessions is not None and len(self._policy) > limits.max_sessions
                ):
                    self._make_room(
                        limits.session_bytes, now, reason="write", spare=key, events=events
                    )
        finally:
            self._lock.release()
        if self.on_journal is not None:
            # Sessions a login over the per-user limit ended: journaled as they end (a logout
            # forced by the limit; a crash in between could bring one back).
            for ended_key, epoch in ended:
                self.on_journal(ended_key, epoch)
        if events:
            self._emit(events)
        return result

    def _update_in_place(
        self,
        key: str,
        payload: bytes,
        expires_at: float,
        authenticated: bool,
        user: str | None,
        now: float,
    ) -> PutResult | None:
        """The save nearly every request makes, without :meth:`put`'s general path: an update
        of a live session that stays in its segment's table, logged in as the same user, or
        anonymous. None: not that case (or something changed meanwhile), nothing done.

        The session's current value is read without the lock (one ``dict.get``, atomic under
        the GIL), the new one packed from it outside the lock, and stored only if the value is
        still the same object under the lock.
        """
        # Read without the lock: a prune walk may replace the tuple of tables meanwhile, but
        # the table it drops is empty by then, so the identity check under the lock fails.
        segments = self._policy.segments
        if authenticated:
            if not user:
                return None
            table = segments[AUTHENTICATED]
            old = table.get(key)
            if old is None:
                return None
            user_bytes = user.encode()
            old_expiry, _, created, last_used, user_length, client_length = FACTS.unpack_from(old)
            if user_length != len(user_bytes) or not old.startswith(user_bytes, FACTS_SIZE):
                return None  # another user, or a user id clipped to MAX_FIELD: the general path
        else:
            table = segments[RETURNING]
            old = table.get(key)
            if old is None:
                table = segments[PROBATION]
                old = table.get(key)
                if old is None:
                    return None
            old_expiry = HEADER.unpack_from(old)[0]
        if old_expiry <= now:
            return None  # expired: the general path removes it
        tag = NOT_JOURNALED
        if self.epoch != NOT_JOURNALED:
            tag = self._journal_first(key)
        if authenticated:
            end = FACTS_SIZE + user_length + client_length
            if now < last_used + 1:  # used this second (the load before this save noted it)
                value = b"".join((HEADER.pack(expires_at, tag), old[12:end], payload))
            else:
                head = _TIMES.pack(expires_at, tag, created, int(now))
                value = b"".join((head, old[20:end], payload))
        else:
            value = HEADER.pack(expires_at, tag) + payload
        entry = self.sizer.entry
        size = entry(len(key), len(value))
        if size > self.limits.max_session_bytes:
            return None  # refused (and counted) by the general path
        events: list[StoreEvent] = []
        with self._lock:
            if table.get(key) is not old or (tag != NOT_JOURNALED and tag != self.epoch):
                return None  # changed meanwhile, or a snapshot began: the general path
            table[key] = value
            table.move_to_end(key)
            self._entry_bytes += size - entry(len(key), len(old))
            self.writes += 1
            if self.on_mirror is not None:
                self.on_mirror(key, payload, expires_at)
            if self._session_bytes() > self.limits.session_bytes:
                self._make_room(
                    self.limits.session_bytes, now, reason="write", spare=key, events=events
                )
        if events:
            self._emit(events)
        return PutResult.STORED

    def delete(self, key: str) -> bool:
        """Remove a session for good (logout, flush): it is not remembered, so never restored,
        and it is journaled first, always (even if it was evicted: a snapshot may hold it)."""
        return self.delete_many([key]) == 1

    def delete_many(self, keys: list[str]) -> int:
        """:meth:`delete` each of ``keys`` (ending a user's sessions); how many were there.
        Each is journaled before any is removed."""
        while True:
            epoch = self.epoch
            if epoch != NOT_JOURNALED and self.on_journal is not None:
                for key in keys:
                    self.on_journal(key, epoch)
            self._lock.acquire()
            if epoch == self.epoch:
                break
            self._lock.release()  # a snapshot began meanwhile: journal under its epoch too
        try:
            mirror = self.on_mirror
            if mirror is not None:
                for key in keys:
                    mirror(key, None, 0.0)
            return sum(self._delete(key) for key in keys)
        finally:
            self._lock.release()

    def _delete(self, key: str) -> bool:
        """Remove ``key`` with the lock held; whether it was there."""
        self._remembered.forget(key)
        index, value = self._policy.find(key)
        if value is not None:
            self._drop(key, index, value)
        return value is not None

    def _journal_first(self, key: str) -> int:
        """Before an update: journal it, unless this session was journaled in this epoch
        already; the epoch to tag the entry with (NOT_JOURNALED: nothing journals, or the
        journal failed, so the next write tries again).

        The journal is written before the entry is tagged, outside the lock: a tag of the
        current epoch always means "journaled in it", so a concurrent write that sees the tag
        may skip journaling and return at once, and a crash right after loses nothing. The
        peek at the tag takes no lock: a stale answer only journals once more.
        """
        epoch = self.epoch
        if epoch == NOT_JOURNALED or self.on_journal is None:
            return NOT_JOURNALED
        current = self._policy.find(key)[1]
        if current is not None and HEADER.unpack_from(current)[1] == epoch:
            return epoch
        return epoch if self.on_journal(key, epoch) else NOT_JOURNALED

    # The async twins: the store does no I/O, so they are the same calls, made from the loop.

    async def aget(self, key: str) -> bytes | None:
        return self.get(key)

    async def aexists(self, key: str) -> bool:
        return self.exists(key)

    async def aput(
        self,
        key: str,
        payload: bytes,
        expires_at: float,
        *,
        authenticated: bool,
        create: bool,
        user: str | None = None,
        client: str | None = None,
    ) -> PutResult:
        return self.put(
            key,
            payload,
            expires_at,
            authenticated=authenticated,
            create=create,
            user=user,
            client=client,
        )

    async def adelete(self, key: str) -> bool:
        return self.delete(key)

    # -- background work, in chunks -----------------------------------------------------------

    def prune_expired(self, *, chunk_size: int = 1000, dry_run: bool = False) -> PruneResult:
        """Remove every expired session (and forget expired remembered keys).

        Walks each segment in chunks of ``chunk_size`` entries (see
        :class:`~django_memsession.memory.lru.SegmentedLRU`), holding the lock for one chunk at a
        time and yielding between chunks, so a request waits on a prune for a fraction of a
        millisecond per chunk, however many sessions there are.
        """
        result = PruneResult()
        now = self.clock()

        walking = 0  # the segment being walked

        def expired(key: str, value: bytes) -> bool:
            if HEADER.unpack_from(value)[0] > now:
                return False
            size = self.sizer.entry(len(key), len(value))
            result.expired += 1
            result.expired_bytes += size
            if dry_run:
                return False
            self._entry_bytes -= size
            self.expired += 1
            if walking == AUTHENTICATED:
                self._index_remove(value, key)
            return True

        with self._prune_lock:  # one walk at a time; requests never wait on this lock
            for index in range(len(SEGMENT_NAMES)):
                walking = index
                with self._lock:
                    # Entries written during the walk join the back's hot end; the bound lets
                    # it look at those too, but never chase a stream of new writes for ever.
                    budget = 2 * len(self._policy.segments[index]) + chunk_size
                through = False
                while not through and budget > 0:
                    held_since = time.perf_counter()
                    with self._lock:
                        through = self._policy.scan(index, chunk_size, expired)
                    result.longest_lock_hold = max(
                        result.longest_lock_hold, time.perf_counter() - held_since
                    )
                    budget -= chunk_size
                    time.sleep(0)  # let waiting request threads take the lock (and the GIL)
            if not dry_run:
                self._forget_expired(now, chunk_size)
        if not dry_run and result.expired:
            result.events.append(
                StoreEvent("expired", result.expired, result.expired_bytes, "prune")
            )
            self._emit(result.events)
        return result

    def _forget_expired(self, now: float, chunk_size: int) -> None:
        """Drop remembered keys whose sessions would have expired by now: one turn of the queue,
        in chunks."""
        with self._lock:
            remaining = len(self._remembered)
        while remaining > 0:
            with self._lock:
                self._remembered.forget_expired(
                    now, min(chunk_size, remaining), self.limits.remember_bytes
                )
            remaining -= chunk_size
            time.sleep(0)

    def shrink(
        self, *, chunk_size: int = 1000, dry_run: bool = False, freed_first: int = 0
    ) -> PruneResult:
        """Bring the store down to the low-water mark, evicting cold sessions in chunks.

        ``dry_run`` estimates instead, in O(1) (walking the coldest sessions to count them would
        hold the lock for as many sessions as there are to evict): the bytes over the mark, less
        ``freed_first`` (what the pass would already have removed as expired), in sessions of
        the mean size, each of which leaves its key remembered while the remembered keys' slice
        has room.
        """
        if dry_run:
            return self._estimate_shrink(freed_first)
        result = PruneResult()
        with self._lock:
            # Bounded: under a flood, writes refill the store as fast as a shrink empties it.
            chunks_left = len(self._policy) // chunk_size + 1
        while chunks_left > 0:
            chunks_left -= 1
            held_since = time.perf_counter()
            events: list[StoreEvent] = []
            with self._lock:
                target = self.limits.low_water_bytes
                if self._charged_total() <= target:
                    break
                evicted = self._make_room(
                    target,
                    self.clock(),
                    reason="shrink",
                    spare=None,
                    events=events,
                    max_evictions=chunk_size,
                    with_remembered=True,
                )
            result.longest_lock_hold = max(
                result.longest_lock_hold, time.perf_counter() - held_since
            )
            for event in events:
                if event.kind == "evicted":
                    result.evicted += event.count
                    result.evicted_bytes += event.bytes
                else:
                    result.expired += event.count
                    result.expired_bytes += event.bytes
            self._emit(events)
            if not evicted:
                break
            time.sleep(0)
        return result

    def _estimate_shrink(self, freed_first: int) -> PruneResult:
        result = PruneResult()
        with self._lock:
            excess = self._charged_total() - freed_first - self.limits.low_water_bytes
            entries, entry_bytes = len(self._policy), self._entry_bytes
            room = self.limits.remember_bytes - self._remembered.bytes
            coldest = self._policy.victim(None)
        if excess <= 0 or not entries or coldest is None:
            return result
        mean = entry_bytes / entries
        remembered = self.sizer.remembered(len(coldest[1]))
        while_room = max(0, room) // remembered  # evictions that also remember a key
        if excess <= while_room * (mean - remembered):
            evictions = math.ceil(excess / (mean - remembered))
        else:
            rest = excess - while_room * (mean - remembered)
            evictions = while_room + math.ceil(rest / mean)
        result.evicted = min(entries, evictions)
        result.evicted_bytes = round(result.evicted * mean)
        return result

    # -- snapshots -----------------------------------------------------------------------------

    def begin_epoch(self, epoch: int) -> None:
        """Start journal epoch ``epoch`` (a snapshot begins): from now on, the first write or
        delete of each session is journaled under it."""
        with self._lock:
            self.epoch = epoch

    def copy_chunks(self, *, chunk_size: int = 1000) -> Iterator[list[tuple[int, str, bytes]]]:
        """Every entry as ``(segment, key, value)``, coldest segment first and each segment from
        its cold end: the order a restore rebuilds recency from.

        Copied in chunks by the prune walk (the lock is held for one chunk at a time, the values
        are shared, not copied), so requests go on meanwhile. A session written during the copy
        may appear twice, the later copy being the newer: a restore keeps the last. Entries
        written so often during the copy that the walk's bound runs out are copied at the end
        in one hold.
        """
        copied: list[tuple[int, str, bytes]] = []
        index = 0

        def keep(key: str, value: bytes) -> bool:  # reads the current ``copied`` and ``index``
            copied.append((index, key, value))
            return False

        with self._prune_lock:  # one walk at a time, prunes included
            for index in range(len(SEGMENT_NAMES)):
                with self._lock:
                    budget = 2 * len(self._policy.segments[index]) + chunk_size
                through = False
                while not through:
                    with self._lock:
                        if budget <= 0:
                            copied.extend(
                                (index, key, value)
                                for key, value in self._policy.segments[index].items()
                            )
                            break
                        through = self._policy.scan(index, chunk_size, keep)
                    budget -= chunk_size
                    if copied:
                        yield copied
                        copied = []
                    time.sleep(0)
                if copied:
                    yield copied
                    copied = []

    def restore(self, records: Iterable[tuple[int, str, bytes]]) -> RestoreResult:
        """Put back sessions from a snapshot: ``(segment, key, value)`` in the order
        :meth:`copy_chunks` gives them (a later copy of a key wins), read as they come (a
        generator reading a file in batches), the store untouched until the last is read.

        Expired sessions are left out, and records the store cannot use (see
        :func:`_expiry`). When they do not all fit in the budget (it was lowered, or the file
        was written by a store with a larger one), the most valuable come back: logged-in, then
        returning, then new sessions, the most recently used of each first. What is kept while
        the records are read never holds much more than the budget: each record that does not
        fit pushes out the least valuable kept so far. Keys already in the store are left alone.
        """
        now = self.clock()
        result = RestoreResult()
        kept, used = self._choose(records, now, result)
        events: list[StoreEvent] = []
        with self._lock:
            policy = self._policy
            if not len(policy):
                # The usual case, a store not yet serving: straight into the segments, the
                # tables measured once at the end.
                for index, chosen in enumerate(kept):
                    policy.segments[index].update(chosen)
                    result.sessions += len(chosen)
                self._entry_bytes += used
                policy.table_bytes = policy.measure_tables()
                for key, value in kept[AUTHENTICATED].items():
                    self._index_add(value, key)  # the key object the policy holds
            else:
                entry = self.sizer.entry
                for index, chosen in enumerate(kept):
                    for key, value in chosen.items():
                        if policy.find(key)[1] is not None:
                            result.left_out += 1
                            continue
                        policy.put(key, value, index, None)
                        self._entry_bytes += entry(len(key), len(value))
                        if index == AUTHENTICATED:
                            self._index_add(value, key)
                        result.sessions += 1
            if self._over_budget():
                self._make_room(
                    self.limits.session_bytes, now, reason="restore", spare=None, events=events
                )
        self._emit(events)
        return result

    def _choose(
        self, records: Iterable[tuple[int, str, bytes]], now: float, result: RestoreResult
    ) -> tuple[list[OrderedDict[str, bytes]], int]:
        """The records a restore keeps, per segment in order, and their bytes; counts what it
        leaves out in ``result``.

        Read one at a time: a record that fits is kept; while the kept ones are over the room
        (or the cap on sessions), the least valuable goes: the coldest of the coldest segment.
        So the kept ones never exceed the room by more than one record, however long the file,
        and what stays is the most valuable that fits. A later copy of a key replaces an earlier
        one (counted once as left out if it had been pushed out meanwhile: a key written while
        the snapshot was copied, a rare case).
        """
        room = self.limits.session_bytes * RESTORE_FILL
        largest = self.limits.max_session_bytes
        cap = self.limits.max_sessions
        entry = self.sizer.entry
        kept: list[OrderedDict[str, bytes]] = [OrderedDict() for _ in SEGMENT_NAMES]
        # A key is in one segment at most: the first pop that finds it ends the search (a
        # value is never empty).
        pop_probation, pop_returning, pop_authenticated = (segment.pop for segment in kept)
        used = count = 0
        for index, key, value in records:
            earlier = (
                pop_probation(key, None) or pop_returning(key, None) or pop_authenticated(key, None)
            )
            if earlier is not None:
                used -= entry(len(key), len(earlier))
                count -= 1
            expires_at = _expiry(index, key, value)
            if expires_at is None:
                result.unreadable += 1
                continue
            if expires_at <= now:
                result.expired += 1
                continue
            size = entry(len(key), len(value))
            if size > largest:
                result.left_out += 1
                continue
            kept[index][key] = value
            used += size
            count += 1
            while used > room or (cap is not None and count > cap):
                for coldest in kept:  # never all empty: the one just kept is there
                    if coldest:
                        break
                dropped_key, dropped = coldest.popitem(last=False)
                used -= entry(len(dropped_key), len(dropped))
                count -= 1
                result.left_out += 1
        return kept, used

    # -- who is logged in -----------------------------------------------------------------------

    def user_sessions(self, user: str) -> list[SessionFacts]:
        """The live sessions of ``user`` (Django's ``_auth_user_id`` text), most recently used
        first. O(their sessions); the values are decoded outside the lock."""
        now = self.clock()
        wanted = user_key(user)
        with self._lock:
            found = [(key, self._policy.find(key)[1]) for key in self._users.keys(wanted)]
        rows = [
            facts.read_facts(key, value)
            for key, value in found
            if value is not None and HEADER.unpack_from(value)[0] > now
        ]
        rows.sort(key=lambda row: (row.last_used, row.created), reverse=True)
        return rows

    def note_client(self, key: str, client: str) -> bool:
        """Note ``client`` (opaque text) for a logged-in session if it differs from the one
        noted; whether it changed. Not a write of the session: not journaled."""
        encoded = facts.encode(client)
        with self._lock:
            index, value = self._policy.find(key)
            if index != AUTHENTICATED or value is None:
                return False
            user, created, old_client = facts.carried(value)
            if old_client == encoded:
                return False
            offset = facts.payload_offset(value)
            expires_at, epoch = HEADER.unpack_from(value)
            new_value = facts.facts_value(
                expires_at,
                epoch,
                created,
                facts.last_used_of(value),
                user,
                encoded,
                value[offset:],
            )
            size = self.sizer.entry(len(key), len(new_value))
            if size > self.limits.max_session_bytes:
                return False
            self._entry_bytes += size - self.sizer.entry(len(key), len(value))
            if self._policy.put(key, new_value, index, index):
                self._index_add(new_value, key)  # it was in a prune walk's front: re-pointed
        return True

    # -- inspection and tests ----------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        with self._lock:
            segments = self._policy.sizes()
            figures: dict[str, object] = {
                "pid": os.getpid(),
                "entries": len(self._policy),
                "bytes": self._total(),
                "max_bytes": self.limits.max_bytes,
                "low_water_bytes": self.limits.low_water_bytes,
                "max_session_bytes": self.limits.max_session_bytes,
                "remembered": len(self._remembered),
                "remembered_bytes": self._remembered.bytes,
                "users": len(self._users),
                "user_index_bytes": self._users.bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "expired": self.expired,
                "restored": self.restored,
                "rejected": self.rejected,
                "segments": segments,
                "created_at": self.created_at,
            }
        return figures

    def clear(self) -> None:
        """Empty the store and reset its counters (for tests)."""
        with self._lock:
            self._policy = SegmentedLRU()
            self._remembered = RememberedKeys(self.sizer)
            self._users = UserIndex()
            self._entry_bytes = 0
            self._reset_counters()

    def reconfigure(self, limits: Limits) -> None:
        """New limits; sessions stay, evicting what no longer fits."""
        events: list[StoreEvent] = []
        with self._lock:
            self.limits = limits
            self._remembered.trim(limits.remember_bytes)
            if self._over_budget():
                self._make_room(
                    limits.session_bytes, self.clock(), reason="settings", spare=None, events=events
                )
        self._emit(events)

    def containers(self) -> tuple[dict[object, object], ...]:
        """Every container the store holds: what its size is the size of (for tests)."""
        policy = self._policy
        return (  # type: ignore[return-value]
            *policy.segments,
            *policy.fronts,
            self._remembered.keys,
            self._users.users,
        )

    @property
    def served(self) -> bool:
        """Whether a request ever used this store (a load or a save), as opposed to a process
        that only built it (gunicorn's --preload master, whose app called ``stats()``)."""
        return bool(self.hits or self.misses or self.writes)

    def accounted_bytes(self) -> int:
        """The store's size measured afresh (for tests: it must equal ``stats()["bytes"]``)."""
        with self._lock:
            return sum(self._measure())

    def after_fork_in_child(self, consistent: bool) -> None:
        """A fresh lock for the child; recount if the fork may have caught a write half-done."""
        self._lock = threading.Lock()
        self._prune_lock = threading.Lock()
        self.created_at = self.clock()
        if not consistent:
            (
                self._entry_bytes,
                self._policy.table_bytes,
                self._remembered.bytes,
                self._users.bytes,
            ) = self._measure()
            self._policy.measure_fronts()

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    # -- internals (call with the lock held) ---------------------------------------------------

    def _session_bytes(self) -> int:
        """What writes are charged for: sessions and their tables, less a prune walk's passing
        second table (counted in the store's size, but evicting live sessions to pay for a table
        freed a moment later would throw away a tenth of a full store on every pass)."""
        return (
            self._entry_bytes
            + self._policy.table_bytes
            - self._policy.front_bytes
            + self._users.bytes
        )

    def _charged_total(self) -> int:
        """The store's size as the low-water mark sees it: sessions (as writes are charged for
        them) and remembered keys."""
        return self._session_bytes() + self._remembered.bytes

    def _total(self) -> int:
        return (
            self._entry_bytes
            + self._policy.table_bytes
            + self._remembered.bytes
            + self._users.bytes
        )

    def _measure(self) -> tuple[int, int, int, int]:
        """Entry, table, remembered and user index bytes measured afresh (O(n): tests and
        after a fork)."""
        sizer = self.sizer
        entries = sum(sizer.entry(len(key), len(value)) for key, value in self._policy.items())
        return (
            entries,
            self._policy.measure_tables(),
            self._remembered.measure(),
            self._users.measure(),
        )

    def _make_room(
        self,
        target: int,
        now: float,
        *,
        reason: str,
        spare: str | None,
        events: list[StoreEvent],
        max_evictions: int | None = None,
        with_remembered: bool = False,
    ) -> int:
        """Remove entries until the sessions' bytes (``with_remembered``: the total) are at most
        ``target``: expired first, then LRU. ``reason`` says why, in the events it adds.

        Returns how many entries were evicted. ``spare`` (the entry just written) is never taken;
        ``max_evictions`` bounds one call (the background shrink works in chunks).
        """
        used = self._charged_total if with_remembered else self._session_bytes

        expired_count = expired_bytes = 0
        probe = [
            (index, key, value)
            for index, key, value in self._policy.coldest(EXPIRED_PROBE)
            if HEADER.unpack_from(value)[0] <= now and key != spare
        ]

        def over() -> bool:
            return used() > target or self._over_count()

        for index, key, value in probe:
            if not over():
                break
            expired_count += 1
            expired_bytes += self._drop(key, index, value)
        evicted_count = evicted_bytes = 0
        while over() and (max_evictions is None or evicted_count < max_evictions):
            victim = self._policy.victim(spare)
            if victim is None:
                if not (with_remembered and self._remembered.drop_oldest()):
                    break
                continue
            index, key, value = victim
            size = self._drop(key, index, value)
            evicted_count += 1
            evicted_bytes += size
            self._remembered.remember(key, HEADER.unpack_from(value)[0], self.limits.remember_bytes)
        if expired_count:
            self.expired += expired_count
            events.append(StoreEvent("expired", expired_count, expired_bytes, reason))
        if evicted_count:
            self.evictions += evicted_count
            events.append(StoreEvent("evicted", evicted_count, evicted_bytes, reason))
        return evicted_count

    def _remove_expired(
        self, key: str, index: int, value: bytes, events: list[StoreEvent], reason: str
    ) -> None:
        size = self._drop(key, index, value)
        self.expired += 1
        events.append(StoreEvent("expired", 1, size, reason))

    def _drop(self, key: str, index: int, value: bytes) -> int:
        """Remove an entry from the policy, the running total and the user index; its size."""
        self._policy.remove(key, index)
        size = self.sizer.entry(len(key), len(value))
        self._entry_bytes -= size
        if index == AUTHENTICATED:
            self._index_remove(value, key)
        return size

    def _index_add(self, value: bytes, key: str) -> int:
        """Index a logged-in session under its user (``key``: the object the policy holds);
        how many sessions the user has (0: no user id given, not indexed)."""
        user = facts.user_of(value)
        if not user:
            return 0
        return self._users.add(user_key(user.decode(errors="replace")), key)

    def _index_remove(self, value: bytes, key: str) -> None:
        user = facts.user_of(value)
        if user:
            self._users.remove(user_key(user.decode(errors="replace")), key)

    def _end_over_limit(
        self,
        value: bytes,
        key: str,
        limit: int,
        events: list[StoreEvent],
        journal: list[tuple[str, int]],
    ) -> None:
        """The user of ``value`` just logged in beyond ``limit`` sessions: end their least
        recently used others (as a logout: not remembered, journaled)."""
        user_text = facts.user_of(value).decode(errors="replace")
        user = user_key(user_text)
        others = []
        for other in self._users.keys(user):
            if other != key:
                index, other_value = self._policy.find(other)
                if other_value is not None:
                    others.append((facts.last_used_of(other_value), other, index, other_value))
        others.sort(key=lambda row: row[0])
        count = size = 0
        for _, other, index, other_value in others[: max(0, len(others) + 1 - limit)]:
            self._remembered.forget(other)
            size += self._drop(other, index, other_value)
            count += 1
            if self.on_mirror is not None:
                self.on_mirror(other, None, 0.0)
            if self.epoch != NOT_JOURNALED:
                journal.append((other, self.epoch))
        if count:
            events.append(StoreEvent("ended", count, size, "limit", user=user_text))

    def _over_count(self) -> bool:
        cap = self.limits.max_sessions
        return cap is not None and len(self._policy) > cap

    def _over_budget(self) -> bool:
        return self._session_bytes() > self.limits.session_bytes or self._over_count()

    def _emit(self, events: list[StoreEvent]) -> None:
        if self.on_event is not None and events:
            self.on_event(events)
