"""What the memory store is given and gives back: its :class:`Limits`, the results of its
operations and the events it reports (after its lock is released).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

from ..messages import RemovedTotals

__all__ = [
    "EntryTooLarge",
    "Limits",
    "PruneResult",
    "PutResult",
    "RestoreResult",
    "StoreEvent",
]


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
    CONFLICT = "conflict"  # update of a session another save changed since (see merge.py)


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_session_bytes: int
    low_water: float
    # A cap on the number of sessions beside the bytes (None: none), and on each user's.
    max_sessions: int | None = None
    max_sessions_per_user: int | None = None

    # Computed once per Limits (they are frozen; a change of settings makes new ones), not on
    # every save: every write compares the store's size with session_bytes.

    @cached_property
    def low_water_bytes(self) -> int:
        return int(self.max_bytes * self.low_water)

    @cached_property
    def remember_bytes(self) -> int:
        """The slice of the budget set aside for the keys of evicted sessions (so eviction is
        not logout)."""
        return self.max_bytes // 16

    @cached_property
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
    unreadable: int = 0  # records the store could not use (see record.record_expiry): left out too


@dataclass
class PruneResult(RemovedTotals):
    """What a walk removed: expired sessions, and live ones evicted to reach the low-water mark
    (``removed`` is both together)."""

    expired: int = 0
    expired_bytes: int = 0
    evicted: int = 0
    evicted_bytes: int = 0
    longest_lock_hold: float = 0.0
    events: list[StoreEvent] = field(default_factory=list)
