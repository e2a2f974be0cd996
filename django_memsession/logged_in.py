"""Who a session belongs to, as both engines name it to callers: a session's opaque id, a user's
id, the client text's parts.

A session key is a credential: it never leaves the process that holds it. Callers get
:func:`session_id` instead, an HMAC-SHA256 of the key (Django's ``salted_hmac`` with a salt of its
own, keyed from ``SECRET_KEY``), the same in every process of the project, so an id got from one
process names the session in whichever process holds it.

Knows neither engine (a memory process's answers are in ``memory/who.py``; each engine's user
index gives :class:`SessionFacts`, turned here into the callers' :class:`UserSession`), nothing of
requests or of other processes (:mod:`~django_memsession.everywhere` asks them).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from django.conf import settings

from .messages import UserSession

__all__ = ["SessionFacts", "parse_client", "session_id", "user_id", "user_session"]

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


@dataclass(frozen=True)
class SessionFacts:
    """One live, logged-in session as an engine's user index knows it. ``key`` is a credential:
    it never leaves the process (:func:`user_session` turns it into an opaque id)."""

    key: str
    user: str
    created: int
    last_used: int
    expires_at: float
    client: str | None


def user_session(facts: SessionFacts, pid: int) -> UserSession:
    """The record callers get for a session: its opaque id, never its key; ``pid``, the process
    that holds it (0: the Redis engine, where no process does)."""
    address, agent = parse_client(facts.client)
    return UserSession(
        id=session_id(facts.key),
        pid=pid,
        user=facts.user,
        created=float(facts.created),
        last_used=float(facts.last_used),
        expires=facts.expires_at,
        ip=address,
        user_agent=agent,
    )
