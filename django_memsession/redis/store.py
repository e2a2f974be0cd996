"""The Redis store: sessions as Redis strings with TTLs, conditional writes in Lua, tombstones.

Knows nothing of Django requests (the engine in ``engine.py`` does). One key per session,
``<prefix><session key>``, holding one of:

* a session record: a kind byte + its expiry (15 digits, ms since the epoch on the web server's
  clock) + the serialized session. ``b"S"`` (settled): its TTL is the rest of the session's age.
  ``b"P"`` (on probation): a new anonymous session, stored with the shorter probation TTL until
  it comes back or logs in. The kind is in the value, not guessed from the TTL, so a load of a
  settled session (nearly every load) is one plain ``GET``; only the first load of a session on
  probation takes a second round trip, to promote it;
* a tombstone, ``b"T"``, written by a delete (logout, ``flush()``, ``cycle_key()``), so that a
  concurrent save can never bring the session back. It outlives a probation TTL, so under
  ``volatile-ttl`` a flood of new sessions is evicted before any tombstone.

Anything else under a session key (a key of another Redis type, a string in no format of ours:
typed in with ``redis-cli``, or corrupted) is no session: a load logs it, never with the key, and
deletes it; the scripts take it for a missing key (see ``users.HEADER_OF``).

Every write sets a TTL, and nothing but these keys is written: no index grows with traffic.
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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import Any, NoReturn, TypeVar

import redis
import redis.asyncio
from django.core.signals import setting_changed

from ..clock import wall_clock
from ..signals import sessions_expired
from .client import ClusterNode, async_client, sync_client
from .conf import StoreSettings, store_settings
from .exceptions import SessionBackendUnavailable
from .near import NearCache, Ticket, WriterLost
from .users import HEADER_OF, UserIndexMixin

__all__ = ["Loaded", "RedisStore", "UpdateResult", "get_store", "peek_store", "reset", "stats"]

T = TypeVar("T")

logger = logging.getLogger("django_memsession.redis")

SESSION = b"S"  # a settled session: its TTL is the rest of its age
PROBATION = b"P"  # a new anonymous session, on its probation TTL until it comes back
TOMBSTONE = b"T"
RECORD_KINDS = (SESSION, PROBATION)
PROBATION_BYTE = PROBATION[0]
SESSION_BYTE = SESSION[0]
# The update script's answers whose record is now the key's value: stored, stored again.
KEPT = (1, 2)
EXPIRY_DIGITS = 15  # ms since the epoch: enough until the year 33658
HEADER_SIZE = 1 + EXPIRY_DIGITS

# A tombstone lives this many times the probation age: longer than any probation TTL, so a
# flood of new sessions is evicted first; and far longer than any request that could still
# save the deleted session.
TOMBSTONE_AGE_FACTOR = 2

# Redis error codes that mean "cannot answer now", not "wrong request", and what each means.
UNAVAILABLE_CODES = {
    "OOM": "Redis is out of memory and refuses writes (maxmemory is reached and its "
    "maxmemory-policy evicts nothing; volatile-ttl would evict the shortest-lived sessions)",
    "READONLY": "Redis is a read-only replica (a failover in progress, or the URL names a replica)",
    "LOADING": "Redis is loading its data set",
    "MASTERDOWN": "Redis is a replica that lost its master",
    "MISCONF": "Redis refuses writes because it cannot save to disk",
    "BUSY": "Redis is busy running a script",
    "NOREPLICAS": "Redis has too few replicas to accept writes",
    "TRYAGAIN": "Redis asks to try again",
    # A node of a Redis Cluster whose INFO the connection could not read (client.py refuses
    # one it can): a 503 that says why, not a 500.
    **dict.fromkeys(
        ("MOVED", "ASK", "CROSSSLOT", "CLUSTERDOWN"),
        "MEMSESSION_REDIS_URL names a node of a Redis Cluster and cluster mode is not "
        "supported yet: point it at a standalone Redis server",
    ),
}

# KEYS[1] the session; ARGV[1] the rest of its age (ms, by the web server's clock).
# Returns 1 if the session was on probation and is now settled with its full TTL, else 0. Only a
# record still on probation changes (SETRANGE keeps the value's TTL, PEXPIRE sets the new one):
# a tombstone written since the load stays a tombstone, a session settled since stays as it is.
PROMOTE_SCRIPT = (
    HEADER_OF
    + """
