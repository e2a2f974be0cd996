"""What the Redis user-index tests share: a session gone without a logout, as an eviction long
after its member was written leaves it."""

from __future__ import annotations

from typing import Any

from django_memsession.redis.index import PENDING_SECONDS, SECONDS_DIGITS, digits
from django_memsession.redis.store import get_store


def gone_long_ago(client: Any, session_key: str, user: str) -> None:
    """Delete the session's key, and date its member's "last used" back beyond PENDING_SECONDS:
    a member whose session is missing is kept that long after it was written (it may be a login
    between its two steps, its record not written yet), then removed when the index reads it."""
    store = get_store()
    client.delete(store.key(session_key))
    users, field = store.index.users_key(user), session_key.encode()
    facts = client.hget(users, field)
    if facts is not None:
        long_ago = digits(store.clock() - PENDING_SECONDS - 1)
        client.hset(users, field, facts[:SECONDS_DIGITS] + long_ago + facts[2 * SECONDS_DIGITS :])
