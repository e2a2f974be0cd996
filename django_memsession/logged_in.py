"""A user's sessions in this process's store, as the control channel answers for them: typed
records with opaque ids, and their ending.

A session key is a credential: it never leaves this module's callers' process. Records carry
:func:`session_id` instead, an HMAC-SHA256 of the key (Django's ``salted_hmac`` with a salt of its
own, keyed from ``SECRET_KEY``), the same in every process of the project, so an id got from one
process names the session in whichever process holds it.

Knows the store and the messages; nothing of requests, of the runtime, or of other processes
(:mod:`~django_memsession.everywhere` asks them).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from django.conf import settings

from .messages import UserSession
from .store import MemoryStore
from .users import SessionFacts

__all__ = ["end_local", "local_sessions", "parse_client", "session_id", "user_id"]

ID_SALT = "django_memsession.session_id"
ID_LENGTH = 32  # hex digits: 128 bits

_derived: tuple[str, bytes] | None = None


def _id_key() -> bytes:
    """``salted_hmac``'s derived key for our salt, computed once per ``SECRET_KEY``: a user with
    many sessions costs one HMAC per session, not a key derivation each."""
    global _derived
    secret = settings.SECRET_KEY
    cached = _derived
    if cached is None or cached[0] != secret:
        # What salted_hmac derives (sha256 of salt and secret), then HMACs with; the tests
        # hold session_id() to salted_hmac's own answer.
        key = hashlib.sha256((ID_SALT + secret).encode()).digest()
        cached = _derived = (secret, key)
    return cached[1]


def session_id(key: str) -> str:
    """The opaque id of the session with this key."""
    return hmac.new(_id_key(), key.encode(), hashlib.sha256).hexdigest()[:ID_LENGTH]


def user_id(user: object) -> str:
    """The user's id as Django keeps it in the session (``_auth_user_id``), from a user
    instance (no database query) or its primary key."""
    meta = getattr(user, "_meta", None)
    if meta is not None:
        return str(meta.pk.value_to_string(user))
    if user is None or isinstance(user, bool):
        raise TypeError("expected a user instance or its primary key")
    return str(user)


def parse_client(client: str | None) -> tuple[str | None, str | None]:
    """(IP address, user agent) of the opaque client text (see clients.py)."""
    if not client:
        return None, None
    address, _, agent = client.partition("\n")
    return address or None, agent or None


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