if header_of(KEYS[1]) ~= 'P' then
  return 0
end
redis.call('SETRANGE', KEYS[1], 0, 'S')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
)

# KEYS[1] the session; ARGV[1] the new record; ARGV[2] its TTL (ms); ARGV[3] the rest of its
# full age (ms); ARGV[4] now (ms, web server's clock); ARGV[5] "1" if a missing key was evicted
# (the engine saw the session live) rather than expired.
# Returns 1 stored, 2 stored again after eviction, 0 deleted (a tombstone), -1 gone (expired;
# a record expired by the web server's clock is deleted then, so that nothing after the script,
# the near cache's PEXPIRE ... GT, can lengthen its TTL).
# A record on probation ("P") written over a settled one ("S": another request saw the session
# come back) is stored settled, with its full age: a save never puts a session back on probation.
# A value that is not ours (see users.HEADER_OF) counts as a missing key: written over when the
# session may be stored again, else deleted.
UPDATE_SCRIPT = (
    HEADER_OF
    + """
local kind, expires_at = header_of(KEYS[1])
if kind == 'T' then
  return 0
end
local record = ARGV[1]
local ttl = tonumber(ARGV[2])
if kind == '' then
  if ARGV[5] ~= '1' then
    redis.call('DEL', KEYS[1])  -- nothing, or a value not ours: gone either way
    return -1
  end
  redis.call('SET', KEYS[1], record, 'PX', ttl)
  return 2
end
if expires_at <= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
  return -1
end
if kind == 'S' and string.byte(record, 1) == 80 then
  record = 'S' .. string.sub(record, 2)
  ttl = tonumber(ARGV[3])
end
redis.call('SET', KEYS[1], record, 'PX', ttl)
return 1
"""
)

