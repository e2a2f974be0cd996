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

This module is the request path (``get``, ``put``, ``delete``, ``exists``; no async twins: the
store does no I/O, so the engine's async methods make the same calls from the loop)
and the internals every job uses under the lock (``_make_room``, ``_drop``, the byte totals).
The lock keeps the store one class: the other jobs hold the same lock over the same tables, so
they are methods too, each in a module of its own, mixed in: pruning and shrinking
(``pruning.py``), snapshot copy and restore (``copying.py``), the user index's upkeep and queries
(``indexing.py``), inspection and upkeep (``upkeep.py``). The record format is ``record.py``;
what the store takes and gives back, ``results.py``. The request path's methods are defined
here, on the class itself: splitting added no call or lookup to a load or a save.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

from ..clock import wall_clock
from ..sizing import EntrySizer
from . import index as facts
from .copying import SnapshotCopy
from .index import FACTS, FACTS_SIZE, UserIndex
from .indexing import Indexing
from .lru import AUTHENTICATED, PROBATION, RETURNING, SegmentedLRU
from .pruning import Pruning
from .record import CARRIED, HEADER, HEADER_SIZE, NOT_JOURNALED, TIMES
from .remembered import RememberedKeys
from .results import EntryTooLarge, Limits, PruneResult, PutResult, RestoreResult, StoreEvent
from .upkeep import Upkeep

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "NOT_JOURNALED",
    "EntryTooLarge",
    "Limits",
    "MemoryStore",
    "PruneResult",
    "PutResult",
    "RestoreResult",
    "StoreEvent",
    "wall_clock",
]


class Rebased(NamedTuple):
    """What a save's ``rebase`` callback gives :meth:`MemoryStore.put` to write instead, made
    from the payload stored now: the payload, its expiry, its user (None: anonymous), and
    whether the merge found a conflict (for the ``conflicts`` counter)."""

    payload: bytes
    expires_at: float
    user: str | None
    conflicted: bool


class Merging(NamedTuple):
    """A merged save (see merge.py), for :meth:`MemoryStore.put`: whether the merge found a
    conflict (counted once stored), and the ``rebase`` callback of the last try, or None."""

    conflicted: bool
    rebase: Callable[[bytes], Rebased] | None = None


def _holds(value: bytes, start: int, payload: bytes) -> bool:
    """Whether a stored value's payload (from ``start``) is ``payload``: one length check and a
    memcmp, no copy."""
    return len(value) - start == len(payload) and value.endswith(payload)


def _payload_start(value: bytes, index: int) -> int:
    """Where a stored value's payload starts: after its header, or a logged-in session's facts."""
    if index != AUTHENTICATED:
        return HEADER_SIZE
    user_length, client_length = FACTS.unpack_from(value)[-2:]
    return FACTS_SIZE + user_length + client_length


# A hint no stored value is (every one has a header): pack again under the lock.
_STALE = b""

# How many of the coldest entries of each segment a write over budget looks at for expired ones
# before it evicts live sessions: bounded work per request; the pruner does the thorough job.
EXPIRED_PROBE = 8


