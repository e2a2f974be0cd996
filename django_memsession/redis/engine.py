"""``SessionStore`` on Redis: Django's ``SessionBase`` contract on one side, the Redis store on the
other.

Thin on purpose: the store does the round trips, this decides what to write. A load is one
round trip (a ``GET``; the first load of a session back from probation also promotes it), a
create one (``SET NX PX``), a save of an existing session one (a script that refuses to undo a
delete). A new anonymous session is written on probation (a short TTL); one that this object
loaded, or that holds a logged-in user, with its full age. Values round-trip exactly as through
Django's db engine under ``SESSION_SERIALIZER``. The async methods are native, on
``redis.asyncio``. The store comes from ``services.redis_store()``, whose first call also starts
this process's services (the control listener, the history of Redis's figures).

When Redis cannot answer, every method raises
:class:`~django_memsession.redis.exceptions.SessionBackendUnavailable` and notes it on
``self.outage``; the session is never silently empty, and the session key is kept, so no
middleware mistakes an outage for a logout and deletes the cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.sessions.backends.base import CreateError, UpdateError

from ..exceptions import SessionTooLarge
from ..serializers import current_codec
from ..sessionbase import AUTH_SESSION_KEY, FastSessionBase, current_session
from ..signals import user_sessions_ended
from .exceptions import SessionBackendUnavailable
from .latency import recorder
from .replicas import ENDING
from .services import redis_store as get_store
from .store import Loaded, RedisStore, UpdateResult

logger = logging.getLogger("django_memsession.redis")
who_logger = logging.getLogger("django_memsession")  # endings are logged as on the memory engine

# What an update of a session deleted or expired since it was loaded returns: never brought back.
REFUSED = (UpdateResult.DELETED, UpdateResult.GONE)
# The same answers from the user index's save script, and its answer to a create of a taken key.
STORED_LOGGED_IN = (1, 2)
TAKEN = 3

# What a load leaves to do after its round trip (see SessionStore._loaded()).
DONE, DISCARD, TOUCH = 0, 1, 2

# Ages (in seconds) this far from zero skip the datetime check in _expiry_age(): 100 years, far
# inside what datetime can represent from today.
SANE_AGE = 100 * 365 * 24 * 3600


class _SavePlan:
    """What one save writes, decided before its round trip (see ``SessionStore._save_plan``)."""

    __slots__ = ("args", "expires_at", "indexed", "must_create", "now", "store", "user")

    def __init__(
        self,
        store: RedisStore,
        must_create: bool,
        now: float,
        expires_at: float,
        user: str | None,
    ) -> None:
        self.store = store
        self.must_create = must_create
        self.now = now
        self.expires_at = expires_at
        self.user = user
        self.indexed = False
        self.args: tuple[Any, ...] = ()


class SessionStore(FastSessionBase):
    """The session engine: ``SESSION_ENGINE = "django_memsession.redis"``."""

    # The client (IP address and user agent, see clients.py) to note with the next save of a
    # logged-in session; set at login when MEMSESSION_TRACK_CLIENTS is on. None keeps the one
    # the index has.
    client: str | None = None

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
        # The user the session was loaded (or last saved) as: a save that changes it, or a
        # delete, keeps the user index right.
        self._user: str | None = None
        self.outage: SessionBackendUnavailable | None = None

    # Every store call below notes an outage on self.outage (for the middleware) with a plain
    # try/except: a context manager would cost about 1 µs on every call's success path.

    # -- load: _loaded() decides what is left after the round trip; load() and aload() run it

    def load(self) -> dict[str, Any]:
        session_key = self.session_key
        if session_key is None:
            # No key, or one that failed validation (SessionBase sets it to None): no session,
            # and no Redis call. Django's tests call load() directly on such sessions.
            return {}
        store = self._get_store()
        try:
            loaded = store.load(session_key)
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise
        data, then = self._loaded(store, session_key, loaded)
        if then == DISCARD:
            store.discard(session_key, loaded)  # type: ignore[arg-type]
        elif then == TOUCH:
            # Best effort: "last used" is refreshed at the next chance.
            with contextlib.suppress(SessionBackendUnavailable):
                store.index.touch(session_key, self._user)  # type: ignore[arg-type]
        return data

    async def aload(self) -> dict[str, Any]:
        session_key = self.session_key
        if session_key is None:
            return {}  # as in load()
        store = self._get_store()
        try:
            loaded = await store.aload(session_key)
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise
        data, then = self._loaded(store, session_key, loaded)
        if then == DISCARD:
            await store.adiscard(session_key, loaded)  # type: ignore[arg-type]
        elif then == TOUCH:
            with contextlib.suppress(SessionBackendUnavailable):  # best effort, as in load()
                await store.index.atouch(session_key, self._user)  # type: ignore[arg-type]
        return data

    def _loaded(
        self, store: RedisStore, session_key: str, loaded: Loaded | None
    ) -> tuple[dict[str, Any], int]:
        """The session's data, and what is left to do: DISCARD a record whose data is not a
        session, TOUCH a logged-in session whose "last used" is due, or DONE."""
        data = self._decoded(loaded)
        if data is None:
            return {}, (DONE if loaded is None else DISCARD)
        if self._user is not None and store.index.touch_due(session_key):
            return data, TOUCH
        return data, DONE

    def _decoded(self, loaded: Loaded | None) -> dict[str, Any] | None:
        """The session's data; None for no session: unknown, expired, deleted or evicted (then
        ``loaded`` is None), or a record whose data is not a session (the caller deletes it).
        Either way an empty session that gets a fresh key on save."""
        data = None if loaded is None else self._deserialized(loaded.payload)
        recorder.loaded(data is not None)
        if data is None:
            self._session_key = None
            return None
        self._known_expires_at = loaded.expires_at  # type: ignore[union-attr]
        self._came_back = True
        user = data.get(AUTH_SESSION_KEY)
        if user is None:
            self._user = None
        else:
            self._user = str(user)
            # The session a password change keeps (see password.py), as on the memory engine.
            current_session.set(self)
        return data

    @staticmethod
    def _deserialized(payload: bytes) -> dict[str, Any] | None:
        """A record's data, or None if it is not a session's: it cannot be deserialized (written
        under another SESSION_SERIALIZER, or not by us), or is not a dict (JSON's ``[1, 2]``)."""
        try:
            data = current_codec().loads(payload)
        except Exception:
            data = None
        if isinstance(data, dict):
            return data
        # Never the key, nor the data: the key is the visitor's credential.
        logger.warning(
            "A session's data could not be read as a session; it was treated as no session and "
            "deleted (the visitor gets a new session)."
        )
        return None

    # -- save: _save_plan() decides what to write, _created(), _updated() and _saved_logged_in()
    # what the answer means; save() and asave() do the round trips

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        plan = self._save_plan(self._get_session(no_load=must_create), must_create)
        store = plan.store
        try:
            if plan.indexed:
                result, ended = store.index.save_logged_in(*plan.args, **self._index_args(plan))
                return self._saved_logged_in(plan, result, ended)
            if must_create:
                self._created(store.create(*plan.args))
            elif self._updated(plan, store.update(*plan.args)):
                result, ended = store.index.save_logged_in(*plan.args[:5], **self._index_args(plan))
                return self._saved_logged_in(plan, result, ended)
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise
        self._known_expires_at = plan.expires_at

    async def asave(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return await self.acreate()
        plan = self._save_plan(await self._aget_session(no_load=must_create), must_create)
        store = plan.store
        try:
            if plan.indexed:
                result, ended = await store.index.asave_logged_in(
                    *plan.args, **self._index_args(plan)
                )
                return self._saved_logged_in(plan, result, ended)
            if must_create:
                self._created(await store.acreate(*plan.args))
            elif self._updated(plan, await store.aupdate(*plan.args)):
                result, ended = await store.index.asave_logged_in(
                    *plan.args[:5], **self._index_args(plan)
                )
                return self._saved_logged_in(plan, result, ended)
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise
        self._known_expires_at = plan.expires_at

    def _save_plan(self, data: dict[str, Any], must_create: bool) -> _SavePlan:
        """What a save writes, before any round trip. ``args``: the index's save (key, payload,
        expiry, TTL, full TTL), else the store's create (... TTL, settled) or update (... full
        TTL, may restore)."""
        session_key = self.session_key
        if session_key is None:
            # Loading found no session (expired, deleted): an update of nothing, as with
            # Django's engines. Through SessionMiddleware the load comes first and save() creates.
            raise UpdateError
        store = self._get_store()
        payload, expires_at, ttl, full_ttl, now = self._write(store, data)
        user = self._user_of(data)
        plan = _SavePlan(store, must_create, now, expires_at, user)
        plan.indexed = self._indexed(store, must_create, user, expires_at)
        if plan.indexed:
            plan.args = (session_key, payload, expires_at, ttl, full_ttl)
        elif must_create:
            plan.args = (session_key, payload, expires_at, ttl, ttl >= full_ttl)
        else:
            # A logged-in session the update finds evicted is not stored by it: it is indexed
            # again first (MISSING, then the index's save), as a login is.
            may_restore = int(self._may_restore(now)) * (2 if user is not None else 1)
            plan.args = (session_key, payload, expires_at, ttl, full_ttl, may_restore)
        return plan

    @staticmethod
    def _created(created: bool) -> None:
        if not created:
            raise CreateError

    @staticmethod
    def _updated(plan: _SavePlan, updated: UpdateResult) -> bool:
        """What an update answered: a refusal raised as Django expects; True if the session was
        stored again after an eviction and is logged in (its member may have been cleaned: the
        save indexes it again)."""
        if updated in REFUSED:
            raise UpdateError
        return updated is UpdateResult.MISSING or (
            updated is UpdateResult.RESTORED and plan.user is not None
        )

    def _indexed(
        self, store: RedisStore, must_create: bool, user: str | None, expires_at: float
    ) -> bool:
        """Whether this save goes through the user index's script, or is a plain update.

        A session that is, or was, logged in is indexed by its save; but a save of the same
        user's session that this process indexed less than ``index.LAST_USED_INTERVAL`` ago,
        with the same client and an expiry within the hash's TTL, is a plain update: its member
        is there (a logout or an ending leaves a tombstone, which refuses the update; an
        eviction is noticed as RESTORED and indexed again), and "last used" is true to the
        interval anyway. So a busy user's saves cost what they cost before the index.
        """
        if user is None and self._user is None:
            return False
        return (
            must_create
            or user != self._user
            or not store.index.index_fresh(self.session_key, expires_at, self.client)
        )

    @staticmethod
    def _user_of(data: dict[str, Any]) -> str | None:
        user = data.get(AUTH_SESSION_KEY)
        return None if user is None else str(user)

    def _index_args(self, plan: _SavePlan) -> dict[str, Any]:
        return {
            "create": plan.must_create,
            "may_restore": self._may_restore(plan.now),
            "user": plan.user,
            "loaded_user": self._user,
            "client": self.client,
            "replacing": self.__dict__.get("_replacing"),
        }

    def cycle_key(self) -> None:
        # The new key's session is created while the old one is still live: the per-user limit
        # must not count the old one (a login again in the same browser ends nothing).
        self._replacing = self.session_key
        try:
            super().cycle_key()
        finally:
            self._replacing = None

    async def acycle_key(self) -> None:
        self._replacing = self.session_key
        try:
            await super().acycle_key()
        finally:
            self._replacing = None

    def _saved_logged_in(self, plan: _SavePlan, result: int, ended: int) -> None:
        """What the user index's save answered: a refusal raised as Django expects, an ending
        by the per-user limit logged and signalled (as on the memory engine)."""
        if result == TAKEN:
            raise CreateError
        if result not in STORED_LOGGED_IN:
            raise UpdateError
        user = plan.user
        self._known_expires_at = plan.expires_at
        self._user = user
        if ended:
            who_logger.info(
                "Ended %d session(s) of user %s (limit): over MEMSESSION_MAX_SESSIONS_PER_USER "
                "(%s).",
                ended,
                user,
                plan.store.index.max_sessions_per_user,
            )
            user_sessions_ended.send(
                sender=RedisStore, user=user, count=ended, reason="limit", by=None
            )

    def note_client(self, client: str) -> None:
        """Note a logged-in session's client: with its next save, or now (one round trip) if
        this process has not noted this client for it yet (see ``index.LastUsed``)."""
        self.client = client
        session_key, user = self.session_key, self._user
        if session_key is None or user is None:
            return
        store = self._get_store()
        if store.index.touch_due(session_key, client):
            with contextlib.suppress(SessionBackendUnavailable):  # else with the next save
                store.index.touch(session_key, user, client)

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
        target = self._delete_target(session_key)
        if target is None:
            return
        try:
            if target[1] is None:
                self._get_store().delete(target[0], wait=target[2])
            else:
                self._get_store().index.delete_logged_in(target[0], target[1])
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise

    async def adelete(self, session_key: str | None = None) -> None:
        target = self._delete_target(session_key)
        if target is None:
            return
        try:
            if target[1] is None:
                await self._get_store().adelete(target[0], wait=target[2])
            else:
                await self._get_store().index.adelete_logged_in(target[0], target[1])
        except SessionBackendUnavailable as exc:
            self.outage = exc
            raise

    def _delete_target(self, session_key: str | None) -> tuple[str, str | None, str | None] | None:
        """What a delete removes: the key (this session's when none is given), the user it
        is indexed under, if known (see :meth:`_deleted_user`), and whether a delete with no
        user waits for replicas (``ENDING``: the session may be logged in, as this object never
        loaded it; None: known anonymous, as the ``cycle_key()`` inside ``login()``); None:
        nothing to do."""
        if session_key is None:
            session_key = self.session_key
        if not self._validate_session_key(session_key):
            return None
        known = self._known_expires_at is not None  # loaded or written by this object
        return session_key, self._deleted_user(session_key), None if known else ENDING

    def _deleted_user(self, session_key: str) -> str | None:
        """Whose session a delete removes, if this object knows (its own session, or the old
        key of ``cycle_key()``): the member leaves the index in the delete's round trip; any
        other is cleaned lazily. ``flush()`` clears the data first, so the user loaded counts."""
        cache = self.__dict__.get("_session_cache") or {}
        user = self._user_of(cache) or self._user
        if session_key == self.session_key:
            self._user = None
        return user

    @classmethod
    def clear_expired(cls) -> None:
        """Redis removes each session when its TTL runs out; what is left is the user index's
        members of sessions that are gone (``clearsessions`` cleans them, as ``prunesessions``).
        """
        result = get_store().index.prune_index()
        logger.debug("clear_expired: %d index member(s) of gone sessions removed", result.removed)

    @classmethod
    async def aclear_expired(cls) -> None:
        # A SCAN in batches: on a thread, never in the event loop.
        await asyncio.to_thread(cls.clear_expired)
