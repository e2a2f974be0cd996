"""Every Redis write of a move from the memory engine: ``exportsessions``'s copies and the memory
processes' mirror of later writes and deletes. One method, :meth:`Importer.write`, sends them,
pipelined in one round trip per batch, in the order given (so a write and a later delete of the
same key reach Redis in that order).

Three kinds of write, each a session record or a tombstone in the Redis store's own format
(:func:`~django_memsession.redis.store.pack`, ``S`` records, TTLs sent relative with ``PX``):

- ``EXPORT``: a copy made by the export. Written only where Redis holds nothing under the key, or
  a session record that expires earlier (an older copy, e.g. of an earlier export). Never over a
  tombstone (a logout) nor over a copy that expires as late or later (a newer one).
- ``MIRROR``: a later write in a memory process. Written over anything but a tombstone: it is the
  newest version, unless the session was logged out meanwhile (on Redis, or by a mirrored delete).
- ``DELETE``: a later delete (logout, ``flush()``, ``cycle_key()``): a tombstone, as the Redis
  engine's own delete writes, so the switch cannot bring the session back.

A record whose session has expired by the web server's clock is not sent.

A logged-in session (its payload names a user, ``_auth_user_id``) written by ``EXPORT`` or
``MIRROR`` also enters that user's hash of the Redis user index (:mod:`.users`), in the same
script, so both happen or neither: after the switch, "who is logged in" and "log out everywhere"
find it before it is saved again. Its facts there start at the write (created and last used are
not carried over from the memory store); a member already in the hash keeps its own. A ``DELETE``
leaves the member: the index drops members whose session is a tombstone when it reads them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NoReturn
from urllib.parse import urlsplit

import redis
from django.core.exceptions import ImproperlyConfigured

from ..clock import wall_clock
from ..serializers import current_codec
from ..sessionbase import AUTH_SESSION_KEY
from ..sizing import parse_size
from .conf import (
    DEFAULT_MAX_SESSION_SIZE,
    DEFAULT_OPTIONS,
    URL_SCHEMES,
    Problem,
    StoreSettings,
    conf,
    problems,
    redacted,
)
from .exceptions import SessionBackendUnavailable
from .store import TOMBSTONE, RedisStore, _availability_reason, pack
from .users import HEADER_OF, INDEX_TTL_MARGIN_MS, facts_text

__all__ = ["Importer", "Kind", "Outcome", "Write", "importer_for"]

# KEYS[1] the session; ARGV[1] the record; ARGV[2] its TTL (ms); ARGV[3] its expiry (ms since
# the epoch, as in the record's header). 1 written; 0 a tombstone kept; -1 a newer copy kept.
# Both scripts write over a value that is not ours (users.HEADER_OF), as over nothing.
EXPORT_SCRIPT = """
local kind, expires_at = header_of(KEYS[1])
if kind == 'T' then
  return 0
end
if kind ~= '' and expires_at >= tonumber(ARGV[3]) then
  return -1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return index(4)
"""

# KEYS[1] the session; ARGV[1] the record; ARGV[2] its TTL (ms). 1 written; 0 a tombstone kept.
MIRROR_SCRIPT = """
if header_of(KEYS[1]) == 'T' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return index(3)
"""

# Both scripts end with this, for a logged-in session: KEYS[2] its user's hash; from ARGV[at],
# the member (the session key), its facts, and the least TTL (ms) the hash gets.
INDEX = """
local function index(at)
  if KEYS[2] then
    redis.call('HSETNX', KEYS[2], ARGV[at], ARGV[at + 1])
    local least = tonumber(ARGV[at + 2])
    if redis.call('PTTL', KEYS[2]) < least then
      redis.call('PEXPIRE', KEYS[2], least)
    end
  end
  return 1
