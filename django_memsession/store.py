"""The process-global session memory: entries, byte budget, recency, expiry, eviction, counters.

Knows nothing of Django requests (the engine in ``engine.py`` does). Time comes from an injected
clock and sizes from an injected :class:`~django_memsession.sizing.EntrySizer`, so tests move time
instead of sleeping.

Layout, chosen for memory (see README, "Memory"): one ``bytes`` value per session, whose first 8
bytes are its expiry time, so an entry is a key, a value and a slot in an ``OrderedDict``; no
per-entry tuple, float or bookkeeping object. Recency is the ``OrderedDict`` order.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from itertools import islice

from .sizing import EntrySizer, table_size

__all__ = ["EntryTooLarge", "Limits", "MemoryStore", "PutResult", "SegmentedLRU", "StoreEvent"]

HEADER = struct.Struct("<d")  # expires_at, seconds since the epoch, on the store's clock
HEADER_SIZE = HEADER.size

# Segments, coldest first: eviction takes from the first non-empty one.
PROBATION, RETURNING, AUTHENTICATED = 0, 1, 2
SEGMENT_NAMES = ("probation", "returning", "authenticated")

KEY_LENGTH = 32  # of the keys the engine makes (Django's length); estimates use it

# How many of the coldest entries of each segment a write over budget looks at for expired ones
# before it evicts live sessions: bounded work per request; the pruner does the thorough job.
EXPIRED_PROBE = 8


class EntryTooLarge(ValueError):
    """One entry alone is larger than the per-session limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"entry of {size} bytes exceeds the per-session limit of {limit} bytes")
        self.size = size
        self.limit = limit


class PutResult(Enum):
    STORED = "stored"
    RESTORED = "restored"  # a recently evicted key came back: stored again
    EXISTS = "exists"  # create of a key that is live
    MISSING = "missing"  # update of a key that is gone (deleted, expired, or forgotten)


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_session_bytes: int
    low_water: float

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
        """The rest, for sessions and their tables.

        Remembering a key takes room too; were it taken from the sessions' room, each eviction
        would free only a fraction of what it evicts, and one write could cascade into many
        evictions. A slice of its own keeps one eviction's effect whole.
        """
        return self.max_bytes - self.remember_bytes


@dataclass(frozen=True)
class StoreEvent:
    """Something that removed sessions, reported once per batch after the lock is released."""

    kind: str  # "evicted" or "expired"
    count: int
    bytes: int
    reason: str  # "write" (a save over budget), "prune", "load", "shrink"


@dataclass
class PruneResult:
    removed: int = 0
    bytes_freed: int = 0
    evicted: int = 0
    bytes_evicted: int = 0
    longest_lock_hold: float = 0.0
    events: list[StoreEvent] = field(default_factory=list)


_EMPTY_FRONTS = len(SEGMENT_NAMES) * table_size(OrderedDict())