# KEYS[1] a session; ARGV[1] what a load found there, from byte ARGV[2] on (1: the whole value;
# 17: a record's data, whose header a promotion may have changed since). Deletes the key if it
# still holds that, or holds a value of another type (never ours); otherwise it has been written
# since (a tombstone, whose byte 17 on is empty as a record's empty data is, always counts as
# written since), and is left alone. Returns 1 if it deleted the key.
DISCARD_SCRIPT = """
local held = redis.pcall('GET', KEYS[1])
if type(held) == 'table'
    or (held and held ~= 'T' and string.sub(held, tonumber(ARGV[2])) == ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class UpdateResult(Enum):
    STORED = 1
    RESTORED = 2  # the key was evicted between load and save: stored again
    DELETED = 0  # a tombstone: deleted (logout) since it was loaded
    GONE = -1  # missing and expired by the engine's clock


# The update script's answers (a dict lookup costs a tenth of Enum's own call).
RESULTS = {result.value: result for result in UpdateResult}


class Loaded:
    """A live session as loaded: its serialized data and its expiry."""

    __slots__ = ("expires_at", "payload")

    def __init__(self, payload: bytes, expires_at: float) -> None:
        self.payload = payload
        self.expires_at = expires_at  # seconds since the epoch, on the store's clock


def pack(payload: bytes, expires_at: float, settled: bool = True) -> bytes:
    """A session record: its kind (settled, or on probation), its expiry, its data."""
    return b"%c%0*d" % (83 if settled else 80, EXPIRY_DIGITS, int(expires_at * 1000)) + payload


def unpack(record: bytes | None, now: float) -> Loaded | None:
    """A live session from a stored value; None for nothing, a tombstone, an expired session or
    a value that is not ours (see :func:`foreign`)."""
    if not record or record[:1] not in RECORD_KINDS or len(record) < HEADER_SIZE:
        return None
    expiry = record[1:HEADER_SIZE]
    if not expiry.isdigit():  # ASCII digits only: int() would also take " 1", "+1" or "1_0"
        return None
    expires_at = int(expiry) / 1000
    if expires_at <= now:
        return None
    return Loaded(record[HEADER_SIZE:], expires_at)


def foreign(value: bytes) -> bool:
    """Whether a string under a session key is none of ours: neither a tombstone nor a record
    (its kind, then its expiry in 15 ASCII digits). Every release wrote only these: the first
    one ``S`` records and tombstones, ``P`` records since. Scripts read it as
    ``users.HEADER_OF`` does."""
    return value != TOMBSTONE and not (
        value[:1] in RECORD_KINDS and len(value) >= HEADER_SIZE and value[1:HEADER_SIZE].isdigit()
    )


def _wrong_type(exc: redis.RedisError) -> bool:
    """Whether Redis refused a command because the key holds another type (``WRONGTYPE``)."""
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("WRONGTYPE")


def _log_foreign(of_another_type: bool) -> None:
    # Never the key: it is the visitor's credential.
    logger.warning(
        "A session key held %s, not a session record; it was treated as no session and "
        "deleted (the visitor gets a new session).",
        "a value of another Redis type" if of_another_type else "a value in no format of ours",
    )


# For redis-py versions whose exceptions do not carry the code (before 7).
_CODES_BY_CLASS = {
    redis.exceptions.ReadOnlyError: "READONLY",
    redis.exceptions.OutOfMemoryError: "OOM",
}


def _availability_reason(exc: redis.RedisError) -> str | None:
    """Why Redis could not answer, in words that never hold a key or data; None for a bug."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        # redis-py's own messages: host, port, errno; never a command's arguments.
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ClusterNode):
        return str(exc)
    if isinstance(exc, redis.ResponseError):
        # redis-py keeps the error code apart; Redis 7 keeps it for errors inside a script too.
        code = (
            getattr(exc, "status_code", None)
            or _CODES_BY_CLASS.get(type(exc))
            or str(exc).split(" ", 1)[0]
        )
        if code in UNAVAILABLE_CODES:
            return f"{UNAVAILABLE_CODES[code]} ({code})"
    return None


def _unavailable(exc: redis.RedisError) -> NoReturn:
    """Raise what a redis-py error means: ours for an outage, the error itself for a bug.

    Called from ``except`` clauses rather than wrapping each call in a context manager: the
    success path then costs nothing (a generator-based context manager costs about 1 µs a call).
    """
    reason = _availability_reason(exc)
    if reason is None:
        raise exc
    raise SessionBackendUnavailable(reason) from exc


def _expired_on_load(record: bytes) -> None:
    """A load found a session that has expired by the web server's clock (Redis has not removed
    it yet): the engine treats it as gone, and says so as the memory engine does."""
    if record[:1] in RECORD_KINDS:
        sessions_expired.send(sender=RedisStore, count=1, bytes=len(record), reason="load")


def _rest_ms(loaded: Loaded, now: float) -> int:
    return max(1, math.ceil((loaded.expires_at - now) * 1000))


@dataclass
class _AsyncClient:
    """One event loop's client (with its own pool) and its scripts."""

    client: redis.asyncio.Redis
    promote: Any
    update: Any
    discard: Any