end
"""
EXPORT_SCRIPT = HEADER_OF + INDEX + EXPORT_SCRIPT
MIRROR_SCRIPT = HEADER_OF + INDEX + MIRROR_SCRIPT


class Kind(Enum):
    EXPORT = "export"
    MIRROR = "mirror"
    DELETE = "delete"


class Outcome(Enum):
    WRITTEN = "written"
    KEPT_NEWER = "kept_newer"  # Redis holds a copy that expires as late or later
    KEPT_LOGOUT = "kept_logout"  # Redis holds a tombstone
    EXPIRED = "expired"  # not sent: the session has expired


@dataclass(frozen=True, slots=True)
class Write:
    """One write: a session (``payload``, ``expires_at`` in seconds since the epoch) or, for
    ``DELETE``, a key alone."""

    kind: Kind
    key: str
    payload: bytes = b""
    expires_at: float = 0.0


_SCRIPT_OUTCOMES = {1: Outcome.WRITTEN, 0: Outcome.KEPT_LOGOUT, -1: Outcome.KEPT_NEWER}


class Importer:
    """Writes exported and mirrored sessions into the Redis store's keys. Not shared between
    processes: each builds its own (its own connection pool)."""

    def __init__(self, store: RedisStore, clock: Callable[[], float] = wall_clock) -> None:
        self.store = store
        self.clock = clock
        self._export = store.client.register_script(EXPORT_SCRIPT)
        self._mirror = store.client.register_script(MIRROR_SCRIPT)

    def ping(self) -> None:
        """Raise :class:`~django_memsession.redis.exceptions.SessionBackendUnavailable` (with
        the reason) unless Redis answers."""
        self.store.ping()

    def write(self, writes: Sequence[Write]) -> list[Outcome]:
        """Send ``writes`` in one pipelined round trip, in order; what became of each.

        Raises ``SessionBackendUnavailable`` when Redis cannot answer (nothing is known of which
        writes were applied: sending the same batch again is safe, each write being idempotent
        and the batch in order).
        """
        now = self.clock()
        outcomes: list[Outcome | None] = []
        pipe = self.store.client.pipeline(transaction=False)
        for write in writes:
            key = self.store.key(write.key)
            if write.kind is Kind.DELETE:
                pipe.set(key, TOMBSTONE, px=self.store.tombstone_ms)
                outcomes.append(None)
                continue
            ttl_ms = math.ceil((write.expires_at - now) * 1000)
            if ttl_ms <= 0:
                outcomes.append(Outcome.EXPIRED)
                continue
            record = pack(write.payload, write.expires_at)
            keys, index = [key], []
            user = _user_of(write.payload)
            if user is not None:
                keys.append(self.store.users_key(user))
                facts = facts_text(now, now, None)
                index = [write.key.encode(), facts, ttl_ms + INDEX_TTL_MARGIN_MS]
            if write.kind is Kind.EXPORT:
                expires_ms = int(write.expires_at * 1000)
                self._export(keys=keys, args=[record, ttl_ms, expires_ms, *index], client=pipe)
            else:
                self._mirror(keys=keys, args=[record, ttl_ms, *index], client=pipe)
            outcomes.append(None)
        if any(outcome is None for outcome in outcomes):
            try:
                answers = iter(pipe.execute())
            except redis.RedisError as exc:
                _raise_unavailable(exc)
            for index, outcome in enumerate(outcomes):
                if outcome is None:
                    answer = next(answers)
                    outcomes[index] = (
                        Outcome.WRITTEN if answer is True else _SCRIPT_OUTCOMES[int(answer)]
                    )
        return [outcome for outcome in outcomes if outcome is not None]

    def close(self) -> None:
        self.store.close()


def _user_of(payload: bytes) -> str | None:
    """The logged-in user's id in a serialized session (as Django stores it), or None: an
    anonymous session, or data this project's serializer cannot read (copied, not indexed)."""
    try:
        data = current_codec().loads(payload)
    except Exception:
        return None
    user = data.get(AUTH_SESSION_KEY) if isinstance(data, dict) else None
    return None if user is None else str(user)


def _raise_unavailable(exc: redis.RedisError) -> NoReturn:
    reason = _availability_reason(exc)
    if reason is None:
        raise exc
    raise SessionBackendUnavailable(reason) from exc


def importer_for(url: str) -> Importer:
    """An importer for the Redis server at ``url``, with this project's Redis engine settings
    (``MEMSESSION_REDIS_PREFIX``, ``MEMSESSION_REDIS_OPTIONS``, ...) but this URL. Raises
    ``ImproperlyConfigured`` with the system check's text for a bad setting or URL."""
    found = [problem for problem in problems() if problem.id != "memsession.E101"]
    if urlsplit(url).scheme not in URL_SCHEMES:
        found.insert(
            0,
            Problem(
                "memsession.E101",
                f"{redacted(url)!r} is not a redis://, rediss:// or unix:// URL.",
                "Give the Redis server's URL, e.g. redis://127.0.0.1:6379/0.",
            ),
        )
    if found:
        raise ImproperlyConfigured(
            "; ".join(f"{problem.msg} {problem.hint} ({problem.id})" for problem in found)
        )
    size = conf.MAX_SESSION_SIZE
    settings = StoreSettings(
        url=url,
        prefix=conf.PREFIX,
        options={**DEFAULT_OPTIONS, **conf.OPTIONS},
        probation_age=float(conf.PROBATION_AGE),
        max_session_bytes=DEFAULT_MAX_SESSION_SIZE if size is None else parse_size(size),
    )
    return Importer(RedisStore(settings))
