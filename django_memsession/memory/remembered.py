"""The keys of recently evicted sessions, so that eviction is not logout.

A session evicted between a request's ``load()`` and its ``save()`` is stored again by that save,
if its key is still remembered. The keys live in a slice of the budget of their own (see
``Limits.remember_bytes``): were they charged to the sessions' room, each eviction would free only
part of what it evicts and one write could cascade into many evictions.

Not thread-safe: the store calls it with its lock held. Sizes are kept as a running total, as the
store keeps its own: the keys, their expiries and their list nodes in closed form
(:class:`~django_memsession.sizing.EntrySizer`), the table measured in O(1).
"""

from __future__ import annotations

from collections import OrderedDict

from ..sizing import EntrySizer, table_size

__all__ = ["RememberedKeys"]


class RememberedKeys:
    """Evicted keys -> the expiry their session had, oldest eviction first."""

    __slots__ = ("bytes", "keys", "sizer")

    def __init__(self, sizer: EntrySizer) -> None:
        self.sizer = sizer
        self.keys: OrderedDict[str, float] = OrderedDict()
        self.bytes = table_size(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def remember(self, key: str, expires_at: float, limit: int) -> None:
        """Remember ``key`` until ``expires_at``, dropping the oldest to stay within ``limit``."""
        keys = self.keys
        before = table_size(keys)
        keys[key] = expires_at
        self.bytes += self.sizer.remembered(len(key)) + table_size(keys) - before
        self.trim(limit)

    def forget(self, key: str) -> float | None:
        """Forget ``key``; the expiry it was remembered with, or None if it was not."""
        until = self.keys.pop(key, None)
        if until is not None:
            self.bytes -= self.sizer.remembered(len(key))
        return until

    def drop_oldest(self) -> bool:
        if not self.keys:
            return False
        key, _ = self.keys.popitem(last=False)
        self.bytes -= self.sizer.remembered(len(key))
        return True

    def trim(self, limit: int) -> None:
        while self.bytes > limit and self.drop_oldest():
            pass

    def forget_expired(self, now: float, count: int, limit: int) -> None:
        """One chunk of a turn of the queue: up to ``count`` keys from the front; those still
        restorable go back to the end. Putting back takes a new table slot, which may grow the
        table, so the slice is trimmed after."""
        keys = self.keys
        before = table_size(keys)
        for _ in range(min(count, len(keys))):
            key, until = keys.popitem(last=False)
            if until > now:
                keys[key] = until
            else:
                self.bytes -= self.sizer.remembered(len(key))
        self.bytes += table_size(keys) - before
        self.trim(limit)

    def measure(self) -> int:
        """The running total measured afresh (O(n): tests and after a fork)."""
        return table_size(self.keys) + sum(self.sizer.remembered(len(key)) for key in self.keys)