class RedisStore(UserIndexMixin):
    """Sessions in one Redis database, under one key prefix. Thread-safe; one per process.

    Who is logged in (the user index beside the sessions) is :class:`~.users.UserIndexMixin`.
    """

    # For the user index: how a redis-py error is raised, and how a record is packed.
    _fail = staticmethod(_unavailable)
    _record = staticmethod(pack)

    def __init__(self, config: StoreSettings, clock: Callable[[], float] = wall_clock) -> None:
        self.config = config
        # The web server's clock, for session expiries. wall_clock looks time.time up on each
        # call, so freezegun or time-machine in a test moves it as it moves Django's own engines.
        self.clock = clock
        self.prefix = config.prefix.encode()
        self.probation_ms = max(1, int(config.probation_age * 1000))
        self.tombstone_ms = self.probation_ms * TOMBSTONE_AGE_FACTOR
        # Timed: each round trip's latency goes to this process's figures (latency.py).
        self.client = sync_client(config)
        self._promote = self.client.register_script(PROMOTE_SCRIPT)
        self._update = self.client.register_script(UPDATE_SCRIPT)
        self._discard_script = self.client.register_script(DISCARD_SCRIPT)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._async_lock = threading.Lock()
        self.max_sessions_per_user = config.max_sessions_per_user
        self._init_user_index()
        self.near = (
            NearCache(config, clock=lambda: self.clock())  # follows a clock a test swaps in
            if config.near_cache_bytes is not None
            else None
        )
        self.l2_hits = 0  # loads answered by Redis with a live session
        self.misses = 0  # loads that found no live session
        self._counts_lock = threading.Lock()

    def _count(self, found: bool) -> None:
        with self._counts_lock:
            if found:
                self.l2_hits += 1
            else:
                self.misses += 1

    def key(self, session_key: str) -> bytes:
        return self.prefix + session_key.encode()

    def _update_args(
        self, payload: bytes, expires_at: float, ttl_ms: int, full_ttl_ms: int, may_restore: bool
    ) -> list[bytes | int]:
        record = pack(payload, expires_at, settled=ttl_ms >= full_ttl_ms)
        return [record, ttl_ms, full_ttl_ms, int(self.clock() * 1000), int(may_restore)]

    # -- sync ----------------------------------------------------------------------------------

    def load(self, session_key: str) -> Loaded | None:
        """The live session under this key, or None. Creates nothing.

        One plain ``GET``, or none when the near cache holds a valid copy. A session on
        probation has come back: :meth:`_promote_once` settles it (the one load that costs a
        second round trip).
        """
        near = self.near
        ticket = None
        if near is not None:
            record = near.get(session_key)
            if record is not None:
                loaded = unpack(record, self.clock())
                if loaded is not None:
                    return loaded
            ticket = near.begin(session_key)
        key = self.prefix + session_key.encode()
        try:
            record = self.client.get(key)
        except redis.RedisError as exc:
            if ticket is not None:
                near.fill(ticket, None, 0.0, wrote=False)  # type: ignore[union-attr]
            if not _wrong_type(exc):
                _unavailable(exc)
            self._count(False)
            self._discard_foreign(session_key, None)
            return None
        now = self.clock()
        loaded = unpack(record, now)
        if loaded is None and record is not None:
            if foreign(record):
                self._discard_foreign(session_key, record)
            else:
                _expired_on_load(record)
        if near is not None:
            if ticket is not None:
                self._fill_from_load(near, ticket, record, loaded)
            if near.due():
                near.connect()  # Redis has just answered: register tracking again
        self._count(loaded is not None)
        if loaded is not None and record[0] == PROBATION_BYTE:
            self._promote_once(key, loaded, now)
        return loaded

    @staticmethod
    def _fill_from_load(
        near: NearCache, ticket: Ticket, record: bytes | None, loaded: Loaded | None
    ) -> None:
        """Put what a ``GET`` found into L1: a settled session only (one on probation must
        reach Redis on its next load too, to be promoted)."""
        if loaded is not None and record[0] != PROBATION_BYTE:  # type: ignore[index]
            near.fill(ticket, record, loaded.expires_at, wrote=False)
        else:
            near.fill(ticket, None, 0.0, wrote=False)

    def _promote_once(self, key: bytes, loaded: Loaded, now: float) -> None:
        """Give a session that came back from probation the rest of its age.

        Best effort: the session is loaded whatever happens here. If Redis cannot take the write
        now (a read-only replica during a failover, a timeout), the record stays on probation
        and the next load tries again; a save writes it settled anyway.
        """
        try:
            self._evalsha(self._promote, key, _rest_ms(loaded, now))
        except redis.RedisError as exc:
            if _availability_reason(exc) is None:
                raise

    def create(
        self, session_key: str, payload: bytes, expires_at: float, ttl_ms: int, settled: bool
    ) -> bool:
        """Store a new session unless the key is taken (by a session or a tombstone)."""
        record = pack(payload, expires_at, settled)
        command = ("SET", self.prefix + session_key.encode(), record, "PX", ttl_ms, "NX")
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
        """
        near = self.near
        ticket = (
            near.begin(session_key, write=True, on_writer=keep is not None)
            if near is not None
            else None
        )
        if ticket is None:
            try:
                reply = send(self.client.execute_command)
            except redis.RedisError as exc:
                if near is not None:
                    near.forget(session_key)
                _unavailable(exc)
            if near is not None:
                near.forget(session_key)
                if near.due():
                    near.connect()
            return reply
        assert near is not None
        try:
            if ticket.writer is None:
                reply = send(self.client.execute_command)
            else:
                try:
                    reply = send(partial(near.execute, ticket, claim=claim))
                except WriterLost:
                    reply = send(self.client.execute_command)
        except redis.RedisError as exc:
            near.fill(ticket, None, 0.0, wrote=True)
            _unavailable(exc)
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
        lost it (a restart, ``SCRIPT FLUSH``). What redis-py's ``Script.__call__`` does, without
        its per-call import and argument copies on the path every save takes. ``run`` sends a
        command (the pool's by default)."""
        if run is None:
            run = self.client.execute_command
        try:
            return run("EVALSHA", script.sha, 1, key, *args)
        except redis.exceptions.NoScriptError:
            # Redis ran nothing: sending it again cannot apply a write twice.
            sha = run("SCRIPT", "LOAD", script.script)
            script.sha = sha.decode() if isinstance(sha, bytes) else sha
            return run("EVALSHA", script.sha, 1, key, *args)

    def exists(self, session_key: str) -> bool:
        try:
            header = self.client.getrange(self.key(session_key), 0, HEADER_SIZE - 1)
        except redis.RedisError as exc:
            if _wrong_type(exc):
                return False  # not ours: no session (the load that finds it deletes it)
            _unavailable(exc)
        return unpack(header, self.clock()) is not None

    def delete(self, session_key: str) -> None:
        """Replace the session with a tombstone: no concurrent save can bring it back."""
        command = ("SET", self.key(session_key), TOMBSTONE, "PX", self.tombstone_ms)
        self._write(session_key, lambda run: run(*command), None)

    def discard(self, session_key: str, loaded: Loaded) -> None:
        """Delete a record whose data is not a session (the engine could not read it), unless
        it has been written since it was loaded. Best effort, as :meth:`_discard_foreign`."""
        self._discard(session_key, loaded.payload, HEADER_SIZE + 1)

    def _discard_foreign(self, session_key: str, found: bytes | None) -> None:
        """A load found a value that is not ours (``found``; None: a key of another type): no
        session, logged once (the value goes with it), never with the key. Nothing else would
        replace it (the visitor gets a new key), so it is deleted, unless written since."""
        _log_foreign(of_another_type=found is None)
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
            _unavailable(exc)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError as exc:
            _unavailable(exc)

    def close(self) -> None:
        if self.near is not None:
            self.near.close()
        self.client.close()

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

    # -- async: the same calls on redis.asyncio, one client (and pool) per event loop ---------

    def _async_client(self) -> _AsyncClient:
        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is None:
            client = async_client(self.config)
            found = _AsyncClient(
                client,
                client.register_script(PROMOTE_SCRIPT),
                client.register_script(UPDATE_SCRIPT),
                client.register_script(DISCARD_SCRIPT),
            )
            with self._async_lock:
                self._async[loop] = found
        return found

    async def aload(self, session_key: str) -> Loaded | None:
        near = self.near
        ticket = None
        if near is not None:
            record = near.get(session_key)  # no I/O: the invalidation socket is only polled
            if record is not None:
                loaded = unpack(record, self.clock())
                if loaded is not None:
                    return loaded
            ticket = near.begin(session_key)
        connection = self._async_client()
        key = self.prefix + session_key.encode()
        try:
            record = await connection.client.get(key)
        except redis.RedisError as exc:
            if ticket is not None:
                near.fill(ticket, None, 0.0, wrote=False)  # type: ignore[union-attr]
            if not _wrong_type(exc):
                _unavailable(exc)
            self._count(False)
            await self._adiscard_foreign(session_key, None)
            return None
        now = self.clock()
        loaded = unpack(record, now)
        if loaded is None and record is not None:
            if foreign(record):
                await self._adiscard_foreign(session_key, record)
            else:
                _expired_on_load(record)
        if near is not None:
            if ticket is not None:
                self._fill_from_load(near, ticket, record, loaded)
            if near.due():
                _connect_off_loop(near)
        self._count(loaded is not None)
        if loaded is not None and record[0] == PROBATION_BYTE:
            try:
                await connection.promote(keys=[key], args=[_rest_ms(loaded, now)])
            except redis.RedisError as exc:  # best effort, as in _promote_once()
                if _availability_reason(exc) is None:
                    raise
        return loaded

    async def acreate(
        self, session_key: str, payload: bytes, expires_at: float, ttl_ms: int, settled: bool
    ) -> bool:
        client = self._async_client().client
        try:
            created = await client.set(
                self.key(session_key), pack(payload, expires_at, settled), px=ttl_ms, nx=True
            )
        except redis.RedisError as exc:
            self._forget(session_key, answered=False)
            _unavailable(exc)
        self._forget(session_key, answered=True)
        return bool(created)

    async def aupdate(
        self,
        session_key: str,
        payload: bytes,
        expires_at: float,
        ttl_ms: int,
        full_ttl_ms: int,
        may_restore: bool,
    ) -> UpdateResult:
        connection = self._async_client()
        args = self._update_args(payload, expires_at, ttl_ms, full_ttl_ms, may_restore)
        try:
            result = await connection.update(keys=[self.key(session_key)], args=args)
        except redis.RedisError as exc:
            self._forget(session_key, answered=False)
            _unavailable(exc)
        self._forget(session_key, answered=True)
        return RESULTS[result]

    async def aexists(self, session_key: str) -> bool:
        client = self._async_client().client
        try:
            header = await client.getrange(self.key(session_key), 0, HEADER_SIZE - 1)
        except redis.RedisError as exc:
            if _wrong_type(exc):
                return False  # as in exists()
            _unavailable(exc)
        return unpack(header, self.clock()) is not None

    async def adelete(self, session_key: str) -> None:
        client = self._async_client().client
        try:
            await client.set(self.key(session_key), TOMBSTONE, px=self.tombstone_ms)
        except redis.RedisError as exc:
            self._forget(session_key, answered=False)
            _unavailable(exc)
        self._forget(session_key, answered=True)

    async def adiscard(self, session_key: str, loaded: Loaded) -> None:
        await self._adiscard(session_key, loaded.payload, HEADER_SIZE + 1)

    async def _adiscard_foreign(self, session_key: str, found: bytes | None) -> None:
        _log_foreign(of_another_type=found is None)
        await self._adiscard(session_key, found or b"", 1)

    async def _adiscard(self, session_key: str, found: bytes, start: int) -> None:
        connection = self._async_client()
        try:
            await connection.discard(keys=[self.key(session_key)], args=[found, start])
        except redis.RedisError as exc:
            self._forget(session_key, answered=False)
            if _availability_reason(exc) is None:  # best effort, as in _discard()
                raise
            return
        self._forget(session_key, answered=True)

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
