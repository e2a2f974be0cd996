"""Who is logged in, on Redis: one small hash per logged-in user beside the sessions.

``<prefix>u:<user id>`` is a hash: one field per logged-in session of that user, named by its
session key, holding its facts as one short text: when it was created and last used (whole
seconds, 10 digits each), then the client (``"<ip>\\n<user agent>"``, only with
``MEMSESSION_TRACK_CLIENTS``). When it expires is read from the session's own record when the
index is read, so it is never stale. Redis keeps a hash of a few short fields as a listpack: a
user with one session costs about a hundred bytes (README, "Who is logged in on Redis").

* The hash is written by the same Lua script that stores a logged-in session (one round trip per
  save, as before); a save refused because the session was deleted (a tombstone) changes nothing,
  so a logout is never undone in the index either. An anonymous session never touches it:
  nothing here grows with anonymous traffic.
* Its TTL is raised to the longest TTL of the sessions written into it, so a user who never
  comes back leaves nothing behind.
* Members whose session is gone (deleted, expired, evicted) are removed when the hash is read
  (:meth:`RedisUserIndex.user_sessions`, the per-user limit) and by ``prunesessions``
  (:meth:`RedisUserIndex.prune_index`, a ``SCAN`` in bounded batches). A delete that knows whose
  session it is (a logout, ``cycle_key``) removes the member at once, in its round trip.
* ``MEMSESSION_MAX_SESSIONS_PER_USER`` is enforced inside the save's script: Redis runs it
  atomically, so concurrent logins in several processes can never leave a user above the limit.

Session keys name the fields: they are credentials, and never leave the store's callers
(``everywhere`` turns them into opaque ids). The store holds one :class:`RedisUserIndex`
(``store.index``); the engine calls it for logged-in sessions. ``redis/users.py`` re-exports the
public names from here.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from ..logged_in import SessionFacts
from .client import AsyncScript
from .outages import unavailable
from .record import pack
from .replicas import ENDING, LOGIN, WaitingRun, evalsha
from .scripts import source

logger = logging.getLogger("django_memsession.redis")


def _wrong_type(exc: redis.ResponseError) -> bool:
    """Redis's ``WRONGTYPE``: the command met a key of another type (redis-py's annotation of a
    pipeline error names the command first, so the words are searched, not the start)."""
    return "WRONGTYPE" in str(exc)


if TYPE_CHECKING:
    from .store import RedisStore

__all__ = [
    "LAST_USED_INTERVAL",
    "ImportedSession",
    "IndexPrune",
    "IndexedSession",
    "RedisUserIndex",
    "facts_text",
]

USERS = b"u:"  # after the prefix: no session key has a ':' (they are [a-z0-9])
SECONDS_DIGITS = 10
# A load refreshes "last used" at most this often per session and process (see LastUsed).
LAST_USED_INTERVAL = 60
# A user's hash outlives the sessions written into it by this much (see lua/save.lua's ARGV[17]).
INDEX_TTL_MARGIN_MS = LAST_USED_INTERVAL * 1000
# How many remembered sessions a process keeps for that; the oldest are forgotten first.
LAST_USED_MEMORY = 10_000
PRUNE_BATCH = 200


def digits(seconds: float) -> bytes:
    return b"%0*d" % (SECONDS_DIGITS, int(seconds))


def facts_text(created: float, last_used: float, client: str | None) -> bytes:
    """A member's value: created and last used (10 digits each), then the client text."""
    return digits(created) + digits(last_used) + (client or "").encode()


def waits(user: str | None, loaded_user: str | None) -> str | None:
    """Whether a save of a logged-in session waits for replicas: LOGIN when it logs the session
    in (a user for the first time, or another user), ENDING when it drops the user (a logout
    without ``flush()``), else None."""
    if user == loaded_user:
        return None
    return LOGIN if user is not None else ENDING


# The name this index's rows had before both engines shared one type (redis/users.py
# re-exports it).
IndexedSession = SessionFacts


