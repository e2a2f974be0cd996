"""The Redis store: sessions as Redis strings with TTLs, conditional writes in Lua, tombstones.

Knows nothing of Django requests (the engine in ``engine.py`` does). One key per session,
``<prefix><session key>``, holding one of:

* a session record, ``b"S"`` + its expiry (15 digits, ms since the epoch on the web server's
  clock) + the serialized session; its TTL is the session's age, or the shorter probation age
  while a new anonymous session has not come back;
* a tombstone, ``b"T"``, written by a delete (logout, ``flush()``, ``cycle_key()``), so that a
  concurrent save can never bring the session back. It outlives a probation TTL, so under
  ``volatile-ttl`` a flood of new sessions is evicted before any tombstone.

Every write sets a TTL, and nothing but these keys is written: no index grows with traffic.
TTLs are sent relative (``PX``) so the web server's and Redis's clocks need not agree; the
expiry in the record lets a load refuse a session that has expired by the web server's clock.

Each call is one round trip. Errors that mean "Redis cannot answer now" (refused, timed out,
read-only replica, out of memory, loading) become :class:`SessionBackendUnavailable`; anything
else (a bug) is raised as redis-py raised it. A dropped connection is retried once on a fresh
connection; a timeout is never retried, so a write that may have been applied is not re-sent.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
from django.core.signals import setting_changed
from redis.backoff import NoBackoff
from redis.retry import Retry

from .conf import StoreSettings, store_settings
from .exceptions import SessionBackendUnavailable

__all__ = ["Loaded", "RedisStore", "UpdateResult", "get_store", "reset"]

SESSION = b"S"
TOMBSTONE = b"T"
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
}

# KEYS[1] the session; ARGV[1] now (ms, web server's clock); ARGV[2] slack (ms).
# Returns the key's value. A session record whose TTL is shorter than the rest of its age is on
# probation and has now come back: it gets the rest of its age. Never creates a key. pcall: on a
# read-only replica (a failover) the load still answers, and the promotion waits for the next.
LOAD_SCRIPT = """
local record = redis.call('GET', KEYS[1])
local expires_at = record and string.byte(record, 1) == 83 and tonumber(string.sub(record, 2, 16))
if expires_at then
  local rest = expires_at - tonumber(ARGV[1])
  if rest > 0 and redis.call('PTTL', KEYS[1]) < rest - tonumber(ARGV[2]) then
    redis.pcall('PEXPIRE', KEYS[1], rest)
  end
end
return record
"""

# KEYS[1] the session; ARGV[1] the new record; ARGV[2] its TTL (ms); ARGV[3] the rest of its
# full age (ms); ARGV[4] now (ms, web server's clock); ARGV[5] "1" if a missing key was evicted
# (the engine saw the session live) rather than expired.
# Returns 1 stored, 2 stored again after eviction, 0 deleted (a tombstone), -1 gone (expired).
UPDATE_SCRIPT = """
local header = redis.call('GETRANGE', KEYS[1], 0, 15)
local kind = string.sub(header, 1, 1)
if kind == 'T' then
  return 0
end
local ttl = tonumber(ARGV[2])
if kind == '' then
  if ARGV[5] ~= '1' then
    return -1
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  return 2
end
local expires_at = tonumber(string.sub(header, 2, 16))
if expires_at and expires_at <= tonumber(ARGV[4]) then
  return -1
end
local current = redis.call('PTTL', KEYS[1])
if current > ttl then
  ttl = math.min(current, tonumber(ARGV[3]))
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
return 1
"""

# How far a record's TTL may fall short of the rest of its age before a load counts it as on
# probation: the two are measured a round trip apart, on two clocks.
PROBATION_SLACK_MS = 1000


class UpdateResult(Enum):
    STORED = 1
    RESTORED = 2  # the key was evicted between load and save: stored again
    DELETED = 0  # a tombstone: deleted (logout) since it was loaded
    GONE = -1  # missing and expired by the engine's clock


@dataclass(frozen=True, slots=True)
class Loaded:
    payload: bytes
    expires_at: float  # seconds since the epoch, on the store's clock


def pack(payload: bytes, expires_at: float) -> bytes:
    return b"%c%0*d" % (SESSION[0], EXPIRY_DIGITS, int(expires_at * 1000)) + payload


def unpack(record: bytes | None, now: float) -> Loaded | None:
    """A live session from a stored value; None for nothing, a tombstone or an expired one."""
    if not record or record[:1] != SESSION or len(record) < HEADER_SIZE:
        return None
    expires_at = int(record[1:HEADER_SIZE]) / 1000
    if expires_at <= now:
        return None
    return Loaded(record[HEADER_SIZE:], expires_at)


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


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        reason = _availability_reason(exc)
        if reason is None:
            raise
        raise SessionBackendUnavailable(reason) from exc


@dataclass
class _AsyncClient:
    """One event loop's client (with its own pool) and its scripts."""

    client: redis.asyncio.Redis
    load: Any
    update: Any
    pid: int


