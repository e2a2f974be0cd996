"""``SessionStore``: Django's ``SessionBase`` contract on one side, a store on the other.

Thin on purpose. The store keeps serialized bytes, so no two requests ever share a live dict, and
values round-trip exactly as through Django's db engine under ``SESSION_SERIALIZER``. The engine
talks to its store through the store's request path only (``get``, ``put``, ``exists``,
``delete``, ``note_client``, on ``backend()``). The store does no I/O, so the async methods are
native: they make the same store calls as their sync twins, and save and asave share ``_write``.

Concurrent saves of one session are merged (issue 24, ``merge.py``): a load keeps the payload it
decoded, a save writes only if the store still holds it, and otherwise merges this request's
changes onto what is stored (``_write_merged``).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from django.contrib.sessions.backends.base import CreateError, UpdateError

from .. import runtime
from ..conf.base import shared
from ..exceptions import SessionTooLarge
from ..merge import MERGE_TIME, MERGE_TRIES, backoff, merge, report_conflict
from ..serializers import current_codec
from ..sessionbase import (
    AUTH_SESSION_KEY,
    KEY_LENGTH,
    FastSessionBase,
    current_session,
    new_session_key,
)
from . import services
from .store import EntryTooLarge, MemoryStore, Merging, PutResult, Rebased

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


def _no_wait(seconds: float) -> None:
    """The async save's backoff: none (a sleep would block the event loop). Its retries come
    at once, and the last one, under the store's lock, cannot fail."""


_CONFLICT = PutResult.CONFLICT


def _user_of(data: dict[str, Any]) -> str | None:
    """The logged-in user's id as Django stores it (None: anonymous), as a string."""
    user = data.get(AUTH_SESSION_KEY)
    if user is not None and user.__class__ is not str:
        user = str(user)
    return user


