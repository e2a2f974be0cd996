"""``SessionStore``: Django's ``SessionBase`` contract on one side, a store on the other.

Thin on purpose. The store keeps serialized bytes, so no two requests ever share a live dict, and
values round-trip exactly as through Django's db engine under ``SESSION_SERIALIZER``. The engine
talks to its store through the store's request path only (``get``, ``put``, ``exists``,
``delete``, ``note_client``, on ``backend()``). The store does no I/O, so the async methods are
native: they make the same store calls as their sync twins, and save and asave share ``_write``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import Any

from django.contrib.sessions.backends.base import CreateError, UpdateError

from .. import runtime
from ..exceptions import SessionTooLarge
from ..serializers import current_codec
from ..sessionbase import (
    AUTH_SESSION_KEY,
    KEY_LENGTH,
    FastSessionBase,
    current_session,
    new_session_key,
)
from . import services
from .store import EntryTooLarge, MemoryStore, PutResult

__all__ = [
    "AUTH_SESSION_KEY",
    "KEY_LENGTH",
    "SessionStore",
    "new_session_key",
]

logger = logging.getLogger("django_memsession")


# An expiry age beyond this many seconds (about 300 years), or NaN, is checked the way Django's
# db engine computes its expiry date, so it raises what the db engine raises.
_PLAUSIBLE_AGE = 1e10


class SessionStore(FastSessionBase):
    """The session engine: ``SESSION_ENGINE = "django_memsession"``."""

    # The store this engine talks to: this process's, built by the memory engine's services.
    backend: Callable[[], MemoryStore] = staticmethod(services.get_store)
    # The client (IP address and user agent, see clients.py) to note with the next save of a
    # logged-in session; set at login when MEMSESSION_TRACK_CLIENTS is on. None keeps what the
    # store has.
    client: str | None = None

    # -- load ----------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        return self._decode(self.backend().get(self.session_key))

    async def aload(self) -> dict[str, Any]:
        return self._decode(self.backend().get(self.session_key))

    def _decode(self, payload: bytes | None) -> dict[str, Any]:
        if payload is None:
            # Unknown, expired or evicted: an empty session that gets a fresh key on save.
            self._session_key = None
            return {}
        try:
            data = current_codec().loads(payload)
        except Exception:
            # Only a change of SESSION_SERIALIZER makes stored data unreadable. Like Django's
            # decode(), an unreadable session is an empty one.
            logger.warning("Session data could not be deserialized; starting an empty session.")
            return {}
        if AUTH_SESSION_KEY in data:
            # Only a logged-in session can be the one a password change keeps (a session that
            # logs in during the request is noted by password.on_login).
            current_session.set(self)
        return data

    # -- save ----------------------------------------------------------------------------------

    def _expires_at(self, store: MemoryStore, data: dict[str, Any]) -> float:
        expiry = data.get("_session_expiry")
        age = self.get_session_cookie_age() if not expiry else self.get_expiry_age(expiry=expiry)
        if not -_PLAUSIBLE_AGE < age < _PLAUSIBLE_AGE:
            # NaN, infinity, or centuries: ValueError or OverflowError, as Django's db engine
            # raises computing its expire_date (never a session stored with a NaN expiry).
            datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=age)
        return store.clock() + age

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        self._write(self._get_session(no_load=must_create), must_create)
        return None

    async def asave(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return await self.acreate()
        self._write(await self._aget_session(no_load=must_create), must_create)
        return None

    def _write(self, data: dict[str, Any], must_create: bool) -> None:
        """Store ``data`` under this session's key, with its expiry and the logged-in user's id
        as Django stores it (None: anonymous); save and asave share it (the store does no I/O)."""
        key = self.session_key
        if key is None:
            # Loading found no session (expired, deleted): an update of nothing, as with
            # Django's engines. Through SessionMiddleware the load comes first and save() creates.
            raise UpdateError
        store = self.backend()
        user = data.get(AUTH_SESSION_KEY)
        if user is not None and user.__class__ is not str:
            user = str(user)
        try:
            result = store.put(
                key,
                current_codec().dumps(data),
                self._expires_at(store, data),
                authenticated=user is not None,
                create=must_create,
                user=user,
                client=self.client,
            )
        except EntryTooLarge as exc:
            raise self._too_large(exc) from None
        self._check(result)

    @staticmethod
    def _too_large(exc: EntryTooLarge) -> SessionTooLarge:
        logger.error(
            "Session not saved: %d bytes is over MEMSESSION_MAX_SESSION_SIZE (%d bytes). "
            "The previous version of the session is kept.",
            exc.size,
            exc.limit,
        )
        return SessionTooLarge(exc.size, exc.limit)

    @staticmethod
    def _check(result: PutResult) -> None:
        if result is PutResult.EXISTS:
            raise CreateError
        if result is PutResult.MISSING:
            raise UpdateError

    def note_client(self, client: str) -> None:
        """Note a logged-in session's client now if it changed (no save of the session)."""
        self.client = client
        if self.session_key is not None:
            self.backend().note_client(self.session_key, client)

    # -- the rest of the contract --------------------------------------------------------------

    def exists(self, session_key: str | None) -> bool:
        return bool(session_key) and (
            self._validate_session_key(session_key) and self.backend().exists(session_key)
        )

    async def aexists(self, session_key: str | None) -> bool:
        return bool(session_key) and (
            self._validate_session_key(session_key) and self.backend().exists(session_key)
        )

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        self.backend().delete(session_key)

    async def adelete(self, session_key: str | None = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        self.backend().delete(session_key)

    @classmethod
    def clear_expired(cls) -> None:
        """Prune every live process of this project (Django's ``clearsessions``), through the
        control channel; within ``control.PRUNE_TIMEOUT`` however many processes hang."""
        runtime.prune_everywhere()

    @classmethod
    async def aclear_expired(cls) -> None:
        # The fan-out waits on sockets: on a thread, never in the event loop.
        await asyncio.to_thread(runtime.prune_everywhere)
