"""Pruning: one pass now (``prune()``), and Django's ``clear_expired()`` entry point."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .runtime import get_store


@dataclass(frozen=True)
class PassResult:
    """What one pass removed: expired sessions, and sessions evicted to reach the low-water mark."""

    started_at: float
    duration: float
    removed: int
    bytes_freed: int
    evicted: int
    bytes_evicted: int
    longest_lock_hold: float


def prune(*, dry_run: bool = False) -> PassResult:
    """Run one pass over this process's store now and return what it removed."""
    store = get_store()
    started_at = store.clock()
    started = time.perf_counter()
    expired = store.prune_expired(dry_run=dry_run)
    shrunk = store.shrink(dry_run=dry_run)
    return PassResult(
        started_at=started_at,
        duration=time.perf_counter() - started,
        removed=expired.removed + shrunk.removed,
        bytes_freed=expired.bytes_freed + shrunk.bytes_freed,
        evicted=shrunk.evicted,
        bytes_evicted=shrunk.bytes_evicted,
        longest_lock_hold=max(expired.longest_lock_hold, shrunk.longest_lock_hold),
    )


def clear_expired() -> None:
    """``SessionStore.clear_expired()``: prune this process's store."""
    prune()
