"""Every Redis write of a move from the memory engine: ``exportsessions``'s copies and the memory
processes' mirror of later writes and deletes. One method, :meth:`Importer.write`, sends them,
pipelined in one round trip per batch, in the order given (so a write and a later delete of the
same key reach Redis in that order).

Three kinds of write, each a session record or a tombstone in the Redis store's own format
(:func:`~django_memsession.redis.record.pack`, ``S`` records, TTLs sent relative with ``PX``):

- ``EXPORT``: a copy made by the export. Written only where Redis holds nothing under the key, or
  a session record that expires earlier (an older copy, e.g. of an earlier export). Never over a
  tombstone (a logout) nor over a copy that expires as late or later (a newer one).
- ``MIRROR``: a later write in a memory process. Written over anything but a tombstone: it is the
  newest version, unless the session was logged out meanwhile (on Redis, or by a mirrored delete).
- ``DELETE``: a later delete (logout, ``flush()``, ``cycle_key()``): a tombstone, as the Redis
  engine's own delete writes, so the switch cannot bring the session back.

A record whose session has expired by the web server's clock is not sent.

A logged-in session (its payload names a user, ``_auth_user_id``) written by ``EXPORT`` or
``MIRROR`` also enters that user's hash of the Redis user index (:mod:`.index`), before the
session is written (the hash and the session may be in different slots of a cluster: see
``steps.py``; a crash between the two leaves a member the index removes): after the switch,
"who is logged in" and "log out everywhere" find it before it is saved again. Its facts there
start at the write (created and last used are
not carried over from the memory store); a member already in the hash keeps its own. A ``DELETE``
leaves the member: the index drops members whose session is a tombstone when it reads them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

import redis

from ..clock import wall_clock
from ..serializers import current_codec
from ..sessionbase import AUTH_SESSION_KEY
from .conf import (
    URL_SCHEMES,
    Problem,
    StoreSettings,
    conf,
    max_session_bytes,
    pool_options,
    problems,
    raise_any,
    redacted,
    sentinel_settings,
)
from .index import INDEX_TTL_MARGIN_MS, SECONDS_DIGITS, facts_text
from .outages import unavailable
from .record import TOMBSTONE, pack
from .steps import Command, Eval, pipelined
from .store import RedisStore

__all__ = ["Importer", "Kind", "Outcome", "Write", "importer_for"]


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
        indexing: list[Command] = []
        sent: list[Command] = []
        for write in writes:
            key = self.store.key(write.key)
            if write.kind is Kind.DELETE:
                sent.append(("SET", key, TOMBSTONE, "PX", self.store.tombstone_ms))
                outcomes.append(None)
                continue
            ttl_ms = math.ceil((write.expires_at - now) * 1000)
            if ttl_ms <= 0:
                outcomes.append(Outcome.EXPIRED)
                continue
            record = pack(write.payload, write.expires_at)
            user = _user_of(write.payload)
            if user is not None:
                facts = facts_text(now, now, None)
                index_args = (
                    write.key.encode(),
                    facts[SECONDS_DIGITS : 2 * SECONDS_DIGITS],
                    b"0",
                    b"",
                    facts[:SECONDS_DIGITS],
                    ttl_ms + INDEX_TTL_MARGIN_MS,
                    b"0",
                    b"1",  # a member already there keeps its facts
                )
                indexing.append(Eval("index", (self.store.index.users_key(user),), index_args))
            if write.kind is Kind.EXPORT:
                expires_ms = int(write.expires_at * 1000)
                sent.append(Eval("export", (key,), (record, ttl_ms, expires_ms)))
            else:
                sent.append(Eval("mirror", (key,), (record, ttl_ms)))
            outcomes.append(None)
        if sent:
            try:
                # The members first, then the sessions (see steps.py): a crash between the
                # two leaves members of sessions not written, which the index removes.
                answers = send_steps_pipelined(self.store.client, [indexing, sent])
            except redis.RedisError as exc:
                unavailable(exc)
            replies = iter(answers)
            for index, outcome in enumerate(outcomes):
                if outcome is None:
                    answer = next(replies)
                    outcomes[index] = (
                        Outcome.WRITTEN
                        if answer is True or answer == b"OK"
                        else _SCRIPT_OUTCOMES[int(answer)]
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
    raise_any(found)
    settings = StoreSettings(
        url=url,
        prefix=conf.PREFIX,
        options=pool_options(),
        probation_age=float(conf.PROBATION_AGE),
        max_session_bytes=max_session_bytes(),
        **sentinel_settings(),  # under Sentinel, the URL's host names the service
        cluster=conf.CLUSTER is True,  # on a cluster, the URL names one of its nodes
    )
    return Importer(RedisStore(settings))


def send_steps_pipelined(client: object, steps: list[list[Command]]) -> list[object]:
    """The replies of the last step of ``steps``, each step pipelined after the one before has
    answered; an error reply raised."""
    replies: list[object] = []
    for step in steps:
        if step:
            replies = pipelined(client, step)
            error = next((r for r in replies if isinstance(r, Exception)), None)
            if error is not None:
                raise error
    return replies