class SegmentedLRU:
    """The eviction policy: three LRU segments, the coldest evicted first.

    - *probation*: sessions that were created but never came back; a flood of new anonymous
      sessions only ever competes with itself here;
    - *returning*: anonymous sessions that were loaded again in a later request (a real cart);
    - *authenticated*: sessions carrying Django's auth keys.

    Within a segment, the least recently used goes first. A later segment is touched only when
    every earlier one is empty, so anonymous traffic cannot evict logged-in users while they fit.

    Each segment is two ``OrderedDict`` s, *front* and *back*, whose order is front then back;
    outside a prune pass the front is empty. A pass walks the back from its cold end in chunks,
    dropping expired entries and moving the others, in order, to the end of the front, so the
    lock is released between chunks without losing the walk's place (an ``OrderedDict``
    iterator dies at the first change, and copying a million keys up front holds the lock for
    a quarter of a second). Hits and writes always go to the end of the back, so the order stays
    exact LRU throughout. When the back is empty the two swap.

    ``table_bytes`` is the exact size of the containers beyond their entries' list nodes
    (:func:`~django_memsession.sizing.table_size`), kept up to date by every method that adds or
    removes an entry. It is not a per-entry constant: a table's share per entry swings by a
    factor of two with its fill, and under steady churn (new sessions in, old ones out) a table
    settles at up to three slots per live entry. ``front_bytes`` is the part of it in the fronts:
    during a walk, how far the second table of the segment being walked has grown; it is freed
    when the walk is through.
    """

    __slots__ = ("front_bytes", "fronts", "segments", "table_bytes")

    def __init__(self) -> None:
        self.segments: tuple[OrderedDict[str, bytes], ...] = tuple(
            OrderedDict() for _ in SEGMENT_NAMES
        )
        self.fronts: list[OrderedDict[str, bytes]] = [OrderedDict() for _ in SEGMENT_NAMES]
        self.table_bytes = self.measure_tables()
        self.front_bytes = 0

    def find(self, key: str) -> tuple[int, bytes] | tuple[None, None]:
        # Authenticated first: on the sites this is built for, most requests are logged in.
        for index in (AUTHENTICATED, RETURNING, PROBATION):
            value = self.segments[index].get(key)
            if value is None and self.fronts[index]:
                value = self.fronts[index].get(key)
            if value is not None:
                return index, value
        return None, None

    def _insert(self, container: OrderedDict[str, bytes], key: str, value: bytes) -> None:
        before = table_size(container)
        container[key] = value
        self.table_bytes += table_size(container) - before

    def _pop(self, key: str, index: int) -> bytes:
        container = self.segments[index]
        in_front = key not in container
        if in_front:
            container = self.fronts[index]
        before = table_size(container)
        value = container.pop(key)
        self.table_bytes += table_size(container) - before
        if in_front:
            self.measure_fronts()
        return value

    def touch(self, key: str, index: int) -> None:
        """A hit: most recently used; a probation entry that comes back is promoted."""
        back = self.segments[index]
        if index == PROBATION:
            self._insert(self.segments[RETURNING], key, self._pop(key, PROBATION))
        elif key in back:
            back.move_to_end(key)
        else:
            self._insert(back, key, self._pop(key, index))

    def segment_for_write(self, previous: int | None, authenticated: bool) -> int:
        """Where a saved session goes, given the segment it was in (None: it is new)."""
        if authenticated:
            return AUTHENTICATED
        if previous is None:
            return PROBATION
        return RETURNING if previous == AUTHENTICATED else previous

    def put(self, key: str, value: bytes, index: int, old_index: int | None) -> None:
        back = self.segments[index]
        if old_index == index and key in back:
            # In place: a new entry slot per update would make the table resize (O(n)) every
            # few hundred thousand updates of a large store.
            back[key] = value
            back.move_to_end(key)
            return
        if old_index is not None:
            self._pop(key, old_index)
        self._insert(back, key, value)

    def remove(self, key: str, index: int) -> None:
        self._pop(key, index)

    def _ordered(self, index: int) -> Iterator[tuple[str, bytes]]:
        yield from self.fronts[index].items()
        yield from self.segments[index].items()

    def coldest(self, limit: int) -> Iterator[tuple[int, str, bytes]]:
        """Up to ``limit`` entries of each segment from its cold end, coldest segment first."""
        for index in range(len(SEGMENT_NAMES)):
            for taken, (key, value) in enumerate(self._ordered(index)):
                if taken >= limit:
                    break
                yield index, key, value

    def victim(self, spare: str | None) -> tuple[int, str, bytes] | None:
        """The entry to evict next: the LRU of the coldest non-empty segment, never ``spare``.

        ``spare`` (the entry just written) sits at its segment's hot end, so skipping it costs at
        most one step.
        """
        for index in range(len(SEGMENT_NAMES)):
            for key, value in self._ordered(index):
                if key != spare:
                    return index, key, value
        return None

    def scan(self, index: int, limit: int, expired: Callable[[str, bytes], bool]) -> bool:
        """One chunk of a prune walk over segment ``index``: up to ``limit`` entries from the
        cold end of its back; those for which ``expired(key, value)`` is true are dropped, the
        rest move to the end of the front. Returns whether the walk is through."""
        back, front = self.segments[index], self.fronts[index]
        back_before, front_before = table_size(back), table_size(front)
        # Keys, not items: a tuple per entry would be a GC-tracked allocation, and a collection
        # started inside the chunk would traverse every table of the store with the lock held.
        for key in list(islice(back, limit)):
            value = back.pop(key)
            if not expired(key, value):
                front[key] = value
        through = not back
        if through:
            # The front becomes the segment, and the old back goes with its table, which is as
            # large as the segment ever was (dicts never shrink).
            self.segments = tuple(
                front if i == index else segment for i, segment in enumerate(self.segments)
            )
            back = self.fronts[index] = OrderedDict()  # the new front
        self.table_bytes += table_size(back) + table_size(front) - back_before - front_before
        self.measure_fronts()
        return through

    def measure_fronts(self) -> None:
        self.front_bytes = sum(map(table_size, self.fronts)) - _EMPTY_FRONTS

    def items(self) -> Iterator[tuple[str, bytes]]:
        for index in range(len(SEGMENT_NAMES)):
            yield from self._ordered(index)

    def measure_tables(self) -> int:
        """``table_bytes`` measured afresh (for tests: it must equal the running figure)."""
        return sum(map(table_size, (*self.segments, *self.fronts)))

    def __len__(self) -> int:
        return sum(len(segment) for segment in self.segments) + sum(map(len, self.fronts))

    def sizes(self) -> dict[str, int]:
        return {
            name: len(self.segments[index]) + len(self.fronts[index])
            for index, name in enumerate(SEGMENT_NAMES)
        }


