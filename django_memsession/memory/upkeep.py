"""The memory store's inspection and upkeep: its figures (``stats``), emptying it, new limits,
measuring it afresh, and its state after a fork.

A mixin of :class:`~django_memsession.memory.store.MemoryStore`: its methods hold the store's
lock over the store's tables and use its internals (``_lock``, ``_policy``, ``_emit``...); why the
lock keeps the store one class is in ``store.py``'s docstring.
"""

from __future__ import annotations

import os
import threading

from .index import UserIndex
from .lru import SegmentedLRU
from .remembered import RememberedKeys
from .results import Limits, StoreEvent

__all__ = ["Upkeep"]


class Upkeep:
    """The store's inspection and upkeep (a mixin of ``MemoryStore``)."""

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
                "merged": self.merged,
                "conflicts": self.conflicts,
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
