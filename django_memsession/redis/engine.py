"""``SessionStore`` on Redis: Django's ``SessionBase`` contract on one side, the Redis store on the
other.

Thin on purpose: the store does the round trips, this decides what to write. A load is one
round trip (a ``GET``; the first load of a session back from probation also promotes it), a
create one (``SET NX PX``), a save of an existing session one (a script that refuses to undo a
delete). A new anonymous session is written on probation (a short TTL); one that this object
loaded, or that holds a logged-in user, with its full age. Values round-trip exactly as through
Django's db engine under ``SESSION_SERIALIZER``. The async methods are native, on
``redis.asyncio``.

When Redis cannot answer, every method raises
:class:`~django_memsession.redis.exceptions.SessionBackendUnavailable` and notes it on
``self.outage``; the session is never silently empty, and the session key is kept, so no
middleware mistakes an outage for a logout and deletes the cookie.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.sessions.backends.base import CreateError, UpdateError

from ..exceptions import SessionTooLarge
from ..serializers import current_codec
from ..sessionbase import AUTH_SESSION_KEY, FastSessionBase
from .exceptions import SessionBackendUnavailable
from .store import Loaded, RedisStore, UpdateResult, get_store

logger = logging.getLogger("django_memsession.redis")

# What an update of a session deleted or expired since it was loaded returns: never brought back.
REFUSED = (UpdateResult.DELETED, UpdateResult.GONE)

# Ages (in seconds) this far from zero skip the datetime check in _expiry_age(): 100 years, far
# inside what datetime can represent from today.
SANE_AGE = 100 * 365 * 24 * 3600


class SessionStore(FastSessionBase):
    """The session engine: ``SESSION_ENGINE = "django_memsession.redis"``."""

    # The process's Redis store. A subclass may point at another (the benchmarks run the
    # engine with and without a near cache side by side, in one process).
    _get_store = staticmethod(get_store)

    def __init__(self, session_key: str | None = None) -> None:
        # What SessionBase.__init__ does, minus import_string(SESSION_SERIALIZER) on every
        # request (about 1 µs): load() and save() use the cached codec, which follows the setting.
        self._session_key = session_key
        self.accessed = False
        self.modified = False
        # The expiry of the version this object last loaded or wrote: a save may store the
        # session again only if it was live then (evicted, not expired).
        self._known_expires_at: float | None = None
        # Whether this object loaded the session from Redis: it came back, so its probation ends.
        self._came_back = False
        self.outage: SessionBackendUnavailable | None = None

    # Every store call below notes an outage on self.outage (for the middleware) with a plain
    # try/except: a context manager would cost about 1 µs on every call's success path.

    # -- load ----------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        session_key = self.session_key
        if session_key is None:
            # No key, or one that failed validation (SessionBase sets it to None): no session,
            # and no Redis call. Django's tests call load() directly on such sessions.
            return {}
        try:
            loaded = self._get_store().load(session_key)
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise
        return self._decoded(loaded)

    async def aload(self) -> dict[str, Any]:
        session_key = self.session_key
        if session_key is None:
            return {}  # as in load()
        try:
            loaded = await self._get_store().aload(session_key)
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise
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
        store = self._get_store()
        payload, expires_at, ttl, full_ttl, now = self._write(store, data)
        try:
            if must_create:
                if not store.create(
                    self.session_key, payload, expires_at, ttl, settled=ttl >= full_ttl
                ):
                    raise CreateError
            elif (
                store.update(
                    self.session_key,
                    payload,
                    expires_at,
                    ttl,
                    full_ttl,
                    may_restore=self._may_restore(now),
                )
                in REFUSED
            ):
                raise UpdateError
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise
        self._known_expires_at = expires_at

    async def asave(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return await self.acreate()
        data = await self._aget_session(no_load=must_create)
        if self.session_key is None:
            raise UpdateError
        store = self._get_store()
        payload, expires_at, ttl, full_ttl, now = self._write(store, data)
        try:
            if must_create:
                if not await store.acreate(
                    self.session_key, payload, expires_at, ttl, settled=ttl >= full_ttl
                ):
                    raise CreateError
            elif (
                await store.aupdate(
                    self.session_key,
                    payload,
                    expires_at,
                    ttl,
                    full_ttl,
                    may_restore=self._may_restore(now),
                )
                in REFUSED
            ):
                raise UpdateError
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise
        self._known_expires_at = expires_at

    def _may_restore(self, now: float) -> bool:
        """Whether a save that finds the key missing stores the session again: only if this
        object saw it live and unexpired. Then Redis evicted it, and eviction is not logout; a
        session that expired is not brought back."""
        known = self._known_expires_at
        return known is not None and known > now

    def _write(
        self, store: RedisStore, data: dict[str, Any]
    ) -> tuple[bytes, float, int, int, float]:
        """What to store: the payload, its expiry, its TTL (the probation age for a new anonymous
        session, else its full age), its full age (both in ms), and now (the store's clock)."""
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
        if self._came_back or AUTH_SESSION_KEY in data:
            ttl = full_ttl
        else:
            ttl = min(full_ttl, store.probation_ms)
        now = store.clock()
        return payload, now + age, ttl, full_ttl, now

    def _expiry_age(self, data: dict[str, Any]) -> float:
        """Seconds until the session expires, as Django computes it (``set_expiry()``,
        ``SESSION_COOKIE_AGE``). A NaN age raises ValueError and an infinite or too distant one
        OverflowError, as the db engine's ``get_expiry_date()`` does."""
        expiry = data.get("_session_expiry")
        # No expiry set is the common case: skip get_expiry_age()'s timezone.now() (about 1 µs).
        age = self.get_expiry_age(expiry=expiry) if expiry else self.get_session_cookie_age()
        if not -SANE_AGE < age < SANE_AGE:
            # NaN, infinite, or centuries: let datetime raise what the db engine raises.
            datetime.now(UTC) + timedelta(seconds=age)
        return age

    # -- the rest of the contract --------------------------------------------------------------

    def exists(self, session_key: str | None) -> bool:
        if not self._validate_session_key(session_key):
            return False
        try:
            return self._get_store().exists(session_key)
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise

    async def aexists(self, session_key: str | None) -> bool:
        if not self._validate_session_key(session_key):
            return False
        try:
            return await self._get_store().aexists(session_key)
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None:
            session_key = self.session_key
        if not self._validate_session_key(session_key):
            return
        try:
            self._get_store().delete(session_key)
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise

    async def adelete(self, session_key: str | None = None) -> None:
        if session_key is None:
            session_key = self.session_key
        if not self._validate_session_key(session_key):
            return
        try:
            await self._get_store().adelete(session_key)
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: Redis removes each key when its TTL runs out (``clearsessions`` works
        and returns at once)."""

    @classmethod
    async def aclear_expired(cls) -> None:
        """Nothing to do, as :meth:`clear_expired`."""
