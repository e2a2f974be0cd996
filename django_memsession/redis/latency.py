"""This process's own figures on the Redis engine: what its loads found (hits, misses) and how
long its round trips to Redis took (p50, p99), cheap enough to stay on under load.

Latency is kept in a fixed ring of the last :data:`RING_SIZE` round trips: constant memory, no
lock (a slot index, like the hit and miss counts, comes from ``itertools.count``, whose
``next()`` is atomic in CPython: no increment is lost between threads), and a
percentile over what the process does now rather than since it started. Two threads racing can
at worst both write their sample at once into different slots; nothing is ever lost but old
samples, by design.

Round trips are timed by the clients the store builds (:class:`TimedRedis`,
:class:`TimedAsyncRedis`, and on a Redis Cluster :class:`TimedRedisCluster`,
:class:`TimedAsyncRedisCluster`): each command the engine sends through them, from send to reply. A
pipeline, and the figures this package reads for the admin page (``INFO``, ``DBSIZE``, a key
sample; see ``info.py``), are not timed: they are not a session's round trips.

The recorder is one per process; a forked child empties it (its figures are its
own, not its parent's).
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

__all__ = [
    "RING_SIZE",
    "ClusterUnreachable",
    "Recorder",
    "TimedAsyncRedis",
    "TimedAsyncRedisCluster",
    "TimedRedis",
    "TimedRedisCluster",
    "recorder",
]

RING_SIZE = 1024  # round trips kept: enough for a stable p99 (the 10 slowest of the last 1024)


class Recorder:
    """Counts loads that found a session (hits) or not (misses), and times round trips."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start empty (a forked child: its figures are its own, not its parent's)."""
        self._slots = itertools.count()
        self._ring: list[float | None] = [None] * RING_SIZE
        self._hits = itertools.count()
        self._misses = itertools.count()

    def round_trip(self, seconds: float) -> None:
        self._ring[next(self._slots) % RING_SIZE] = seconds

    def loaded(self, found: bool) -> None:
        next(self._hits if found else self._misses)

    @property
    def hits(self) -> int:
        return _peek(self._hits)

    @property
    def misses(self) -> int:
        return _peek(self._misses)

    @property
    def round_trips(self) -> int:
        """How many round trips were timed since the process started (or forked)."""
        return _peek(self._slots)

    def figures(self) -> dict[str, Any]:
        """Hits, misses, round trips timed, and the latency percentiles (ms, None before any
        round trip) over the last :data:`RING_SIZE` of them."""
        samples = sorted(sample for sample in list(self._ring) if sample is not None)
        return {
            "hits": self.hits,
            "misses": self.misses,
            "round_trips": self.round_trips,
            "latency_samples": len(samples),
            "latency_p50_ms": _percentile_ms(samples, 0.50),
            "latency_p99_ms": _percentile_ms(samples, 0.99),
        }


def _peek(counter: itertools.count[int]) -> int:
    """A counter's next value, read without taking it (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])


def _percentile_ms(ordered: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ordered samples, in milliseconds."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil without importing math
    return round(ordered[int(rank) - 1] * 1000, 3)


recorder = Recorder()


# Emptied in place, not replaced: modules hold it by name (``from .latency import recorder``).
os.register_at_fork(after_in_child=recorder.reset)


class TimedRedis(redis.Redis):
    """redis-py's client, timing each command it sends into this process's recorder."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().execute_command(*args, **options)
        finally:
            recorder.round_trip(time.perf_counter() - started)


class TimedAsyncRedis(redis.asyncio.Redis):
    """The same on ``redis.asyncio``."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super().execute_command(*args, **options)
        finally:
            recorder.round_trip(time.perf_counter() - started)


class ClusterUnreachable(redis.ConnectionError):
    """No node of the cluster answers (redis-py's ``RedisClusterUnreachableError``, which is not
    a ``RedisError``): an outage like any other, so the engine's ``except redis.RedisError``
    makes it the 503 it is, never a 500."""


class TimedRedisCluster(redis.cluster.RedisCluster):
    """redis-py's Redis Cluster client, timing each command it sends (redirections and retries
    included: what the request waited) into this process's recorder; an unreachable cluster
    raised as :class:`ClusterUnreachable`."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().execute_command(*args, **kwargs)
        except redis.exceptions.RedisClusterUnreachableError as exc:
            raise ClusterUnreachable(f"{type(exc).__name__}: {exc}") from exc
        finally:
            recorder.round_trip(time.perf_counter() - started)


class TimedAsyncRedisCluster(redis.asyncio.cluster.RedisCluster):
    """The same on ``redis.asyncio`` (which learns the slots on first use, or when the engine
    calls :meth:`initialize` before a ``WAIT`` on one node)."""

    async def initialize(self) -> Any:
        try:
            return await super().initialize()
        except redis.exceptions.RedisClusterUnreachableError as exc:
            raise ClusterUnreachable(f"{type(exc).__name__}: {exc}") from exc

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super().execute_command(*args, **kwargs)
        except redis.exceptions.RedisClusterUnreachableError as exc:
            raise ClusterUnreachable(f"{type(exc).__name__}: {exc}") from exc
        finally:
            recorder.round_trip(time.perf_counter() - started)
