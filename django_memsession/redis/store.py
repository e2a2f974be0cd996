"""The Redis store: sessions as Redis strings with TTLs, conditional writes in Lua, tombstones.

Knows nothing of Django requests (the engine in ``engine.py`` does). One key per session,
``<prefix><session key>``, holding a session record or a tombstone (the format: ``record.py``).
A settled session's load (nearly every load) is one plain ``GET``; only the first load of a
session on probation takes a second round trip, to promote it. A tombstone outlives a probation
TTL, so under ``volatile-ttl`` a flood of new sessions is evicted before any tombstone.

Anything else under a session key (a key of another Redis type, a string in no format of ours:
typed in with ``redis-cli``, or corrupted) is no session: a load logs it, never with the key, and
deletes it; the scripts take it for a missing key (see ``lua/header_of.lua``).

Who is logged in (one hash per logged-in user beside the sessions) is the store's ``index``, a
:class:`~django_memsession.redis.index.RedisUserIndex`.

Every write sets a TTL, and nothing grows with anonymous traffic.
TTLs are sent relative (``PX``) so the web server's and Redis's clocks need not agree; the
expiry in the record lets a load refuse a session that has expired by the web server's clock.

With ``MEMSESSION_REDIS_NEAR_CACHE`` set, a :class:`~django_memsession.redis.near.NearCache`
(a memory store kept coherent by ``CLIENT TRACKING``) answers the loads it can with no round trip,
and this process's writes go through its writer connection (see ``near.py``).

Each call is one round trip (the first load of a session back from probation, two). Errors
that mean "Redis cannot answer now" (refused, timed out, read-only replica, out of memory,
loading) become :class:`SessionBackendUnavailable`; anything else (a bug) is raised as redis-py
raised it. A dropped connection is retried once on a fresh connection; a timeout is never
retried, so a write that may have been applied is not re-sent.

This module is the calls' runners, sync and async (``redis.asyncio``, one client per event loop),
and the process's store (:func:`get_store`); what each call decides before and after its round
trip is ``plans.py`` (:class:`~django_memsession.redis.plans.StorePlans`, a base of
:class:`RedisStore`), written once for both runners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import redis
import redis.asyncio
from django.core.signals import setting_changed

from ..clock import wall_clock
from ..logged_in import SessionFacts
from .client import AsyncScript, async_client, close_client, sync_client
from .conf import StoreSettings, store_settings
from .exceptions import SessionBackendUnavailable
from .index import ImportedSession, IndexPrune, RedisUserIndex
from .near import NearCache, WriterLost
from .outages import availability_reason, unavailable
from .plans import DISCARD, PROMOTE, RESULTS, StorePlans, UpdateResult, log_foreign, rest_ms
from .record import (
    HEADER_SIZE,
    SESSION_BYTE,
    Loaded,
    pack,
    unpack,
)
from .replicas import AsyncClusterWaitingRun, AsyncWaitingRun, Replicas, WaitingRun
from .scripts import source
from .steps import is_cluster
from .switchover import SwitchListener, ask_on_loop

__all__ = ["Loaded", "RedisStore", "UpdateResult", "get_store", "peek_store", "reset", "stats"]

T = TypeVar("T")

logger = logging.getLogger("django_memsession.redis")

# The update script's answers whose record is now the key's value: stored, stored again.
KEPT = (1, 2)
# A tombstone lives this many times the probation age: longer than any probation TTL, so a
# flood of new sessions is evicted first; and far longer than any request that could still
# save the deleted session.
TOMBSTONE_AGE_FACTOR = 2


@dataclass
class _AsyncClient:
    """One event loop's client (with its own pool) and its scripts."""

    client: redis.asyncio.Redis
    promote: Any
    update: Any
    discard: Any


