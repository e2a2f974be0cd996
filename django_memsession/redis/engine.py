"""``SessionStore`` on Redis: Django's ``SessionBase`` contract on one side, the Redis store on the
other.

Thin on purpose: the store does the round trips, this decides what to write. A load is one
round trip, a create one (``SET NX PX``), a save of an existing session one (a script that
refuses to undo a delete). Values round-trip exactly as through Django's db engine under
``SESSION_SERIALIZER``. The async methods are native, on ``redis.asyncio``.

When Redis cannot answer, every method raises
:class:`~django_memsession.redis.exceptions.SessionBackendUnavailable` and notes it on
``self.outage``; the session is never silently empty, and the session key is kept, so no
middleware mistakes an outage for a logout and deletes the cookie.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.sessions.backends.base import (
    VALID_KEY_CHARS,
    CreateError,
    SessionBase,
    UpdateError,
)

from ..engine import new_session_key
from ..exceptions import SessionTooLarge
from ..serializers import current_codec
from .exceptions import SessionBackendUnavailable
from .store import Loaded, RedisStore, UpdateResult, get_store

logger = logging.getLogger("django_memsession.redis")

# django.contrib.auth.SESSION_KEY, spelled out: importing django.contrib.auth here would make the
# engine depend on the app registry.
AUTH_SESSION_KEY = "_auth_user_id"

# What an update of a session deleted or expired since it was loaded returns: never brought back.
REFUSED = (UpdateResult.DELETED, UpdateResult.GONE)


class SessionStore(SessionBase):
    """The session engine: ``SESSION_ENGINE = "django_memsession.redis"``."""

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        # The expiry of the version this object last loaded or wrote: a save may store the
        # session again only if it was live then (evicted, not expired).
        self._known_expires_at: float | None = None
        # Whether this object loaded the session from Redis: it came back, so its probation ends.
        self._came_back = False
        self.outage: SessionBackendUnavailable | None = None

    @contextmanager
    def _noting_outage(self) -> Iterator[None]:
        try:
            yield
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise

    def _validate_session_key(self, key: Any) -> bool:
        """Only keys this engine could have made: 8-64 characters of ``[a-z0-9]``.

        Anything else (overlong, non-ASCII, NUL, separators) is no session, without a lookup.
        """
        return isinstance(key, str) and 8 <= len(key) <= 64 and not key.strip(VALID_KEY_CHARS)

    def _get_new_session_key(self) -> str:
        # No exists() round trip: SET NX in create() catches a collision of 165 random bits.
        return new_session_key()

    async def _aget_new_session_key(self) -> str:
        return new_session_key()

    async def _aget_session(self, no_load: bool = False) -> dict[str, Any]:
        # SessionBase's own (Django 5.0+), spelled out so Django 4.2 has it too.
        self.accessed = True
        try:
            return self._session_cache
        except AttributeError:
            if self.session_key is None or no_load:
                self._session_cache = {}
            else:
                self._session_cache = await self.aload()
            return self._session_cache

    # -- load ----------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        with self._noting_outage():
            loaded = get_store().load(self.session_key)
        return self._decoded(loaded)

    async def aload(self) -> dict[str, Any]:
        with self._noting_outage():
            loaded = await get_store().aload(self.session_key)
        return self._decoded(loaded)

    def _decoded(self, loaded: Loaded | None) -> dict[str, Any]:
        if loaded is None:
            # Unknown, expired, deleted or evicted: an empty session that gets a fresh key on save.
            self._session_key = None
            return {}
        self._known_expires_at = loaded.expires_at
        self._came_back = True
        try:
            return current_codec().loads(loaded.payload)
        except Exception:
            # Only a change of SESSION_SERIALIZER makes stored data unreadable. Like Django's
            # decode(), an unreadable session is an empty one.
            logger.warning("Session data could not be deserialized; starting an empty session.")
            return {}

    # -- save ----------------------------------------------------------------------------------

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        data = self._get_session(no_load=must_create)
        if self.session_key is None:
            # Loading found no session (expired, deleted): an update of nothing, as with
            # Django's engines. Through SessionMiddleware the load comes first and save() creates.
            raise UpdateError
        store = get_store()
        write = self._write(store, data)
        with self._noting_outage():
            if must_create:
                if not store.create(self.session_key, write.payload, write.expires_at, write.ttl):
                    raise CreateError
            elif store.update(self.session_key, *write.update_args(self._known_expires_at)) in (
                REFUSED
            ):
                raise UpdateError
        self._known_expires_at = write.expires_at

    async def asave(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return await self.acreate()
        data = await self._aget_session(no_load=must_create)
        if self.session_key is None:
            raise UpdateError
        store = get_store()
        write = self._write(store, data)
        with self._noting_outage():
            if must_create:
                if not await store.acreate(
                    self.session_key, write.payload, write.expires_at, write.ttl
                ):
                    raise CreateError
            elif (
                await store.aupdate(self.session_key, *write.update_args(self._known_expires_at))
                in REFUSED
            ):
                raise UpdateError
        self._known_expires_at = write.expires_at

    def _write(self, store: RedisStore, data: dict[str, Any]) -> _Write:
        """What to store: the payload, its expiry, and its TTL (probation or full age)."""
        payload = current_codec().dumps(data)
        limit = store.config.max_session_bytes
        if len(payload) > limit:
            logger.error(
                "Session not saved: %d bytes is over MEMSESSION_MAX_SESSION_SIZE (%d bytes). "
                "The previous version of the session is kept.",
                len(payload),
                limit,
            )
            raise SessionTooLarge(len(payload), limit)
        age = self._expiry_age(data)
        full_ttl = max(1, math.ceil(age * 1000))
        settled = self._came_back or AUTH_SESSION_KEY in data
        ttl = full_ttl if settled else min(full_ttl, store.probation_ms)
        now = store.clock()
        return _Write(payload, now + age, ttl, full_ttl, now)

    def _expiry_age(self, data: dict[str, Any]) -> float:
        """Seconds until the session expires, as Django computes it (``set_expiry()``,
        ``SESSION_COOKIE_AGE``). A NaN age raises ValueError and an infinite or too distant one
        OverflowError, as the db engine's ``get_expiry_date()`` does."""
        age = self.get_expiry_age(expiry=data.get("_session_expiry"))
        datetime.now(UTC) + timedelta(seconds=age)
        return age

    def create(self) -> None:
        for _ in range(100):
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
        raise RuntimeError("Unable to create a new session key.")

    async def acreate(self) -> None:
        for _ in range(100):
            self._session_key = await self._aget_new_session_key()
            try:
                await self.asave(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
        raise RuntimeError("Unable to create a new session key.")

    # -- the rest of the contract --------------------------------------------------------------

    def exists(self, session_key: str | None) -> bool:
        if not self._validate_session_key(session_key):
            return False
        with self._noting_outage():
            return get_store().exists(session_key)

    async def aexists(self, session_key: str | None) -> bool:
        if not self._validate_session_key(session_key):
            return False
        with self._noting_outage():
            return await get_store().aexists(session_key)

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None:
            session_key = self.session_key
        if not self._validate_session_key(session_key):
            return
        with self._noting_outage():
            get_store().delete(session_key)

    async def adelete(self, session_key: str | None = None) -> None:
        if session_key is None:
            session_key = self.session_key
        if not self._validate_session_key(session_key):
            return
        with self._noting_outage():
            await get_store().adelete(session_key)

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: Redis removes each key when its TTL runs out (``clearsessions`` works
        and returns at once)."""

    @classmethod
    async def aclear_expired(cls) -> None:
        """Nothing to do, as :meth:`clear_expired`."""


class _Write:
    """One version of a session about to be stored."""

    __slots__ = ("expires_at", "full_ttl", "now", "payload", "ttl")

    def __init__(
        self, payload: bytes, expires_at: float, ttl: int, full_ttl: int, now: float
    ) -> None:
        self.payload = payload
        self.now = now
        self.expires_at = expires_at
        self.ttl = ttl  # ms: the probation TTL for a new anonymous session, else full_ttl
        self.full_ttl = full_ttl  # ms: the rest of its age

    def update_args(self, known_expires_at: float | None) -> tuple[bytes, float, int, int, bool]:
        # A missing key is stored again only if this object saw the session live and unexpired:
        # then Redis evicted it, and eviction is not logout.
        may_restore = known_expires_at is not None and known_expires_at > self.now
        return self.payload, self.expires_at, self.ttl, self.full_ttl, may_restore
