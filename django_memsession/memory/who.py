"""A user's sessions in this process's store, as the control channel answers for them: typed
records with opaque ids (:func:`~django_memsession.logged_in.session_id`, never a key), and
their ending.

Knows the store and the messages; nothing of requests, of the services, or of other processes
(:mod:`~django_memsession.everywhere` asks them).
"""

from __future__ import annotations

import os

from ..logged_in import parse_client, session_id
from ..messages import UserSession
from .index import SessionFacts
from .store import MemoryStore

__all__ = ["end_local", "local_sessions"]


def _record(row: SessionFacts, pid: int) -> UserSession:
    address, agent = parse_client(row.client)
    return UserSession(
        id=session_id(row.key),
        pid=pid,
        user=row.user,
        created=float(row.created),
        last_used=float(row.last_used),
        expires=row.expires_at,
        ip=address,
        user_agent=agent,
    )


def local_sessions(store: MemoryStore, user: str) -> list[UserSession]:
    """The user's live sessions in this store, most recently used first."""
    pid = os.getpid()
    return [_record(row, pid) for row in store.user_sessions(user)]


def end_local(
    store: MemoryStore, user: str, *, session_id_: str | None = None, keep: str | None = None
) -> int:
    """End the user's sessions here: only the one with id ``session_id_`` if given (a session
    of another user matches nothing), else all but the one with id ``keep``. How many ended."""
    keys = [
        row.key
        for row in store.user_sessions(user)
        if (session_id(row.key) == session_id_ if session_id_ is not None else True)
        and (keep is None or session_id(row.key) != keep)
    ]
    return store.delete_many(keys) if keys else 0