class SessionStore(FastSessionBase):
    """The session engine: ``SESSION_ENGINE = "django_memsession"``."""

    # The store this engine talks to: this process's, built by the memory engine's services.
    backend: Callable[[], MemoryStore] = staticmethod(services.get_store)
    # The client (IP address and user agent, see clients.py) to note with the next save of a
    # logged-in session; set at login when MEMSESSION_TRACK_CLIENTS is on. None keeps what the
    # store has.
    client: str | None = None
    # self._base (FastSessionBase): the payload this session was loaded from, or last saved as;
    # a save writes only onto it, or merges (see merge.py). The bytes the store gave or was
    # given, kept as they are: no serialization on load.

    # -- load ----------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        return self._decode(self.backend().get(self._SessionBase__session_key))

    async def aload(self) -> dict[str, Any]:
        return self._decode(self.backend().get(self._SessionBase__session_key))

    def _decode(self, payload: bytes | None) -> dict[str, Any]:
        self._base = payload
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
        if self._SessionBase__session_key is None:
            return self.create()
        self._write(self._get_session(no_load=must_create), must_create)
        return None

    async def asave(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return await self.acreate()
        self._write(await self._aget_session(no_load=must_create), must_create, _no_wait)
        return None

    def _write(
        self,
        data: dict[str, Any],
        must_create: bool,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        """Store ``data`` under this session's key, with its expiry and the logged-in user's id
        as Django stores it (None: anonymous); save and asave share it (the store does no I/O;
        ``sleep`` is the backoff of a conflicting save's retries)."""
        key = self._SessionBase__session_key
        if key is None:
            # Loading found no session (expired, deleted): an update of nothing, as with
            # Django's engines. Through SessionMiddleware the load comes first and save() creates.
            raise UpdateError
        store = self.backend()
        user = data.get(AUTH_SESSION_KEY)
        if user is not None and user.__class__ is not str:
            user = str(user)
        payload = current_codec().dumps(data)
        try:
            result = store.put(
                key,
                payload,
                self._expires_at(store, data),
                authenticated=user is not None,
                create=must_create,
                user=user,
                client=self.client,
                expected=self._base,  # (a create ignores it)
            )
            if result is _CONFLICT:
                result, payload = self._write_merged(store, key, data, sleep)
        except EntryTooLarge as exc:
            raise self._too_large(exc) from None
        self._check(result)
        self._base = payload

    def _write_merged(
        self, store: MemoryStore, key: str, data: dict[str, Any], sleep: Callable[[float], object]
    ) -> tuple[PutResult, bytes]:
        """Another request saved this session since it was loaded: ``data`` merged onto what is
        stored now, compare-and-set again, with jittered backoff, at most ``MERGE_TRIES`` times
        or ``MERGE_TIME`` seconds; then once under the store's lock, which cannot fail. The
        result and the payload stored; ``data`` becomes the merged session.

        With ``MEMSESSION_MERGE_SAVES = False``, or when the session is gone meanwhile (a
        logout: ``MISSING``), ``data`` is written as it is (last writer wins)."""
        codec = current_codec()
        give_up_at = time.monotonic() + MERGE_TIME
        attempt = 0
        while True:
            theirs = store.peek(key)
            if theirs is None or not shared.MERGE_SAVES:
                payload = codec.dumps(data)
                expires_at = self._expires_at(store, data)
                user = _user_of(data)
                result = store.put(
                    key,
                    payload,
                    expires_at,
                    authenticated=user is not None,
                    create=False,
                    user=user,
                    client=self.client,
                )
                return result, payload
            attempt += 1
            if attempt >= MERGE_TRIES or time.monotonic() >= give_up_at:
                return self._write_merged_locked(store, key, data, theirs)
            merged = merge(self._base, theirs, data, codec)
            payload = codec.dumps(merged.data)
            user = _user_of(merged.data)
            result = store.put(
                key,
                payload,
                self._expires_at(store, merged.data),
                authenticated=user is not None,
                create=False,
                user=user,
                client=self.client,
                expected=theirs,
                merging=Merging(bool(merged.conflicts)),
            )
            if result is not PutResult.CONFLICT:
                self._adopt(data, merged.data, user, merged.conflicts)
                return result, payload
            backoff(attempt, sleep)

    def _write_merged_locked(
        self, store: MemoryStore, key: str, data: dict[str, Any], theirs: bytes
    ) -> tuple[PutResult, bytes]:
        """The last try of a conflicting save: merged under the store's lock, so nothing can
        come in between (the only place a lock is held while serializing)."""
        codec = current_codec()
        done: list[Any] = []

        def rebase(current: bytes) -> Rebased:
            merged = merge(self._base, current, data, codec)
            payload = codec.dumps(merged.data)
            user = _user_of(merged.data)
            done[:] = (merged, payload, user)
            expires_at = self._expires_at(store, merged.data)
            return Rebased(payload, expires_at, user, bool(merged.conflicts))

        # Rebased onto what is stored under the lock: ``theirs`` only makes the store call
        # rebase (it is stale by now, or the put writes it as it is).
        merged = merge(self._base, theirs, data, codec)
        payload = codec.dumps(merged.data)
        user = _user_of(merged.data)
        result = store.put(
            key,
            payload,
            self._expires_at(store, merged.data),
            authenticated=user is not None,
            create=False,
            user=user,
            client=self.client,
            expected=theirs,
            merging=Merging(bool(merged.conflicts), rebase),
        )
        if done:
            merged, payload, user = done
        if result is not PutResult.MISSING:
            self._adopt(data, merged.data, user, merged.conflicts)
        return result, payload

    def _adopt(
        self, data: dict[str, Any], merged: dict[str, Any], user: str | None, conflicts: tuple
    ) -> None:
        """After a merged save: this request's session is what was stored (so that a later
        save in the same request merges from there), and a conflict is told."""
        if merged is not data:
            data.clear()
            data.update(merged)
        if conflicts:
            report_conflict(type(self), conflicts, user)

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