class MemoryStore(Pruning, SnapshotCopy, Indexing, Upkeep):
    """Sessions in memory under a byte budget. Every operation is O(1) in the number of entries.

    ``get``/``put``/``delete``/``exists`` are what a request uses (sync or async: no I/O);
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
        self.merged = 0  # of those, saves merged onto another request's save (see merge.py)
        self.conflicts = 0  # of those, merges where both changed a key differently

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

    def peek(self, key: str) -> bytes | None:
        """The stored payload of a live session, or None; without counting a hit or changing
        recency (a conflicting save reads what it merges onto)."""
        now = self.clock()
        with self._lock:
            index, value = self._policy.find(key)
        if value is None or HEADER.unpack_from(value)[0] <= now:
            return None
        return value[_payload_start(value, index) :]

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
            created, user_length, client_length = CARRIED.unpack_from(old, 12)
            if user_length == len(user) and old.startswith(user, FACTS_SIZE):
                if client is None:
                    end = FACTS_SIZE + user_length + client_length
                    head = TIMES.pack(expires_at, tag, created, second)
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
        expected: bytes | None = None,
        merging: Merging | None = None,
    ) -> PutResult:
        """Store a session. ``create`` fails on a present key; an update fails on a missing one.

        A create fails on a key whose session expired but was not pruned yet too, as with
        Django's db engine (the row is still there). An update of a key evicted recently (and
        not deleted or expired since) stores it again: eviction is not logout. Raises
        :class:`EntryTooLarge` before touching anything.

        A logged-in session (``authenticated``) is indexed under ``user`` (Django's
        ``_auth_user_id``; not indexed without it) with its facts; ``client`` (opaque text)
        replaces the client noted for it, None keeps it.

        ``expected`` (an update): the payload this save's request loaded. If a live session holds
        another payload now (another request saved it since), nothing is written and the result
        is ``CONFLICT``; or, given ``merging.rebase``, it is called under the lock with the payload
        held now and its :class:`Rebased` is written instead (a merge that cannot fail: the last
        try of a conflicting save). ``merging`` counts a merged save, once it is stored.
        """
        now = self.clock()
        if not create and client is None and merging is None:
            result = self._update_in_place(
                key, payload, expires_at, authenticated, user, now, expected
            )
            if result is not None:
                return result
        hint = user_bytes = None
        client_bytes = None if client is None else facts.encode(client)
        new_to_user = True
        if authenticated:
            user_bytes = self._user_bytes(user)
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
            if expected is not None and old_value is not None:
                start = _payload_start(old_value, index)
                if not _holds(old_value, start, expected):
                    if merging is None or merging.rebase is None:
                        return PutResult.CONFLICT
                    payload, expires_at, user, conflicted = merging.rebase(old_value[start:])
                    merging, authenticated = Merging(conflicted), user is not None
                    user_bytes = self._user_bytes(user) if authenticated else None
                    if user_bytes is None:
                        new_to_user = True
                        value = HEADER.pack(expires_at, tag) + payload
                        size = self.sizer.entry(len(key), len(value))
                    else:
                        hint = _STALE  # packed below, from what is stored now
            if source is not hint and user_bytes is not None:
                # The session changed since the value was packed: packed again, with the tag
                # it was journaled under.
                value, new_to_user = self._pack_facts(
                    payload, expires_at, tag, user_bytes, client_bytes, source, now
                )
                size = self.sizer.entry(len(key), len(value))
            if merging is not None and size > self.limits.max_session_bytes:
                self.rejected += 1
                raise EntryTooLarge(size, self.limits.max_session_bytes)
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
                if merging is not None:
                    self.merged += 1
                    self.conflicts += merging.conflicted
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
                    count = self._index_add(value, key, user_bytes)
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

    @staticmethod
    def _user_bytes(user: str | None) -> bytes:
        """A logged-in session's user id as its facts keep it."""
        user_bytes = user.encode() if user else b""
        if len(user_bytes) > facts.MAX_FIELD:
            user_bytes = facts.encode(user)
        return user_bytes

    def _update_in_place(
        self,
        key: str,
        payload: bytes,
        expires_at: float,
        authenticated: bool,
        user: str | None,
        now: float,
        expected: bytes | None,
    ) -> PutResult | None:
        """The save nearly every request makes, without :meth:`put`'s general path: an update
        of a live session that stays in its segment's table, logged in as the same user, or
        anonymous. None: not that case (or something changed meanwhile), nothing done.

        The session's current value is read without the lock (one ``dict.get``, atomic under
        the GIL), the new one packed from it outside the lock, and stored only if the value is
        still the same object under the lock; so ``expected`` is compared with it outside the
        lock too (``CONFLICT``: it holds another payload).
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
        if expected is not None:
            # _holds(), inlined: every save of a loaded session comes here.
            start = FACTS_SIZE + user_length + client_length if authenticated else HEADER_SIZE
            if len(old) - start != len(expected) or not old.endswith(expected):
                return PutResult.CONFLICT
        tag = NOT_JOURNALED
        if self.epoch != NOT_JOURNALED:
            tag = self._journal_first(key)
        if authenticated:
            end = FACTS_SIZE + user_length + client_length
            if now < last_used + 1:  # used this second (the load before this save noted it)
                value = b"".join((HEADER.pack(expires_at, tag), old[12:end], payload))
            else:
                head = TIMES.pack(expires_at, tag, created, int(now))
                value = b"".join((head, old[20:end], payload))
        else:
            value = HEADER.pack(expires_at, tag) + payload
        entry = self.sizer.entry
        size = entry(len(key), len(value))
        if size > self.limits.max_session_bytes:
            return None  # refused (and counted) by the general path
        events: list[StoreEvent] | None = None  # (made only when a write evicts)
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
                events = []
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

    def _over_count(self) -> bool:
        cap = self.limits.max_sessions
        return cap is not None and len(self._policy) > cap

    def _over_budget(self) -> bool:
        return self._session_bytes() > self.limits.session_bytes or self._over_count()

    def _emit(self, events: list[StoreEvent]) -> None:
        if self.on_event is not None and events:
            self.on_event(events)