class RedisStore(StorePlans):
    """Sessions in one Redis database, under one key prefix. Thread-safe; one per process.

    Who is logged in (the user index beside the sessions) is ``index``, a
    :class:`~.index.RedisUserIndex`.
    """

    def __init__(self, config: StoreSettings, clock: Callable[[], float] = wall_clock) -> None:
        self.config = config
        # The web server's clock, for session expiries. wall_clock looks time.time up on each
        # call, so freezegun or time-machine in a test moves it as it moves Django's own engines.
        self.clock = clock
        self.prefix = config.prefix.encode()
        self.probation_ms = max(1, int(config.probation_age * 1000))
        self.tombstone_ms = self.probation_ms * TOMBSTONE_AGE_FACTOR
        # Timed: each round trip's latency goes to this process's figures (latency.py).
        try:
            self.client = sync_client(config)
        except redis.exceptions.RedisClusterUnreachableError as exc:
            # redis-py's RedisCluster asks a node for the slot map as it is built: no node
            # answering is an outage (a 503), not a bug. Nothing is kept: the next use tries again.
            raise SessionBackendUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self._promote = self.client.register_script(source("promote"))
        self._update = self.client.register_script(source("update"))
        self._discard_script = self.client.register_script(source("discard"))
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._async_lock = threading.Lock()
        self.index = RedisUserIndex(self)
        # Waiting for replicas after a logout or a login (see replicas.py).
        self.replicas = Replicas(self.client, config.wait_replicas, config.wait_timeout)
        self.near = (
            NearCache(config, clock=lambda: self.clock())  # follows a clock a test swaps in
            if config.near_cache_bytes is not None
            else None
        )
        self.l2_hits = 0  # loads answered by Redis with a live session
        self.misses = 0  # loads that found no live session
        self._counts_lock = threading.Lock()
        # Under Sentinel: told of a failover when the sentinels announce it (switchover.py).
        self._primary: Any = None  # the primary the sentinels last named, as far as we heard
        self.switches = (
            SwitchListener(config, self._primary_moved) if config.sentinels is not None else None
        )
        if self.switches is not None:
            self.switches.start()

    def _primary_moved(self) -> None:
        """The sentinels may name a new primary: every pool asks them, and redis-py's Sentinel
        pool, told another address, drops its connections to the old one; the near cache drops
        its copies and its tracking pair (its next use connects to the new primary)."""
        try:
            primary = self.client.connection_pool.get_master_address()
        except redis.RedisError:
            return  # no sentinel answers: the next connection asks again
        if self.near is not None and primary != self._primary:
            if self._primary is not None:
                self.near.lose("the sentinels named a new primary")
            self._primary = primary
        with self._async_lock:
            clients = list(self._async.items())
        for loop, found in clients:
            ask_on_loop(loop, found.client.connection_pool)

    def _count(self, found: bool) -> None:
        with self._counts_lock:
            if found:
                self.l2_hits += 1
            else:
                self.misses += 1

    def key(self, session_key: str) -> bytes:
        return self.prefix + session_key.encode()

    # -- sync ----------------------------------------------------------------------------------

    def load(self, session_key: str) -> Loaded | None:
        """The live session under this key, or None. Creates nothing.

        One plain ``GET``, or none when the near cache holds a valid copy. A session on
        probation has come back: :meth:`_promote_once` settles it (the one load that costs a
        second round trip).
        """
        loaded, ticket = self._from_near(session_key)
        if loaded is not None:
            return loaded
        key = self.prefix + session_key.encode()
        try:
            record = self.client.get(key)
        except redis.RedisError as exc:
            self._get_failed(ticket, exc)
            self._discard_foreign(session_key, None)
            return None
        loaded, then, now = self._found(record, ticket)
        if then == DISCARD:
            self._discard_foreign(session_key, record)
        near = self.near
        if near is not None and near.due():
            near.connect()  # Redis has just answered: register tracking again
        if then == PROMOTE:
            self._promote_once(key, loaded, now)  # type: ignore[arg-type]
        return loaded

    def _promote_once(self, key: bytes, loaded: Loaded, now: float) -> None:
        """Give a session that came back from probation the rest of its age.

        Best effort: the session is loaded whatever happens here. If Redis cannot take the write
        now (a read-only replica during a failover, a timeout), the record stays on probation
        and the next load tries again; a save writes it settled anyway.
        """
        try:
            self._evalsha(self._promote, key, rest_ms(loaded, now))
        except redis.RedisError as exc:
            if availability_reason(exc) is None:
                raise

    def create(
        self, session_key: str, payload: bytes, expires_at: float, ttl_ms: int, settled: bool
    ) -> bool:
        """Store a new session unless the key is taken (by a session or a tombstone)."""
        command, record = self._create_command(session_key, payload, expires_at, ttl_ms, settled)
        created = self._write(
            session_key,
            lambda run: run(*command),
            (lambda reply: (record if reply else None, expires_at)) if settled else None,
        )
        return bool(created)

    def update(
        self,
        session_key: str,
        payload: bytes,
        expires_at: float,
        ttl_ms: int,
        full_ttl_ms: int,
        may_restore: bool,
    ) -> UpdateResult:
        """Store a new version of a session, unless it was deleted (or is gone and expired).

        The TTL is ``ttl_ms``: the full age ``full_ttl_ms``, or less for a session on probation
        (stored as such, unless it has been settled meanwhile).
        """
        args = self._update_args(payload, expires_at, ttl_ms, full_ttl_ms, may_restore)
        key = self.prefix + session_key.encode()
        # A settled record the script stored is kept in L1: the near cache's writer makes
        # itself the key's last writer, so the script's write does not come back to us (see
        # NearCache._run_claiming). One on probation is not kept (its return must reach Redis).
        result = self._write(
            session_key,
            lambda run: self._evalsha(self._update, key, *args, run=run),
            self._keep_saved(args[0], expires_at),  # type: ignore[arg-type]
            claim=(key, ttl_ms),
        )
        return RESULTS[result]

    @staticmethod
    def _keep_saved(
        record: bytes, expires_at: float
    ) -> Callable[[Any], tuple[bytes | None, float]] | None:
        """What a save keeps in the near cache (see :meth:`_write`): a settled record the save
        stored (its script answered 1 or 2, alone or first of its answers); one on probation,
        nothing (its return must reach Redis)."""
        if record[0] != SESSION_BYTE:
            return None

        def keep(reply: Any) -> tuple[bytes | None, float]:
            result = reply[0] if isinstance(reply, list) else reply
            return (record if result in KEPT else None), expires_at

        return keep

    def _write(
        self,
        session_key: str,
        send: Callable[[Callable[..., Any]], T],
        keep: Callable[[T], tuple[bytes | None, float]] | None,
        claim: tuple[bytes, int] | None = None,
        wait: str | None = None,
    ) -> T:
        """Send one write: ``send(run)`` calls ``run(*command)`` (each command of it).

        Without a near cache, on the pool. With one and tracking on, a write whose result may
        be kept (``keep``) goes on the near cache's writer connection; then ``keep(reply)``
        says what goes into L1 (a record and its session's expiry, or None: the key's copy is
        removed). A write with nothing to keep (``keep`` None: a delete, a session on
        probation) goes on the pool, in parallel with the process's other writes; its copy is
        removed. A dropped writer connection sends the write again on the pool (the retry a
        dropped pool connection gets too); tracking is down then, and L1 keeps nothing from
        it. ``claim`` goes with a script's ``EVALSHA`` on the writer connection (see
        ``NearCache.execute``).

        ``wait`` (``replicas.ENDING`` or ``LOGIN``): the write waits for replicas, ``WAIT``
        pipelined after it on a pool connection (never the writer connection, which other
        saves queue behind); L1 keeps nothing of it. See :meth:`Replicas.check`.
        """
        waiting = self._waiting(wait)
        if waiting is not None:
            keep = claim = None
            reply = self._write_on(session_key, send, None, None, waiting)
            self.replicas.check(waiting, wait)  # type: ignore[arg-type]
            return reply
        return self._write_on(session_key, send, keep, claim, self.client.execute_command)

    def _waiting(self, wait: str | None) -> WaitingRun | None:
        """The runner of a write that waits for replicas, or None (no wait asked, or none to
        wait for)."""
        if wait is None:
            return None
        needed = self.replicas.needed()
        return self.replicas.run(self.client, needed) if needed else None

    def _write_on(
        self,
        session_key: str,
        send: Callable[[Callable[..., Any]], T],
        keep: Callable[[T], tuple[bytes | None, float]] | None,
        claim: tuple[bytes, int] | None,
        pool_run: Callable[..., Any],
    ) -> T:
        near = self.near
        ticket = (
            near.begin(session_key, write=True, on_writer=keep is not None)
            if near is not None
            else None
        )
        if ticket is None:
            try:
                reply = send(pool_run)
            except redis.RedisError as exc:
                if near is not None:
                    near.forget(session_key)
                unavailable(exc)
            if near is not None:
                near.forget(session_key)
                if near.due():
                    near.connect()
            return reply
        assert near is not None
        try:
            if ticket.writer is None:
                reply = send(pool_run)
            else:
                try:
                    reply = send(partial(near.execute, ticket, claim=claim))
                except WriterLost:
                    reply = send(pool_run)
        except redis.RedisError as exc:
            near.fill(ticket, None, 0.0, wrote=True)
            unavailable(exc)
        except BaseException:
            near.fill(ticket, None, 0.0, wrote=True)
            raise
        record, expires_at = keep(reply) if keep is not None else (None, 0.0)
        near.fill(ticket, record, expires_at, wrote=True)
        return reply

    def _evalsha(
        self, script: Any, key: bytes, *args: bytes | int, run: Callable[..., Any] | None = None
    ) -> Any:
        """Run one of our scripts on one key: ``EVALSHA``, and ``SCRIPT LOAD`` first if Redis
        lost it (a restart, ``SCRIPT FLUSH``, a new primary). What redis-py's
        ``Script.__call__`` does, without its per-call import and argument copies on the path
        every save takes; and ``EVAL`` if the ``EVALSHA`` after the load still finds no script
        (a retry after a ``READONLY`` reached another server between the two). ``run`` sends a
        command (the pool's by default)."""
        if run is None:
            run = self.client.execute_command
        try:
            return run("EVALSHA", script.sha, 1, key, *args)
        except redis.exceptions.NoScriptError:
            # Redis ran nothing: sending it again cannot apply a write twice.
            sha = run("SCRIPT", "LOAD", script.script)
            script.sha = sha.decode() if isinstance(sha, bytes) else sha
            try:
                return run("EVALSHA", script.sha, 1, key, *args)
            except redis.exceptions.NoScriptError:
                return run("EVAL", script.script, 1, key, *args)

    def exists(self, session_key: str) -> bool:
        try:
            header = self.client.getrange(self.key(session_key), 0, HEADER_SIZE - 1)
        except redis.RedisError as exc:
            return self._exists_failed(exc)
        return unpack(header, self.clock()) is not None

    def delete(self, session_key: str, wait: str | None = None) -> None:
        """Replace the session with a tombstone: no concurrent save can bring it back.
        ``wait``: ``replicas.ENDING`` for a session that may be logged in."""
        command = self._tombstone_command(session_key)
        self._write(session_key, lambda run: run(*command), None, wait=wait)

    def discard(self, session_key: str, loaded: Loaded) -> None:
        """Delete a record whose data is not a session (the engine could not read it), unless
        it has been written since it was loaded. Best effort, as :meth:`_discard_foreign`."""
        self._discard(session_key, loaded.payload, HEADER_SIZE + 1)

    def _discard_foreign(self, session_key: str, found: bytes | None) -> None:
        """A load found a value that is not ours (``found``; None: a key of another type): no
        session, logged once (the value goes with it), never with the key. Nothing else would
        replace it (the visitor gets a new key), so it is deleted, unless written since."""
        log_foreign(of_another_type=found is None)
        self._discard(session_key, found or b"", 1)

    def _discard(self, session_key: str, found: bytes, start: int) -> None:
        # Best effort: the load has its answer (no session) whatever happens here; if Redis
        # cannot take the write now, the next load of the key finds the value again. Sent as
        # every write of ours, so the near cache keeps no copy of the key.
        key = self.key(session_key)
        with contextlib.suppress(SessionBackendUnavailable):
            self._write(
                session_key,
                lambda run: self._evalsha(self._discard_script, key, found, start, run=run),
                None,
            )

    def create_many(self, sessions: Iterable[tuple[str, bytes, float, int, bool]]) -> int:
        """Create many sessions in one pipelined round trip (imports, tests, benchmarks): each
        ``(session_key, payload, expires_at, ttl_ms, settled)`` exactly as :meth:`create` writes
        it. Returns how many were created."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for session_key, payload, expires_at, ttl_ms, settled in sessions:
                record = pack(payload, expires_at, settled)
                pipe.set(self.key(session_key), record, px=ttl_ms, nx=True)
            return sum(1 for created in pipe.execute() if created)
        except redis.RedisError as exc:
            unavailable(exc)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError as exc:
            unavailable(exc)

    def close(self) -> None:
        if self.switches is not None:
            self.switches.close()
        if self.near is not None:
            self.near.close()
        if is_cluster(self.client):  # client.close_client() reads a pool a cluster has not
            self.client.close()
        else:
            close_client(self.client)

    def stats(self) -> dict[str, Any]:
        """This process's loads: answered by L1 (the near cache), by Redis (L2), or finding no
        session; each with its share of all loads; and the near cache's own figures."""
        near = self.near.stats() if self.near is not None else None
        with self._counts_lock:
            l2_hits, misses = self.l2_hits, self.misses
        l1_hits = near["l1_hits"] if near is not None else 0
        loads = l1_hits + l2_hits + misses
        return {
            "pid": os.getpid(),
            "loads": loads,
            "l1_hits": l1_hits,
            "l2_hits": l2_hits,
            "misses": misses,
            "l1_hit_rate": l1_hits / loads if loads else 0.0,
            "l2_hit_rate": l2_hits / loads if loads else 0.0,
            "miss_rate": misses / loads if loads else 0.0,
            "invalidations": near["invalidations"] if near is not None else 0,
            "near_cache": near,
        }

    # -- the user index, for callers outside the Redis engine (everywhere, prunesessions) and
    # the documented ``RedisStore.import_sessions``: the index's own methods

    def user_sessions(self, user: str) -> list[SessionFacts]:
        return self.index.user_sessions(user)

    def end_sessions(self, user: str, session_keys: Iterable[str]) -> int:
        return self.index.end_sessions(user, session_keys)

    def prune_index(self, *, dry_run: bool = False) -> IndexPrune:
        return self.index.prune_index(dry_run=dry_run)

    def import_sessions(self, sessions: Iterable[ImportedSession]) -> int:
        return self.index.import_sessions(sessions)

    # -- async: the same calls on redis.asyncio, one client (and pool) per event loop ---------

    def _async_client(self) -> _AsyncClient:
        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is None:
            client = async_client(self.config)
            found = _AsyncClient(
                client,
                AsyncScript(client, source("promote")),
                AsyncScript(client, source("update")),
                AsyncScript(client, source("discard")),
            )
            with self._async_lock:
                self._async[loop] = found
        return found

    async def aload(self, session_key: str) -> Loaded | None:
        loaded, ticket = self._from_near(session_key)
        if loaded is not None:
            return loaded
        connection = self._async_client()
        key = self.prefix + session_key.encode()
        try:
            record = await connection.client.get(key)
        except redis.RedisError as exc:
            self._get_failed(ticket, exc)
            await self._adiscard_foreign(session_key, None)
            return None
        loaded, then, now = self._found(record, ticket)
        if then == DISCARD:
            await self._adiscard_foreign(session_key, record)
        near = self.near
        if near is not None and near.due():
            _connect_off_loop(near)
        if then == PROMOTE:
            try:
                await connection.promote(keys=[key], args=[rest_ms(loaded, now)])  # type: ignore[arg-type]
            except redis.RedisError as exc:  # best effort, as in _promote_once()
                if availability_reason(exc) is None:
                    raise
        return loaded

    async def acreate(
        self, session_key: str, payload: bytes, expires_at: float, ttl_ms: int, settled: bool
    ) -> bool:
        command, _ = self._create_command(session_key, payload, expires_at, ttl_ms, settled)
        return bool(await self._asend(session_key, lambda c: c.client.execute_command(*command)))

    async def aupdate(
        self,
        session_key: str,
        payload: bytes,
        expires_at: float,
        ttl_ms: int,
        full_ttl_ms: int,
        may_restore: bool,
    ) -> UpdateResult:
        args = self._update_args(payload, expires_at, ttl_ms, full_ttl_ms, may_restore)
        keys = [self.prefix + session_key.encode()]
        return RESULTS[await self._asend(session_key, lambda c: c.update(keys=keys, args=args))]

    async def aexists(self, session_key: str) -> bool:
        client = self._async_client().client
        try:
            header = await client.getrange(self.key(session_key), 0, HEADER_SIZE - 1)
        except redis.RedisError as exc:
            return self._exists_failed(exc)
        return unpack(header, self.clock()) is not None

    async def adelete(self, session_key: str, wait: str | None = None) -> None:
        command = self._tombstone_command(session_key)
        waiting = await self._awaiting(wait)
        if waiting is None:
            await self._asend(session_key, lambda c: c.client.execute_command(*command))
            return
        await self._asend(session_key, lambda c: waiting(*command))
        self.replicas.check(waiting, wait)  # type: ignore[arg-type]

    async def _awaiting(self, wait: str | None) -> AsyncWaitingRun | None:
        """:meth:`_waiting` in an event loop, on its pool."""
        if wait is None:
            return None
        needed = await self.replicas.aneeded()
        if not needed:
            return None
        client = self._async_client().client
        if is_cluster(client):  # WAIT on the key's node, for its replicas
            per_node = self.replicas.per_node if self.replicas.wanted == "connected" else {}
            return AsyncClusterWaitingRun(client, needed, self.replicas.timeout_ms, per_node)
        return AsyncWaitingRun(client, needed, self.replicas.timeout_ms)

    async def adiscard(self, session_key: str, loaded: Loaded) -> None:
        await self._adiscard(session_key, loaded.payload, HEADER_SIZE + 1)

    async def _adiscard_foreign(self, session_key: str, found: bytes | None) -> None:
        log_foreign(of_another_type=found is None)
        await self._adiscard(session_key, found or b"", 1)

    async def _adiscard(self, session_key: str, found: bytes, start: int) -> None:
        keys = [self.prefix + session_key.encode()]
        with contextlib.suppress(SessionBackendUnavailable):  # best effort, as in _discard()
            await self._asend(session_key, lambda c: c.discard(keys=keys, args=[found, start]))

    async def _asend(self, session_key: str, send: Callable[[_AsyncClient], Awaitable[T]]) -> T:
        """Send one write on the event loop's pool (not on the near cache's writer connection,
        whose I/O would block the loop), raising what a failure means."""
        try:
            reply = await send(self._async_client())
        except redis.RedisError as exc:
            self._forget(session_key, answered=False)
            unavailable(exc)
        self._forget(session_key, answered=True)
        return reply

    def _forget(self, session_key: str, *, answered: bool) -> None:
        """After an async write (sent on the event loop's pool, not on the writer connection,
        whose I/O would block the loop): L1 keeps nothing of it; the next load asks Redis.
        ``answered``: Redis answered, so tracking may be registered again if it is down."""
        near = self.near
        if near is not None:
            near.forget(session_key)
            if answered and near.due():
                _connect_off_loop(near)