@dataclass(frozen=True)
class IndexPrune:
    """One pass of ``prunesessions`` over the index: hashes read, dead members removed (or that
    would be, in a dry run), live members left."""

    users: int
    removed: int
    sessions: int
    dry_run: bool


@dataclass(frozen=True)
class ImportedSession:
    """One session for :meth:`RedisUserIndex.import_sessions`: as ``create_many`` takes it, and
    for a logged-in one its user id and facts (``user`` None: anonymous, not indexed)."""

    session_key: str
    payload: bytes
    expires_at: float
    ttl_ms: int
    settled: bool = True
    user: str | None = None
    created: float | None = None
    last_used: float | None = None
    client: str | None = None


def _read(user: str, rows: list[Any]) -> list[SessionFacts]:
    found = []
    for at in range(1, len(rows), 3):
        key, facts, expires = rows[at], rows[at + 1], rows[at + 2]
        client = facts[2 * SECONDS_DIGITS :]
        found.append(
            SessionFacts(
                key=key.decode(),
                user=user,
                created=int(facts[:SECONDS_DIGITS]),
                last_used=int(facts[SECONDS_DIGITS : 2 * SECONDS_DIGITS]),
                expires_at=int(expires) / 1000,
                client=client.decode(errors="replace") if client else None,
            )
        )
    found.sort(key=lambda row: (row.last_used, row.created), reverse=True)
    return found


class LastUsed:
    """When this process last refreshed each session's "last used" in Redis (bounded).

    Why not on every load: a load is one plain ``GET``, and the session's user is known only once
    it is deserialized, so a refresh cannot ride in the load's round trip. Every save of a
    logged-in session refreshes it for free (the save's script writes the member anyway); a load
    refreshes it with one extra round trip only when this process has not done so for
    :data:`LAST_USED_INTERVAL` seconds. "Last used" is then true to the interval, and a user
    reading pages costs one extra round trip per minute and process, not one per request. The
    memory is bounded (the oldest forgotten first): at worst a forgotten session is refreshed
    once more.
    """

    def __init__(self) -> None:
        # key -> (when noted, the client noted, until when its user's hash lives at least)
        self._seen: dict[str, tuple[int, str | None, float]] = {}
        self._lock = threading.Lock()

    def due(self, key: str, now: int, client: str | None) -> bool:
        seen = self._seen.get(key)
        if seen is None:
            return True
        return now - seen[0] >= LAST_USED_INTERVAL or (client is not None and client != seen[1])

    def fresh(self, key: str, now: int, client: str | None, expires_at: float) -> bool:
        """Whether a save may skip the index: noted by a save within the interval, with this
        client, and its user's hash outlives ``expires_at``."""
        seen = self._seen.get(key)
        return (
            seen is not None
            and now - seen[0] < LAST_USED_INTERVAL
            and (client is None or client == seen[1])
            and expires_at <= seen[2]
        )

    def note(self, key: str, now: int, client: str | None, hash_until: float = 0.0) -> None:
        """A use noted in Redis now; by a save, ``hash_until`` says how long the hash lives."""
        with self._lock:
            seen = self._seen.pop(key, None)
            if seen is not None:
                client = seen[1] if client is None else client
                hash_until = max(hash_until, seen[2])
            self._seen[key] = (now, client, hash_until)
            if len(self._seen) > LAST_USED_MEMORY:
                del self._seen[next(iter(self._seen))]

    def forget(self, key: str) -> None:
        with self._lock:
            self._seen.pop(key, None)


