"""The memory store's side of snapshots: the journal epoch, the copy a snapshot writes
(``copy_chunks``) and the restore that reads one back (``restore``).

A mixin of :class:`~django_memsession.memory.store.MemoryStore`: its methods hold the store's
lock over the store's tables and use its internals (``_lock``, ``_policy``, ``_emit``...); why the
lock keeps the store one class is in ``store.py``'s docstring.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator

from .lru import AUTHENTICATED, SEGMENT_NAMES
from .record import record_expiry
from .results import RestoreResult, StoreEvent

__all__ = ["SnapshotCopy"]

# A restore fills this share of the sessions' room with entries; their tables take the rest.
RESTORE_FILL = 0.9


class SnapshotCopy:
    """The store's snapshot copy and restore (a mixin of ``MemoryStore``)."""

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
        :func:`~django_memsession.memory.record.record_expiry`). When they do not all fit in the
        budget (it was lowered, or the file was written by a store with a larger one), the most
        valuable come back: logged-in, then returning, then new sessions, the most recently used of
        each first. What is kept while the records are read never holds much more than the budget:
        each record that does not fit pushes out the least valuable kept so far. Keys already in the
        store are left alone.
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
            expires_at = record_expiry(index, key, value)
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
