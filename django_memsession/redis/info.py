"""Redis's own figures, for ``stats()`` and the admin page: its memory against ``maxmemory``, its
eviction policy, the keys it evicted and expired, its version and uptime (all from ``INFO``), and
how many sessions it holds.

How many sessions: the database may hold other keys than ours, and counting ours exactly means
reading every key. So a database of up to :data:`EXACT_LIMIT` keys is walked (``SCAN`` on our
prefix, then the first byte of each record: a session or a tombstone), and the count is exact;
a larger one is estimated from :data:`SAMPLE_SIZE` random keys (``RANDOMKEY``) times ``DBSIZE``,
and marked as an estimate. Either way a bounded number of round trips, each a pipeline.

Everything here is sent as pipelines, so none of it is timed as a session's round trip (see
``latency.py``). Nothing here reads a session's data or shows a key: only counts leave.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import redis

from .record import PROBATION, SESSION, TOMBSTONE

__all__ = ["EXACT_LIMIT", "SAMPLE_SIZE", "FiguresUnavailable", "ServerFigures", "read"]

EXACT_LIMIT = 10_000  # keys in the database up to which sessions are counted one by one
SAMPLE_SIZE = 200  # random keys read to estimate the share of sessions in a larger database
SCAN_COUNT = 1000
SECTIONS = ("server", "memory", "stats")
PIPELINE_ANNOTATION = "of pipeline caused error: "


class FiguresUnavailable(Exception):
    """Redis did not give its figures; the message says why and never holds a key."""


@dataclass(frozen=True)
class ServerFigures:
    version: str
    uptime: int  # seconds
    used_memory: int  # bytes
    maxmemory: int  # bytes; 0: no limit
    maxmemory_policy: str
    evicted_keys: int  # every key Redis evicted since it started (its own count, not ours)
    expired_keys: int  # every key whose TTL ran out, likewise
    keys: int  # in this database, ours or not (DBSIZE)
    sessions: int  # live sessions and sessions on probation under our prefix
    tombstones: int  # deleted sessions (logouts) kept so no save can undo them
    sessions_exact: bool  # False: sessions and tombstones are estimates from a sample
    sampled: int  # keys looked at to count or estimate them

    @property
    def used_percent(self) -> float | None:
        if not self.maxmemory:
            return None
        return round(100 * self.used_memory / self.maxmemory, 1)


def read(client: redis.Redis, prefix: bytes) -> ServerFigures:
    """Redis's figures now. Raises :class:`FiguresUnavailable` when Redis cannot give them."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("INFO", *SECTIONS)
        pipe.dbsize()
        info, keys = pipe.execute()
        if keys <= EXACT_LIMIT:
            counted, sessions, tombstones = _count_all(client, prefix)
        else:
            counted, sessions, tombstones = _estimate(client, prefix, keys)
    except redis.RedisError as exc:
        raise FiguresUnavailable(_reason(exc)) from None
    exact = keys <= EXACT_LIMIT
    return ServerFigures(
        version=str(info.get("redis_version", "?")),
        uptime=int(info.get("uptime_in_seconds", 0)),
        used_memory=int(info.get("used_memory", 0)),
        maxmemory=int(info.get("maxmemory", 0)),
        maxmemory_policy=str(info.get("maxmemory_policy", "?")),
        evicted_keys=int(info.get("evicted_keys", 0)),
        expired_keys=int(info.get("expired_keys", 0)),
        keys=int(keys),
        sessions=sessions,
        tombstones=tombstones,
        sessions_exact=exact,
        sampled=counted,
    )


def _reason(exc: redis.RedisError) -> str:
    """Why, in words that hold no key: redis-py's connection errors name the host and the port;
    an error inside a pipeline is annotated with the command and its arguments (a key, for
    ``GETRANGE``), so only Redis's own words after the annotation are kept."""
    text = str(exc)
    if PIPELINE_ANNOTATION in text:
        text = text.split(PIPELINE_ANNOTATION, 1)[1]
    return f"{type(exc).__name__}: {text}"


def _count_all(client: redis.Redis, prefix: bytes) -> tuple[int, int, int]:
    """Walk every key under our prefix (a small database): (keys looked at, sessions,
    tombstones)."""
    pattern = re.sub(rb"([*?\[\]\\])", rb"\\\1", prefix) + b"*"
    cursor: int | bytes = 0
    found: list[bytes] = []
    while True:
        pipe = client.pipeline(transaction=False)
        pipe.scan(cursor, match=pattern, count=SCAN_COUNT)
        ((cursor, batch),) = pipe.execute()
        found.extend(batch)
        if int(cursor) == 0:
            break
    sessions, tombstones = _kinds(client, set(found))
    return len(found), sessions, tombstones


def _estimate(client: redis.Redis, prefix: bytes, keys: int) -> tuple[int, int, int]:
    """Estimate from random keys (a large database): (keys looked at, sessions, tombstones)."""
    pipe = client.pipeline(transaction=False)
    for _ in range(SAMPLE_SIZE):
        pipe.randomkey()
    sample = [key for key in pipe.execute() if key is not None]
    if not sample:
        return 0, 0, 0
    ours = [key for key in sample if key.startswith(prefix)]
    sessions, tombstones = _kinds(client, ours)
    scale = keys / len(sample)
    return len(sample), round(sessions * scale), round(tombstones * scale)


def _kinds(client: redis.Redis, keys: Any) -> tuple[int, int]:
    """How many of these keys hold a session, and how many a tombstone (the rest: other keys
    under our prefix, or gone meanwhile)."""
    keys = list(keys)
    if not keys:
        return 0, 0
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.getrange(key, 0, 0)
    sessions = tombstones = 0
    for kind in pipe.execute(raise_on_error=False):
        if kind in (SESSION, PROBATION):
            sessions += 1
        elif kind == TOMBSTONE:
            tombstones += 1
    return sessions, tombstones