class MemoryStore:
    """Sessions in memory under a byte budget. Every operation is O(1) in the number of entries.

    ``get``/``put``/``delete``/``exists`` are what a request uses; ``prune_expired`` and
    ``shrink`` are background work done in chunks, releasing the lock between chunks.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.time,
        sizer: EntrySizer | None = None,
        on_event: Callable[[list[StoreEvent]], None] | None = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.sizer = sizer or EntrySizer()
        self.on_event = on_event
        self._lock = threading.Lock()
        self._prune_lock = threading.Lock()
        self._policy = SegmentedLRU()
        # Recently evicted keys -> the expiry they had: a save of one stores it again.
        self._remembered: OrderedDict[str, float] = OrderedDict()
        # Running totals; with the policy's table_bytes they make up the store's size.
        self._entry_bytes = 0  # sessions: key, value, list node
        self._remembered_bytes = table_size(self._remembered)  # remembered keys and their table
        self.created_at = clock()
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expired = 0
        self.restored = 0
        self.rejected = 0

    # -- the request path ---------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The stored payload of a live session (and it becomes most recently used), or None."""
        now = self.clock()
        events = None
        with self._lock:
            index, value = self._policy.find(key)
            if value is None:
                self.misses += 1
                return None
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

    def put(
        self, key: str, payload: bytes, expires_at: float, *, authenticated: bool, create: bool
    ) -> PutResult:
        """Store a session. ``create`` fails on a live key; an update fails on a missing one.

        An update of a key evicted recently (and not deleted or expired since) stores it again:
        eviction is not logout. Raises :class:`EntryTooLarge` before touching anything.
        """
        value = HEADER.pack(expires_at) + payload
        size = self.sizer.entry(len(key), len(value))
        if size > self.limits.max_session_bytes:
            with self._lock:
                self.rejected += 1
            raise EntryTooLarge(size, self.limits.max_session_bytes)
        now = self.clock()
        events: list[StoreEvent] = []
        with self._lock:
            index, old_value = self._policy.find(key)
            was_expired = old_value is not None and HEADER.unpack_from(old_value)[0] <= now
            if was_expired:
                self._remove_expired(key, index, old_value, events, "write")
                index = old_value = None
            if old_value is not None:  # a live session
                if create:
                    return PutResult.EXISTS
                self._entry_bytes -= self.sizer.entry(len(key), len(old_value))
                previous, result = index, PutResult.STORED
            elif create:
                self._forget(key)
                previous, result = None, PutResult.STORED
            else:
                remembered_until = None if was_expired else self._forget(key)
                if remembered_until is None or remembered_until <= now:
                    result = PutResult.MISSING
                else:
                    # Somebody is using it right now: not a probation newcomer.
                    previous, result = RETURNING, PutResult.RESTORED
                    self.restored += 1
            if result is not PutResult.MISSING:
                segment = self._policy.segment_for_write(previous, authenticated)
                self._policy.put(key, value, segment, index)
                self._entry_bytes += size
                if self._session_bytes() > self.limits.session_bytes:
                    self._make_room(self.limits.session_bytes, now, spare=key, events=events)
        if events:
            self._emit(events)
        return result

    def delete(self, key: str) -> bool:
        """Remove a session for good (logout, flush): it is not remembered, so never restored."""
        with self._lock:
            self._forget(key)
            index, value = self._policy.find(key)
            if value is None:
                return False
            self._policy.remove(key, index)
            self._entry_bytes -= self.sizer.entry(len(key), len(value))
            return True

    # -- background work, in chunks -----------------------------------------------------------

    def prune_expired(self, *, chunk_size: int = 1000, dry_run: bool = False) -> PruneResult:
        """Remove every expired session (and forget expired remembered keys).

        Walks each segment in chunks of ``chunk_size`` entries (see :class:`SegmentedLRU`),
        holding the lock for one chunk at a time and yielding between chunks, so a request waits
        on a prune for a fraction of a millisecond per chunk, however many sessions there are.
        """
        result = PruneResult()
        now = self.clock()

        def expired(key: str, value: bytes) -> bool:
            if HEADER.unpack_from(value)[0] > now:
                return False
            size = self.sizer.entry(len(key), len(value))
            result.removed += 1
            result.bytes_freed += size
            if dry_run:
                return False
            self._entry_bytes -= size
            self.expired += 1
            return True

        with self._prune_lock:  # one walk at a time; requests never wait on this lock
            for index in range(len(SEGMENT_NAMES)):
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
        if not dry_run and result.removed:
            result.events.append(StoreEvent("expired", result.removed, result.bytes_freed, "prune"))
            self._emit(result.events)
        return result

    def _forget_expired(self, now: float, chunk_size: int) -> None:
        """Drop remembered keys whose sessions would have expired by now, in chunks.

        One turn of the queue: each key is taken from the front and, while still restorable,
        put back at the end. Putting back takes a new slot of the table, which may grow it.
        """
        with self._lock:
            remaining = len(self._remembered)
        while remaining > 0:
            with self._lock:
                remembered = self._remembered
                table_before = table_size(remembered)
                for _ in range(min(chunk_size, remaining, len(remembered))):
                    key, until = remembered.popitem(last=False)
                    if until > now:
                        remembered[key] = until
                    else:
                        self._remembered_bytes -= self.sizer.remembered(len(key))
                self._remembered_bytes += table_size(remembered) - table_before
                self._trim_remembered()  # a table that grew may not fit the slice any more
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
        result = PruneResult()
        target = self.limits.low_water_bytes
        if dry_run:
            with self._lock:
                excess = self._charged_total() - freed_first - target
                entries, entry_bytes = len(self._policy), self._entry_bytes
                room = self.limits.remember_bytes - self._remembered_bytes
            if excess > 0 and entries:
                mean = entry_bytes / entries
                remembered = self.sizer.remembered(KEY_LENGTH)
                while_room = max(0, room) // remembered  # evictions that also remember a key
                if excess <= while_room * (mean - remembered):
                    evictions = math.ceil(excess / (mean - remembered))
                else:
                    rest = excess - while_room * (mean - remembered)
                    evictions = while_room + math.ceil(rest / mean)
                result.evicted = min(entries, evictions)
                result.bytes_evicted = round(result.evicted * mean)
            return result
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
                    result.bytes_evicted += event.bytes
                else:
                    result.removed += event.count
                    result.bytes_freed += event.bytes
            if events:
                self._emit([StoreEvent(e.kind, e.count, e.bytes, "shrink") for e in events])
            if not evicted:
                break
            time.sleep(0)
        return result

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
                "remembered_bytes": self._remembered_bytes,
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
            self._remembered = OrderedDict()
            self._entry_bytes = 0
            self._remembered_bytes = table_size(self._remembered)
            self._reset_counters()

    def reconfigure(self, limits: Limits) -> None:
        """New limits; sessions stay, evicting what no longer fits."""
        events: list[StoreEvent] = []
        with self._lock:
            self.limits = limits
            self._trim_remembered()
            if self._session_bytes() > limits.session_bytes:
                self._make_room(limits.session_bytes, self.clock(), spare=None, events=events)
        if events:
            self._emit(events)

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
            self._entry_bytes, self._policy.table_bytes, self._remembered_bytes = self._measure()
            self._policy.measure_fronts()

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    # -- internals (call with the lock held) ---------------------------------------------------

    def _session_bytes(self) -> int:
        """What writes are charged for: sessions and their tables, less a prune walk's passing
        second table (counted in the store's size, but evicting live sessions to pay for a table
        freed a moment later would throw away a tenth of a full store on every pass)."""
        return self._entry_bytes + self._policy.table_bytes - self._policy.front_bytes

    def _charged_total(self) -> int:
        """The store's size as the low-water mark sees it: sessions (as writes are charged for
        them) and remembered keys."""
        return self._session_bytes() + self._remembered_bytes

    def _total(self) -> int:
        return self._entry_bytes + self._policy.table_bytes + self._remembered_bytes

    def _measure(self) -> tuple[int, int, int]:
        """Entry, table and remembered bytes measured afresh (O(n): tests and after a fork)."""
        sizer = self.sizer
        entries = sum(sizer.entry(len(key), len(value)) for key, value in self._policy.items())
        remembered = table_size(self._remembered) + sum(
            sizer.remembered(len(key)) for key in self._remembered
        )
        return entries, self._policy.measure_tables(), remembered

    def _make_room(
        self,
        target: int,
        now: float,
        *,
        spare: str | None,
        events: list[StoreEvent],
        max_evictions: int | None = None,
        with_remembered: bool = False,
    ) -> int:
        """Remove entries until the sessions' bytes (``with_remembered``: the total) are at most
        ``target``: expired first, then LRU.

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
        for index, key, value in probe:
            if used() <= target:
                break
            size = self.sizer.entry(len(key), len(value))
            self._policy.remove(key, index)
            self._entry_bytes -= size
            expired_count += 1
            expired_bytes += size
        evicted_count = evicted_bytes = 0
        while used() > target and (max_evictions is None or evicted_count < max_evictions):
            victim = self._policy.victim(spare)
            if victim is None:
                if not (with_remembered and self._drop_oldest_remembered()):
                    break
                continue
            index, key, value = victim
            size = self.sizer.entry(len(key), len(value))
            self._policy.remove(key, index)
            self._entry_bytes -= size
            evicted_count += 1
            evicted_bytes += size
            self._remember(key, HEADER.unpack_from(value)[0])
        if expired_count:
            self.expired += expired_count
            events.append(StoreEvent("expired", expired_count, expired_bytes, "write"))
        if evicted_count:
            self.evictions += evicted_count
            events.append(StoreEvent("evicted", evicted_count, evicted_bytes, "write"))
        return evicted_count

    def _remember(self, key: str, expires_at: float) -> None:
        before = table_size(self._remembered)
        self._remembered[key] = expires_at
        self._remembered_bytes += (
            self.sizer.remembered(len(key)) + table_size(self._remembered) - before
        )
        self._trim_remembered()

    def _trim_remembered(self) -> None:
        while self._remembered_bytes > self.limits.remember_bytes:
            if not self._drop_oldest_remembered():
                break

    def _drop_oldest_remembered(self) -> bool:
        if not self._remembered:
            return False
        key, _ = self._remembered.popitem(last=False)
        self._remembered_bytes -= self.sizer.remembered(len(key))
        return True

    def _forget(self, key: str) -> float | None:
        until = self._remembered.pop(key, None)
        if until is not None:
            self._remembered_bytes -= self.sizer.remembered(len(key))
        return until

    def _remove_expired(
        self, key: str, index: int, value: bytes, events: list[StoreEvent], reason: str
    ) -> None:
        self._policy.remove(key, index)
        size = self.sizer.entry(len(key), len(value))
        self._entry_bytes -= size
        self.expired += 1
        events.append(StoreEvent("expired", 1, size, reason))

    def _emit(self, events: list[StoreEvent]) -> None:
        if self.on_event is not None and events:
            self.on_event(events)
