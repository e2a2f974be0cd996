"""The memory store's background work, in chunks: removing expired sessions (``prune_expired``)
and bringing an over-full store down to the low-water mark (``shrink``).

A mixin of :class:`~django_memsession.memory.store.MemoryStore`: its methods hold the store's
lock over the store's tables and use its internals (``_lock``, ``_policy``, ``_emit``...); why the
lock keeps the store one class is in ``store.py``'s docstring.
"""

from __future__ import annotations

import math
import time

from .lru import AUTHENTICATED, SEGMENT_NAMES
from .record import HEADER
from .results import PruneResult, StoreEvent

__all__ = ["Pruning"]


class Pruning:
    """The store's pruning and shrinking (a mixin of ``MemoryStore``)."""

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