class RedisStore:
    """Sessions in one Redis database, under one key prefix. Thread-safe; one per process."""

    def __init__(self, config: StoreSettings, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.prefix = config.prefix.encode()
        self.probation_ms = max(1, int(config.probation_age * 1000))
        self.tombstone_ms = self.probation_ms * TOMBSTONE_AGE_FACTOR
        self.client = redis.Redis.from_url(config.url, **self._options(Retry))
        self._load = self.client.register_script(LOAD_SCRIPT)
        self._update = self.client.register_script(UPDATE_SCRIPT)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._async_lock = threading.Lock()

    def _options(self, retry_class: type) -> dict[str, Any]:
        options = dict(self.config.options)
        # One retry, at once, after a dropped connection (an idle connection that Redis or a
        # proxy closed); none after a timeout: Redis may have applied the write, or may hang.
        options.setdefault(
            "retry", retry_class(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
        )
        return options

    def key(self, session_key: str) -> bytes:
        return self.prefix + session_key.encode()

    # -- sync ----------------------------------------------------------------------------------

    def load(self, session_key: str) -> Loaded | None:
        """The live session under this key, or None. Promotes one on probation; creates nothing."""
        now = self.clock()
        with _translated():
            record = self._load(
                keys=[self.key(session_key)], args=[int(now * 1000), PROBATION_SLACK_MS]
            )
        return unpack(record, now)

    def create(self, session_key: str, payload: bytes, expires_at: float, ttl_ms: int) -> bool:
        """Store a new session unless the key is taken (by a session or a tombstone)."""
        with _translated():
            created = self.client.set(
                self.key(session_key), pack(payload, expires_at), px=ttl_ms, nx=True
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
        """Store a new version of a session, unless it was deleted (or is gone and expired)."""
        with _translated():
            result = self._update(
                keys=[self.key(session_key)],
                args=self._update_args(payload, expires_at, ttl_ms, full_ttl_ms, may_restore),
            )
        return UpdateResult(result)

    def _update_args(
        self, payload: bytes, expires_at: float, ttl_ms: int, full_ttl_ms: int, may_restore: bool
    ) -> list[bytes | int]:
        now_ms = int(self.clock() * 1000)
        return [pack(payload, expires_at), ttl_ms, full_ttl_ms, now_ms, int(may_restore)]

    def exists(self, session_key: str) -> bool:
        now = self.clock()
        with _translated():
            header = self.client.getrange(self.key(session_key), 0, HEADER_SIZE - 1)
        return unpack(header, now) is not None

    def delete(self, session_key: str) -> None:
        """Replace the session with a tombstone: no concurrent save can bring it back."""
        with _translated():
            self.client.set(self.key(session_key), TOMBSTONE, px=self.tombstone_ms)

    def create_many(self, sessions: Iterable[tuple[str, bytes, float, int]]) -> int:
        """Create many sessions in one pipelined round trip (imports, tests, benchmarks): each
        ``(session_key, payload, expires_at, ttl_ms)`` exactly as :meth:`create` writes it.
        Returns how many were created."""
        with _translated():
            pipe = self.client.pipeline(transaction=False)
            for session_key, payload, expires_at, ttl_ms in sessions:
                pipe.set(self.key(session_key), pack(payload, expires_at), px=ttl_ms, nx=True)
            return sum(1 for created in pipe.execute() if created)

    def ping(self) -> bool:
        with _translated():
            return bool(self.client.ping())

    def close(self) -> None:
        self.client.close()

    # -- async: the same calls on redis.asyncio, one client (and pool) per event loop ---------

    def _async_client(self) -> _AsyncClient:
        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is None or found.pid != os.getpid():
            client = redis.asyncio.Redis.from_url(
                self.config.url, **self._options(redis.asyncio.retry.Retry)
            )
            found = _AsyncClient(
                client,
                client.register_script(LOAD_SCRIPT),
                client.register_script(UPDATE_SCRIPT),
                os.getpid(),
            )
            with self._async_lock:
                self._async[loop] = found
        return found

    async def aload(self, session_key: str) -> Loaded | None:
        now = self.clock()
        connection = self._async_client()
        with _translated():
            record = await connection.load(
                keys=[self.key(session_key)], args=[int(now * 1000), PROBATION_SLACK_MS]
            )
        return unpack(record, now)

    async def acreate(
        self, session_key: str, payload: bytes, expires_at: float, ttl_ms: int
    ) -> bool:
        client = self._async_client().client
        with _translated():
            created = await client.set(
                self.key(session_key), pack(payload, expires_at), px=ttl_ms, nx=True
            )
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
        with _translated():
            result = await connection.update(
                keys=[self.key(session_key)],
                args=self._update_args(payload, expires_at, ttl_ms, full_ttl_ms, may_restore),
            )
        return UpdateResult(result)

    async def aexists(self, session_key: str) -> bool:
        now = self.clock()
        client = self._async_client().client
        with _translated():
            header = await client.getrange(self.key(session_key), 0, HEADER_SIZE - 1)
        return unpack(header, now) is not None

    async def adelete(self, session_key: str) -> None:
        client = self._async_client().client
        with _translated():
            await client.set(self.key(session_key), TOMBSTONE, px=self.tombstone_ms)


# -- the process's store --------------------------------------------------------------------------

_store: RedisStore | None = None
_store_pid = 0
_store_lock = threading.Lock()


def get_store() -> RedisStore:
    """This process's store, built on first use; rebuilt in a forked child (its own pool)."""
    global _store, _store_pid
    store = _store
    if store is None or _store_pid != os.getpid():
        with _store_lock:
            if _store is None or _store_pid != os.getpid():
                # In a forked child the parent's pool is dropped, not closed: its sockets are
                # the parent's.
                _store = RedisStore(store_settings())
                _store_pid = os.getpid()
            store = _store
    return store


def reset() -> None:
    """Close and forget the process's store: the next use builds it from the settings."""
    global _store
    with _store_lock:
        store, _store = _store, None
    if store is not None and _store_pid == os.getpid():
        store.close()


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("MEMSESSION_REDIS_") or setting == "MEMSESSION_MAX_SESSION_SIZE":
        reset()


setting_changed.connect(_settings_changed)
