"""The memory store's user index, as the store keeps it: a logged-in session indexed under its
user as it is written and dropped (``_index_add``, ``_index_remove``), a user's sessions over
``MEMSESSION_MAX_SESSIONS_PER_USER`` ended, and the queries (``user_sessions``,
``note_client``). The index itself and the facts' format are in ``index.py``.

A mixin of :class:`~django_memsession.memory.store.MemoryStore`: its methods hold the store's
lock over the store's tables and use its internals (``_lock``, ``_policy``, ``_emit``...); why the
lock keeps the store one class is in ``store.py``'s docstring.
"""

from __future__ import annotations

from . import index as facts
from .index import SessionFacts, user_key
from .lru import AUTHENTICATED
from .record import HEADER, NOT_JOURNALED
from .results import StoreEvent

__all__ = ["Indexing"]


class Indexing:
    """The store's user index work (a mixin of ``MemoryStore``)."""

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

    def _index_add(self, value: bytes, key: str, user: bytes | None = None) -> int:
        """Index a logged-in session under its user (``key``: the object the policy holds);
        how many sessions the user has (0: no user id given, not indexed). ``user``: the user
        id as ``value``'s facts hold it, when the caller has it (a save packed it), so it is not
        read back out of ``value``."""
        if user is None:
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