def _connect_off_loop(near: NearCache) -> None:
    """Register tracking again in a worker thread: its round trips must not block the event
    loop. Nobody waits for it; until it is done, loads bypass L1."""
    asyncio.get_running_loop().run_in_executor(None, near.connect)


# -- the process's store --------------------------------------------------------------------------

_store: RedisStore | None = None
_store_lock = threading.Lock()


def get_store() -> RedisStore:
    """This process's store, built on first use; rebuilt in a forked child (its own pool).

    The hot path is one global read: a fork is noticed by :func:`_forget_after_fork`, not by
    comparing ``os.getpid()`` on every call.
    """
    store = _store
    if store is None:
        store = _build()
    return store


def peek_store() -> RedisStore | None:
    """This process's store if it is built, without building it."""
    return _store


def _build() -> RedisStore:
    global _store
    with _store_lock:
        if _store is None:
            _store = RedisStore(store_settings())
        return _store


def _forget_after_fork() -> None:
    """In a forked child: drop the parent's store without closing it (its sockets are the
    parent's, still in use there), and a lock another thread may have held at the fork."""
    global _store, _store_lock
    _store = None
    _store_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def reset() -> None:
    """Close and forget the process's store: the next use builds it from the settings."""
    global _store
    with _store_lock:
        store, _store = _store, None
    if store is not None:
        store.close()


def stats() -> dict[str, Any]:
    """This process's figures on the Redis engine (see :meth:`RedisStore.stats`)."""
    return get_store().stats()


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("MEMSESSION_REDIS_") or setting in (
        "MEMSESSION_MAX_SESSION_SIZE",
        "MEMSESSION_MAX_SESSIONS_PER_USER",
    ):
        reset()


setting_changed.connect(_settings_changed)