class RedisUserIndex:
    """The index's Redis calls. Held by the store (``store.index``), whose connections, clock
    and write path (with the near cache) it uses: a save of a logged-in session is the store's
    write, indexed in the same script."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.prefix = store.prefix
        self.tombstone_ms = store.tombstone_ms
        self.max_sessions_per_user = store.config.max_sessions_per_user
        self.last_used = LastUsed()
        self._scripts: dict[str, Any] = {}
        self._async_scripts: weakref.WeakKeyDictionary[Any, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def users_key(self, user: str) -> bytes:
        return self.prefix + USERS + user.encode()

    # -- scripts ---------------------------------------------------------------------------------

    def _script(self, name: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.store.client.register_script(source(name))
        return script

    def _run(self, name: str, keys: list[bytes], args: list[Any], run: Any = None) -> Any:
        """``EVALSHA``, and ``SCRIPT LOAD`` first if Redis lost the script (as the store's
        ``_evalsha``, for several keys). ``run`` sends a command (the pool's by default; the
        near cache's writer connection for a save it keeps)."""
        script = self._script(name)
        if run is None:
            run = self.store.client.execute_command
        try:
            return run("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            sha = run("SCRIPT", "LOAD", script.script)
            script.sha = sha.decode() if isinstance(sha, bytes) else sha
            try:
                return run("EVALSHA", script.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:  # a retry reached another server (failover)
                return run("EVAL", script.script, len(keys), *keys, *args)

    async def _arun(self, name: str, keys: list[bytes], args: list[Any], run: Any = None) -> Any:
        """A script on the event loop's client; ``run``, an ``AsyncWaitingRun`` to send it
        with a ``WAIT``."""
        client = self.store._async_client().client
        scripts = self._async_scripts.get(client)
        if scripts is None:
            scripts = self._async_scripts[client] = {}
        script = scripts.get(name)
        if script is None:
            script = scripts[name] = AsyncScript(client, source(name))
        if run is not None:
            return await evalsha(run, script, keys, args)
        return await script(keys=keys, args=args)

    # -- the save of a logged-in session ---------------------------------------------------------

    def _save_args(
        self,
        session_key: str,
        payload: bytes,
        expires_at: float,
        ttl_ms: int,
        full_ttl_ms: int,
        *,
        create: bool,
        may_restore: bool,
        user: str | None,
        loaded_user: str | None,
        client: str | None,
        replacing: str | None = None,
    ) -> tuple[list[bytes], list[Any]]:
        args = self.store._update_args(payload, expires_at, ttl_ms, full_ttl_ms, may_restore)
        field = session_key.encode()
        users = self.users_key(user if user is not None else loaded_user or "")
        previous = self.users_key(loaded_user) if loaded_user is not None else users
        keys = [self.prefix + field, users, previous]
        args += [
            field,
            digits(args[3] // 1000),
            b"0" if client is None else b"1",
            (client or "").encode(),
            self.max_sessions_per_user or 0,
            self.prefix,
            self.tombstone_ms,
            b"c" if create else b"u",
            b"1" if user is not None else b"0",
            digits(args[3] // 1000),
            (replacing or "").encode(),
            full_ttl_ms + INDEX_TTL_MARGIN_MS,
        ]
        return keys, args

    def save_logged_in(self, session_key: str, *args: Any, **kwargs: Any) -> tuple[int, int]:
        """Store a session that is (or was, as ``loaded_user``) logged in, and keep the index
        right, in one round trip: ``(result, ended)``; result as the store's update script (1
        stored, 2 stored again after an eviction, 0 deleted, -1 gone), or 3 for a create of a
        taken key; ended, how many other sessions of the user the per-user limit ended."""
        keys, argv = self._save_args(session_key, *args, **kwargs)
        expires_at, ttl_ms = args[1], args[2]
        try:
            # A save that logs the session in (a user for the first time, or another one), or
            # that drops its user, waits for replicas (see replicas.py).
            # Through the store's write path: with a near cache, the saved version is kept
            # there as an update's is (and a load of this session in flight meanwhile is not).
            result, ended = self.store._write(
                session_key,
                lambda run: self._run("save", keys, argv, run),
                self.store._keep_saved(argv[0], expires_at),
                claim=(keys[0], ttl_ms),
                wait=waits(kwargs["user"], kwargs["loaded_user"]),
            )
        except redis.RedisError as exc:
            unavailable(exc)
        self._saved(session_key, kwargs, argv, result)
        return result, ended

    def _saved(
        self, session_key: str, kwargs: dict[str, Any], argv: list[Any], result: int
    ) -> None:
        if kwargs["user"] is None or result not in (1, 2):
            self.last_used.forget(session_key)
            return
        now_ms = argv[3]
        hash_until = (now_ms + argv[16]) / 1000
        self.last_used.note(session_key, now_ms // 1000, kwargs["client"], hash_until)

    def index_fresh(self, session_key: str, expires_at: float, client: str | None) -> bool:
        """Whether a save of this logged-in session may skip the index (see the engine's
        ``_indexed``)."""
        now = int(self.store.clock())
        return self.last_used.fresh(session_key, now, client, expires_at)

    async def asave_logged_in(self, session_key: str, *args: Any, **kwargs: Any) -> tuple[int, int]:
        keys, argv = self._save_args(session_key, *args, **kwargs)
        wait = waits(kwargs["user"], kwargs["loaded_user"])
        try:
            waiting = await self.store._awaiting(wait)
            result, ended = await self._arun("save", keys, argv, waiting)
        except redis.RedisError as exc:
            self.store._forget(session_key, answered=False)
            unavailable(exc)
        self.store._forget(session_key, answered=True)
        self._saved(session_key, kwargs, argv, result)
        if waiting is not None:
            self.store.replicas.check(waiting, wait)  # type: ignore[arg-type]
        return result, ended

    # -- a load's "last used" ----------------------------------------------------------------------

    def touch_due(self, session_key: str, client: str | None = None) -> bool:
        return self.last_used.due(session_key, int(self.store.clock()), client)

    def _touch_args(self, session_key: str, user: str, client: str | None) -> tuple[Any, ...]:
        now = int(self.store.clock())
        self.last_used.note(session_key, now, client)
        keys = [self.users_key(user)]
        args = [session_key.encode(), digits(now), b"0" if client is None else b"1"]
        return keys, [*args, (client or "").encode()]

    def touch(self, session_key: str, user: str, client: str | None = None) -> None:
        """Note a use of a logged-in session now (and its client, when given). Best effort: the
        request goes on whatever happens (a failure is retried after the interval)."""
        keys, args = self._touch_args(session_key, user, client)
        try:
            self._run("touch", keys, args)
        except redis.RedisError as exc:
            self.last_used.forget(session_key)
            unavailable(exc)

    async def atouch(self, session_key: str, user: str, client: str | None = None) -> None:
        keys, args = self._touch_args(session_key, user, client)
        try:
            await self._arun("touch", keys, args)
        except redis.RedisError as exc:
            self.last_used.forget(session_key)
            unavailable(exc)

    # -- a delete that knows the user ------------------------------------------------------------

    def _drop_foreign_hash(self, users: bytes) -> None:
        """A logout's ``HDEL`` found a key of another type at the user's hash (typed in with
        redis-cli, or corrupted): not ours. ``MULTI`` ran every command, so the tombstone is
        written and the logout done; the key goes, as the scripts delete such a key."""
        logger.warning("A user's index hash held a value of another type; it was deleted.")
        self.store.client.delete(users)

    def delete_logged_in(self, session_key: str, user: str) -> None:
        """The store's delete (a tombstone) and the member's removal, in one round trip."""
        self.last_used.forget(session_key)

        field = session_key.encode()
        key, users = self.prefix + field, self.users_key(user)

        def send(run: Any) -> Any:
            if isinstance(run, WaitingRun):  # MULTI ... EXEC, then WAIT, in one round trip
                commands = [("SET", key, b"T", "PX", self.tombstone_ms), ("HDEL", users, field)]
                return run.batch([("MULTI",), *commands, ("EXEC",)])[-1]
            pipe = self.store.client.pipeline(transaction=True)
            pipe.set(key, b"T", px=self.tombstone_ms)
            pipe.hdel(users, field)
            return pipe.execute()

        try:
            self.store._write(session_key, send, None, wait=ENDING)
        except redis.ResponseError as exc:
            if not _wrong_type(exc):
                unavailable(exc)
            self._drop_foreign_hash(users)
        except redis.RedisError as exc:
            unavailable(exc)

    async def adelete_logged_in(self, session_key: str, user: str) -> None:
        self.last_used.forget(session_key)
        client = self.store._async_client().client
        field = session_key.encode()
        key, users = self.prefix + field, self.users_key(user)
        try:
            waiting = await self.store._awaiting(ENDING)
            if waiting is not None:  # MULTI ... EXEC, then WAIT, in one round trip
                commands = [("SET", key, b"T", "PX", self.tombstone_ms), ("HDEL", users, field)]
                await waiting.batch([("MULTI",), *commands, ("EXEC",)])
            else:
                async with client.pipeline(transaction=True) as pipe:
                    pipe.set(key, b"T", px=self.tombstone_ms)
                    pipe.hdel(users, field)
                    await pipe.execute()
        except redis.ResponseError as exc:
            if not _wrong_type(exc):
                self.store._forget(session_key, answered=False)
                unavailable(exc)
            await client.delete(users)  # see _drop_foreign_hash
        except redis.RedisError as exc:
            self.store._forget(session_key, answered=False)
            unavailable(exc)
        self.store._forget(session_key, answered=True)
        if waiting is not None:
            self.store.replicas.check(waiting, ENDING)

    # -- reading and ending ------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.store.clock() * 1000)

    def user_sessions(self, user: str) -> list[SessionFacts]:
        """The user's live sessions, most recently used first; dead members are removed."""
        try:
            rows = self._run("read", [self.users_key(user)], [self.prefix, self._now_ms(), 0])
        except redis.RedisError as exc:
            unavailable(exc)
        return _read(user, rows)

    async def auser_sessions(self, user: str) -> list[SessionFacts]:
        try:
            args = [self.prefix, self._now_ms(), 0]
            rows = await self._arun("read", [self.users_key(user)], args)
        except redis.RedisError as exc:
            unavailable(exc)
        return _read(user, rows)

    def end_sessions(self, user: str, session_keys: Iterable[str]) -> int:
        """End these sessions of the user (tombstones); a key the user's index does not hold
        (another user's session) ends nothing. How many live sessions ended."""
        fields, args = self._end_args(session_keys)
        if not fields:
            return 0
        store = self.store
        try:
            waiting = store._waiting(ENDING)  # endings wait for replicas (see replicas.py)
            ended = int(self._run("end", [self.users_key(user)], args, waiting))
            if waiting is not None:
                store.replicas.check(waiting, ENDING)
            return ended
        except redis.RedisError as exc:
            unavailable(exc)
        finally:
            for field in fields:  # with a near cache: this process keeps no copy of them
                self.store._forget(field.decode(), answered=False)

    async def aend_sessions(self, user: str, session_keys: Iterable[str]) -> int:
        fields, args = self._end_args(session_keys)
        if not fields:
            return 0
        try:
            waiting = await self.store._awaiting(ENDING)
            ended = int(await self._arun("end", [self.users_key(user)], args, waiting))
            if waiting is not None:
                self.store.replicas.check(waiting, ENDING)
            return ended
        except redis.RedisError as exc:
            unavailable(exc)
        finally:
            for field in fields:
                self.store._forget(field.decode(), answered=False)

    def _end_args(self, session_keys: Iterable[str]) -> tuple[list[bytes], list[Any]]:
        """The sessions ``end_sessions`` ends, forgotten by the last-used figures, and the
        ``end`` script's arguments."""
        fields = [key.encode() for key in session_keys]
        for field in fields:
            self.last_used.forget(field.decode())
        return fields, [self.prefix, self.tombstone_ms, self._now_ms(), *fields]

    # -- prunesessions -----------------------------------------------------------------------------

    def users_pattern(self) -> bytes:
        """The ``SCAN`` pattern of every user hash under this prefix (glob characters in the
        prefix escaped)."""
        escaped = bytearray()
        for byte in self.prefix + USERS:
            if byte in b"*?[]\\":
                escaped += b"\\"
            escaped.append(byte)
        return bytes(escaped) + b"*"

    def prune_index(self, *, dry_run: bool = False, batch: int = PRUNE_BATCH) -> IndexPrune:
        """Remove dead members from every user's hash: ``SCAN`` in batches of ``batch`` keys,
        each batch cleaned in one pipelined round trip (each hash by one short script), so Redis
        is never held long. Returns what it found."""
        users = removed = sessions = 0
        pattern = self.users_pattern()
        script = self._script("read")
        try:
            script.sha = self.store.client.script_load(script.script)
            cursor = 0
            while True:
                cursor, keys = self.store.client.scan(cursor, match=pattern, count=batch)
                if keys:
                    pipe = self.store.client.pipeline(transaction=False)
                    for key in keys:
                        args = (self.prefix, self._now_ms(), int(dry_run))
                        pipe.execute_command("EVALSHA", script.sha, 1, key, *args)
                    for rows in pipe.execute():
                        users += 1
                        removed += int(rows[0])
                        sessions += (len(rows) - 1) // 3
                if cursor == 0:
                    break
        except redis.RedisError as exc:
            unavailable(exc)
        return IndexPrune(users=users, removed=removed, sessions=sessions, dry_run=dry_run)

    # -- imports ---------------------------------------------------------------------------------

    def import_sessions(self, sessions: Iterable[ImportedSession]) -> int:
        """Write many sessions in one pipelined round trip, and index the logged-in ones.

        Each :class:`ImportedSession` is written as ``create`` writes it (``SET NX`` with its
        TTL: a session already in Redis, newer or a tombstone, is never overwritten); one with a
        ``user`` is also indexed under that user with its facts (``created`` and ``last_used``
        default to now), and the user's hash TTL raised to the session's. The index entry is
        written only if the session itself was (a script per logged-in session, so both happen
        or neither). The per-user limit is not applied: an import copies what was allowed
        where it came from. Returns how many sessions were written.
        """
        now = self.store.clock()
        now_ms = int(now * 1000)
        save = self._script("save")
        try:
            save.sha = self.store.client.script_load(save.script)
            pipe = self.store.client.pipeline(transaction=False)
            for item in sessions:
                record = pack(item.payload, item.expires_at, item.settled)
                key = self.prefix + item.session_key.encode()
                if item.user is None:
                    pipe.set(key, record, px=item.ttl_ms, nx=True)
                    continue
                users = self.users_key(item.user)
                created = now if item.created is None else item.created
                last_used = now if item.last_used is None else item.last_used
                facts = facts_text(created, last_used, item.client)
                args = [
                    record,
                    item.ttl_ms,
                    item.ttl_ms,
                    now_ms,
                    0,
                    item.session_key.encode(),
                    facts[SECONDS_DIGITS : 2 * SECONDS_DIGITS],
                    b"1",
                    facts[2 * SECONDS_DIGITS :],
                    0,
                    self.prefix,
                    self.tombstone_ms,
                    b"c",
                    b"1",
                    facts[:SECONDS_DIGITS],
                    b"",
                    item.ttl_ms + INDEX_TTL_MARGIN_MS,
                ]
                pipe.execute_command("EVALSHA", save.sha, 3, key, users, users, *args)
            results = pipe.execute()
        except redis.RedisError as exc:
            unavailable(exc)
        written = 0
        for result in results:
            if result is True or (isinstance(result, list) and result[0] == 1):
                written += 1
        return written
