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

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from ..logged_in import SessionFacts
from ..serializers import current_codec
from ..sessionbase import AUTH_SESSION_KEY
from .client import AsyncScript
from .outages import unavailable
from .record import HEADER_SIZE, RECORD_KINDS, TOMBSTONE, pack
from .replicas import ENDING, LOGIN, evalsha
from .scripts import source
from .steps import Command, Eval, aone, apipelined, asend_steps, one, pipelined, send_steps

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
# A user's hash outlives the sessions written into it by this much (see lua/index.lua's ARGV[6]).
INDEX_TTL_MARGIN_MS = LAST_USED_INTERVAL * 1000
# How many remembered sessions a process keeps for that; the oldest are forgotten first.
LAST_USED_MEMORY = 10_000
PRUNE_BATCH = 200
# The save's answers whose record is now the key's value: stored, stored again.
KEPT = (1, 2)


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

    def _save_steps(
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
    ) -> _Save:
        """A save of a session that is (or was, as ``loaded_user``) logged in, as ordered steps
        (see ``steps.py``): index it under ``user`` first, then write its record, then remove it
        from the hash of the user it was loaded as, if another."""
        args = self.store._update_args(payload, expires_at, ttl_ms, full_ttl_ms, may_restore)
        record, now_ms = args[0], args[3]
        field = session_key.encode()
        key = self.prefix + field
        hash_ttl = full_ttl_ms + INDEX_TTL_MARGIN_MS
        steps: list[list[Command]] = []
        if user is not None:
            limit = b"1" if self.max_sessions_per_user else b"0"
            now = digits(now_ms // 1000)
            client_args = (b"0", b"") if client is None else (b"1", client.encode())
            index_args = (field, now, *client_args, b"", hash_ttl, limit, b"0")
            steps.append([Eval("index", (self.users_key(user),), index_args)])
        if create:
            steps.append([("SET", key, record, "PX", ttl_ms, "NX")])
        else:
            steps.append([Eval("update", (key,), tuple(args))])
        wait_at = len(steps) - 1
        if loaded_user is not None and loaded_user != user:
            steps.append([Eval("drop", (self.users_key(loaded_user),), (field,))])
        return _Save(
            steps, wait_at, now_ms, hash_ttl, field, user, replacing, record, expires_at, ttl_ms
        )

    def _saved_steps(self, save: _Save, replies: list[list[Any]]) -> tuple[int, list[Command]]:
        """What a save's steps answered: the record's result (1 stored, 2 stored again after an
        eviction, 0 deleted, -1 gone, 3 a create of a taken key), and the steps still to send: a
        member just added for a session not stored is removed again (best effort; else the
        index repairs it when it reads it)."""
        written = replies[save.wait_at][0]
        if written is None or written is True or isinstance(written, bytes):  # SET NX
            result = 3 if written is None else 1
        else:
            result = int(written)
        if save.user is None or result in KEPT:
            return result, []
        added = replies[0][0][0] == 1
        if not added:
            return result, []
        return result, [Eval("drop", (self.users_key(save.user),), (save.field,))]

    def _others(
        self, save: _Save, replies: list[list[Any]], result: int
    ) -> list[tuple[bytes, bytes]]:
        """The user's other members a save's index step returned, when the per-user limit
        applies: a new member (a login), stored as a new session (not restored after an
        eviction)."""
        if save.user is None or not self.max_sessions_per_user or result != 1:
            return []
        found = replies[0][0]
        if found[0] != 1:
            return []
        replacing = (save.replacing or "").encode()
        return [
            (found[at], found[at + 1]) for at in range(1, len(found), 2) if found[at] != replacing
        ]

    def save_logged_in(self, session_key: str, *args: Any, **kwargs: Any) -> tuple[int, int]:
        """Store a session that is (or was, as ``loaded_user``) logged in, and keep the index
        right: ``(result, ended)``; result as the store's update script (1 stored, 2 stored
        again after an eviction, 0 deleted, -1 gone), or 3 for a create of a taken key; ended,
        how many other sessions of the user the per-user limit ended.

        One round trip on one server (the steps in one transaction); on a cluster one per step.
        The per-user limit costs more only when the user has more members than it allows."""
        save = self._save_steps(session_key, *args, **kwargs)
        store = self.store
        client = store.client
        wait = waits(kwargs["user"], kwargs["loaded_user"])
        try:
            if store.near is not None and (wait is None or not store.replicas.needed()):
                replies = self._save_kept(session_key, save)
            else:
                # A save that logs the session in (a user for the first time, or another one),
                # or that drops its user, waits for replicas (see replicas.py). Through the
                # store's write path: with a near cache, this process keeps no copy of it.
                replies = store._write(
                    session_key,
                    lambda run: send_steps(client, save.steps, run, save.wait_at),
                    None,
                    wait=wait,
                )
            result, undo = self._saved_steps(save, replies)
            if undo:
                with contextlib.suppress(redis.RedisError):
                    send_steps(client, [undo])
            others = self._others(save, replies, result)
            ended = self._limit(save, others) if others else 0
        except redis.RedisError as exc:
            unavailable(exc)
        self._saved(session_key, kwargs, save, result)
        return result, ended

    def _save_kept(self, session_key: str, save: _Save) -> list[list[Any]]:
        """A save the near cache keeps (no wait for replicas): the steps before the record's on
        the pool, then the record's through the store's write path (the near cache's writer
        connection, claimed, as an update's), then the steps after it on the pool."""
        store = self.store
        write = save.steps[save.wait_at][0]
        if isinstance(write, Eval):  # an update

            def send(run: Any) -> Any:
                return store._evalsha(store._update, write.keys[0], *write.args, run=run)

            keep = store._keep_saved(save.record, save.expires_at)
        else:  # a create: SET NX

            def send(run: Any) -> Any:
                return run(*write)

            def keep(reply: Any) -> tuple[bytes | None, float]:
                return (save.record if reply else None), save.expires_at

        replies = send_steps(store.client, save.steps[: save.wait_at]) if save.wait_at else []
        key = store.key(session_key)
        replies.append([store._write(session_key, send, keep, claim=(key, save.ttl_ms))])
        after = save.steps[save.wait_at + 1 :]
        if after:
            replies += send_steps(store.client, after)
        return replies

    def _saved(self, session_key: str, kwargs: dict[str, Any], save: _Save, result: int) -> None:
        if kwargs["user"] is None or result not in KEPT:
            self.last_used.forget(session_key)
            return
        hash_until = (save.now_ms + save.hash_ttl) / 1000
        self.last_used.note(session_key, save.now_ms // 1000, kwargs["client"], hash_until)

    def index_fresh(self, session_key: str, expires_at: float, client: str | None) -> bool:
        """Whether a save of this logged-in session may skip the index (see the engine's
        ``_indexed``)."""
        now = int(self.store.clock())
        return self.last_used.fresh(session_key, now, client, expires_at)

    async def asave_logged_in(self, session_key: str, *args: Any, **kwargs: Any) -> tuple[int, int]:
        save = self._save_steps(session_key, *args, **kwargs)
        wait = waits(kwargs["user"], kwargs["loaded_user"])
        client = self.store._async_client().client
        try:
            waiting = await self.store._awaiting(wait)
            replies = await asend_steps(client, save.steps, waiting, save.wait_at)
            result, undo = self._saved_steps(save, replies)
            if undo:
                with contextlib.suppress(redis.RedisError):
                    await asend_steps(client, [undo])
            others = self._others(save, replies, result)
            ended = await self._alimit(save, others) if others else 0
        except redis.RedisError as exc:
            self.store._forget(session_key, answered=False)
            unavailable(exc)
        self.store._forget(session_key, answered=True)
        self._saved(session_key, kwargs, save, result)
        if waiting is not None:
            self.store.replicas.check(waiting, wait)  # type: ignore[arg-type]
        return result, ended

    # -- the per-user limit: after the login's steps, only when the user holds more members than
    # the limit allows

    def _limit_plan(
        self, save: _Save, others: list[tuple[bytes, bytes]]
    ) -> tuple[list[Any], Callable[[list[Any]], tuple[int, list[list[Command]]]]] | None:
        """What the limit needs: the other members' sessions to read (None: within the limit
        whatever they hold), and what to do with them: the oldest live ones over the limit are
        ended (tombstones first, then their members removed), the dead ones removed."""
        limit = int(self.max_sessions_per_user or 0)
        if len(others) + 1 <= limit:
            return None
        user = save.user or ""
        users = self.users_key(user)

        def decide(headers: list[Any]) -> tuple[int, list[list[Command]]]:
            live, dead = [], []
            for (field, facts), header in zip(others, headers, strict=True):
                state = member_state(header, facts, save.now_ms, user)
                (dead if state is DEAD else live).append((field, facts))
            over = len(live) + 1 - limit
            live.sort(key=lambda member: member[1][SECONDS_DIGITS : 2 * SECONDS_DIGITS])
            ending = live[: max(over, 0)]
            steps: list[list[Command]] = []
            if ending:
                ends = (self.tombstone_ms, save.now_ms)
                steps.append([Eval("ending", (self.prefix + field,), ends) for field, _ in ending])
            last: list[Command] = []
            if dead:
                last.append(Eval("prune", (users,), tuple(x for member in dead for x in member)))
            if ending:
                last.append(Eval("drop", (users,), tuple(field for field, _ in ending)))
            steps.append(last)
            for field, _ in ending:
                self.last_used.forget(field.decode())
            return len(ending), steps

        return [self.prefix + field for field, _ in others], decide

    def _limit(self, save: _Save, others: list[tuple[bytes, bytes]]) -> int:
        plan = self._limit_plan(save, others)
        if plan is None:
            return 0
        keys, decide = plan
        ended, steps = decide(records(self.store.client, keys))
        send_steps(self.store.client, steps)
        return ended

    async def _alimit(self, save: _Save, others: list[tuple[bytes, bytes]]) -> int:
        plan = self._limit_plan(save, others)
        if plan is None:
            return 0
        keys, decide = plan
        client = self.store._async_client().client
        ended, steps = decide(await arecords(client, keys))
        await asend_steps(client, steps)
        return ended

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

    def _delete_steps(self, session_key: str, user: str) -> list[list[Command]]:
        """A logout: the tombstone first, then the member removed (a crash between the two
        leaves a member of a tombstoned session, removed when the hash is read; never a live
        logged-in session missing from the index)."""
        field = session_key.encode()
        return [
            [("SET", self.prefix + field, TOMBSTONE, "PX", self.tombstone_ms)],
            [Eval("drop", (self.users_key(user),), (field,))],
        ]

    def delete_logged_in(self, session_key: str, user: str) -> None:
        """The store's delete (a tombstone), then the member's removal: one round trip on one
        server, two on a cluster (see ``steps.py``)."""
        self.last_used.forget(session_key)
        steps = self._delete_steps(session_key, user)
        client = self.store.client
        try:
            self.store._write(
                session_key, lambda run: send_steps(client, steps, run), None, wait=ENDING
            )
        except redis.RedisError as exc:
            unavailable(exc)

    async def adelete_logged_in(self, session_key: str, user: str) -> None:
        self.last_used.forget(session_key)
        steps = self._delete_steps(session_key, user)
        client = self.store._async_client().client
        try:
            waiting = await self.store._awaiting(ENDING)
            await asend_steps(client, steps, waiting)
        except redis.RedisError as exc:
            self.store._forget(session_key, answered=False)
            unavailable(exc)
        self.store._forget(session_key, answered=True)
        if waiting is not None:
            self.store.replicas.check(waiting, ENDING)

    # -- reading and ending ------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.store.clock() * 1000)

    def _listing(
        self, user: str, members: list[Any], found: list[Any], now_ms: int
    ) -> tuple[list[SessionFacts], list[Command]]:
        """The live sessions among a hash's members (``found``: their values), and the step
        that removes the dead ones (each only if its facts are unchanged since read)."""
        rows, dead = [], []
        for at in range(0, len(members), 2):
            field, facts = members[at], members[at + 1]
            state = member_state(found[at // 2], facts, now_ms, user)
            if state is DEAD:
                dead += [field, facts]
            elif state is not PENDING:
                rows += [field, facts, state]
        prune: list[Command] = []
        if dead:
            prune.append(Eval("prune", (self.users_key(user),), tuple(dead)))
        return _read(user, [len(dead) // 2, *rows]), prune

    def user_sessions(self, user: str) -> list[SessionFacts]:
        """The user's live sessions, most recently used first; dead members are removed.

        Reads the hash, then the sessions (pipelined, per node on a cluster), then removes the
        dead members (see :func:`member_state`): a member whose session is a tombstone or
        expired, or missing or not logged in as this user for longer than
        :data:`PENDING_SECONDS` after the member was written (until then it may be a login
        between its steps: not listed, not removed)."""
        client = self.store.client
        try:
            members = one(client, Eval("members", (self.users_key(user),), ()))
            now_ms = self._now_ms()
            keys = [self.prefix + members[at] for at in range(0, len(members), 2)]
            rows, prune = self._listing(user, members, records(client, keys), now_ms)
            if prune:
                send_steps(client, [prune])
        except redis.RedisError as exc:
            unavailable(exc)
        return rows

    async def auser_sessions(self, user: str) -> list[SessionFacts]:
        client = self.store._async_client().client
        try:
            members = await aone(client, Eval("members", (self.users_key(user),), ()))
            now_ms = self._now_ms()
            keys = [self.prefix + members[at] for at in range(0, len(members), 2)]
            rows, prune = self._listing(user, members, await arecords(client, keys), now_ms)
            if prune:
                await asend_steps(client, [prune])
        except redis.RedisError as exc:
            unavailable(exc)
        return rows

    def member_keys(self, user: str) -> list[str]:
        """Every session indexed under the user, live, dead or a login between its steps (what
        "log out everywhere" ends: tombstoning a session not written yet makes its write fail)."""
        client = self.store.client
        try:
            members = one(client, Eval("members", (self.users_key(user),), ()))
            fields = [members[at] for at in range(0, len(members), 2)]
            found = records(client, [self.prefix + field for field in fields])
        except redis.RedisError as exc:
            unavailable(exc)
        return [
            field.decode()
            for field, record in zip(fields, found, strict=True)
            if not _anothers(record, user)
        ]

    def _end_steps(self, user: str, fields: list[bytes], held: list[Any]) -> list[list[Command]]:
        """Ending the members still held: tombstones first (pipelined per node), then the
        members removed."""
        ending = [field for field, facts in zip(fields, held, strict=True) if facts is not None]
        if not ending:
            return []
        ends = (self.tombstone_ms, self._now_ms())
        return [
            [Eval("ending", (self.prefix + field,), ends) for field in ending],
            [Eval("drop", (self.users_key(user),), tuple(ending))],
        ]

    def end_sessions(self, user: str, session_keys: Iterable[str]) -> int:
        """End these sessions of the user (tombstones); a key the user's index does not hold
        (another user's session) ends nothing. How many live sessions ended."""
        fields = self._end_fields(session_keys)
        if not fields:
            return 0
        store = self.store
        try:
            held = one(store.client, Eval("members", (self.users_key(user),), tuple(fields)))
            steps = self._end_steps(user, fields, held)
            if not steps:
                return 0
            waiting = store._waiting(ENDING)  # endings wait for replicas (see replicas.py)
            replies = send_steps(store.client, steps, waiting)
            if waiting is not None:
                store.replicas.check(waiting, ENDING)
            return sum(int(reply) for reply in replies[0])
        except redis.RedisError as exc:
            unavailable(exc)
        finally:
            for field in fields:  # with a near cache: this process keeps no copy of them
                self.store._forget(field.decode(), answered=False)

    async def aend_sessions(self, user: str, session_keys: Iterable[str]) -> int:
        fields = self._end_fields(session_keys)
        if not fields:
            return 0
        client = self.store._async_client().client
        try:
            held = await aone(client, Eval("members", (self.users_key(user),), tuple(fields)))
            steps = self._end_steps(user, fields, held)
            if not steps:
                return 0
            waiting = await self.store._awaiting(ENDING)
            replies = await asend_steps(client, steps, waiting)
            if waiting is not None:
                self.store.replicas.check(waiting, ENDING)
            return sum(int(reply) for reply in replies[0])
        except redis.RedisError as exc:
            unavailable(exc)
        finally:
            for field in fields:
                self.store._forget(field.decode(), answered=False)

    def _end_fields(self, session_keys: Iterable[str]) -> list[bytes]:
        """The sessions ``end_sessions`` ends, forgotten by the last-used figures."""
        fields = [key.encode() for key in session_keys]
        for field in fields:
            self.last_used.forget(field.decode())
        return fields

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
        """Remove dead members from every user's hash: ``SCAN`` (every primary, on a cluster) in
        batches of ``batch`` keys, each batch in three pipelined round trips (the hashes, their
        sessions, the dead members removed), so Redis is never held long. Returns what
        it found."""
        totals = [0, 0, 0]
        client = self.store.client
        try:
            found: list[bytes] = []
            for key in client.scan_iter(match=self.users_pattern(), count=batch):
                found.append(key)
                if len(found) >= batch:
                    self._prune_batch(found, dry_run, totals)
                    found = []
            if found:
                self._prune_batch(found, dry_run, totals)
        except redis.RedisError as exc:
            unavailable(exc)
        users, removed, sessions = totals
        return IndexPrune(users=users, removed=removed, sessions=sessions, dry_run=dry_run)

    def _prune_batch(self, hashes: list[bytes], dry_run: bool, totals: list[int]) -> None:
        client = self.store.client
        all_members = pipelined(client, [Eval("members", (key,), ()) for key in hashes])
        keys = [
            self.prefix + members[at] for members in all_members for at in range(0, len(members), 2)
        ]
        found = iter(records(client, keys))
        now_ms = self._now_ms()
        prunes: list[Command] = []
        skip = len(self.prefix + USERS)
        for key, members in zip(hashes, all_members, strict=True):
            dead = []
            totals[0] += 1
            user = key[skip:].decode(errors="replace")
            for at in range(0, len(members), 2):
                state = member_state(next(found), members[at + 1], now_ms, user)
                if state is DEAD:
                    dead += [members[at], members[at + 1]]
                elif state is not PENDING:
                    totals[2] += 1
            totals[1] += len(dead) // 2
            if dead:
                prunes.append(Eval("prune", (key,), tuple(dead)))
        if prunes and not dry_run:
            pipelined(client, prunes)

    # -- imports ---------------------------------------------------------------------------------

    def import_sessions(self, sessions: Iterable[ImportedSession]) -> int:
        """Write many sessions, and index the logged-in ones: the members first (one pipelined
        round trip, per node on a cluster), then the sessions (another).

        Each :class:`ImportedSession` is written as ``create`` writes it (``SET NX`` with its
        TTL: a session already in Redis, newer or a tombstone, is never overwritten); one with a
        ``user`` is also indexed under that user with its facts (``created`` and ``last_used``
        default to now; a member already there keeps its own), and the user's hash TTL raised
        to the session's, before the session is written. A member added for a session that was
        not written (its key is taken) is removed again. The per-user limit is not applied: an
        import copies what was allowed where it came from. Returns how many sessions were
        written.
        """
        now = self.store.clock()
        client = self.store.client
        indexing: list[Command] = []
        writes: list[Command] = []
        owners: list[int | None] = []  # each write's index step, if logged in
        for item in sessions:
            record = pack(item.payload, item.expires_at, item.settled)
            key = self.prefix + item.session_key.encode()
            writes.append(("SET", key, record, "PX", item.ttl_ms, "NX"))
            if item.user is None:
                owners.append(None)
                continue
            created = now if item.created is None else item.created
            last_used = now if item.last_used is None else item.last_used
            facts = facts_text(created, last_used, item.client)
            owners.append(len(indexing))
            indexing.append(
                Eval(
                    "index",
                    (self.users_key(item.user),),
                    (
                        item.session_key.encode(),
                        facts[SECONDS_DIGITS : 2 * SECONDS_DIGITS],
                        b"1",
                        facts[2 * SECONDS_DIGITS :],
                        facts[:SECONDS_DIGITS],
                        item.ttl_ms + INDEX_TTL_MARGIN_MS,
                        b"0",
                        b"1",
                    ),
                )
            )
        try:
            added = pipelined(client, indexing) if indexing else []
            _raise_any(added)
            written = pipelined(client, writes) if writes else []
            _raise_any(written)
            undo = [
                Eval("drop", indexing[at].keys, indexing[at].args[:1])  # type: ignore[union-attr]
                for at, done in zip(owners, written, strict=True)
                if at is not None and not done and added[at][0] == 1
            ]
            if undo:
                pipelined(client, undo)
        except redis.RedisError as exc:
            unavailable(exc)
        return sum(1 for done in written if done)


# -- what a member's session holds, read from its header (lua/header_of.lua's twin) --------------

DEAD = "dead"  # a tombstone, expired, or missing for longer than PENDING_SECONDS
PENDING = "pending"  # missing, written less than PENDING_SECONDS ago: maybe a login in flight
# A member whose session is missing is taken for a login between its two steps (indexed, record
# not written yet) for this long after its "last used" (which every index step sets to now).
PENDING_SECONDS = LAST_USED_INTERVAL


def member_state(record: Any, facts: bytes, now_ms: int, user: str) -> int | str:
    """A member of ``user``'s hash, from its session's value (``GET``): the session's expiry
    (ms) if it is live and logged in as ``user``; :data:`DEAD` for a tombstone, an expired
    record, a value not ours; otherwise (nothing there, a session not logged in as ``user``)
    :data:`PENDING` while the member is recent (a login between its steps: its member written,
    its record not yet), then :data:`DEAD`."""
    if record == TOMBSTONE or isinstance(record, Exception):  # an error: another type
        return DEAD
    if record:
        if not (
            record[:1] in RECORD_KINDS
            and len(record) >= HEADER_SIZE
            and record[1:HEADER_SIZE].isdigit()
        ):
            return DEAD  # a value not ours: a login's write would have replaced it
        expires = int(record[1:HEADER_SIZE])
        if expires <= now_ms:
            return DEAD
        if _user_of(record[HEADER_SIZE:]) == user:
            return expires
    try:
        last_used = int(facts[SECONDS_DIGITS : 2 * SECONDS_DIGITS])
    except ValueError:
        return DEAD
    return PENDING if now_ms // 1000 - last_used < PENDING_SECONDS else DEAD


def _anothers(record: Any, user: str) -> bool:
    """Whether a session's value is a record logged in as another user (a member left in the
    old user's hash by a change of user whose last step did not run)."""
    if not isinstance(record, bytes) or record[:1] not in RECORD_KINDS:
        return False
    other = _user_of(record[HEADER_SIZE:])
    return other is not None and other != user


def _user_of(payload: bytes) -> str | None:
    try:
        data = current_codec().loads(payload)
    except Exception:
        return None
    found = data.get(AUTH_SESSION_KEY) if isinstance(data, dict) else None
    return None if found is None else str(found)


def records(client: Any, keys: list[bytes]) -> list[Any]:
    """Each key's value (``GET``), pipelined (per node on a cluster); an error reply (a key of
    another type) in its place."""
    if not keys:
        return []
    return pipelined(client, [("GET", key) for key in keys])


async def arecords(client: Any, keys: list[bytes]) -> list[Any]:
    if not keys:
        return []
    return await apipelined(client, [("GET", key) for key in keys])


def _raise_any(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


@dataclass(frozen=True)
class _Save:
    """A save's steps, which of them writes the record (and waits), and what it wrote."""

    steps: list[list[Command]]
    wait_at: int
    now_ms: int
    hash_ttl: int
    field: bytes
    user: str | None
    replacing: str | None
    record: bytes
    expires_at: float
    ttl_ms: int
