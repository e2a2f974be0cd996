"""What this process's Redis figures cost a request: the Redis engine as it runs (each round trip
timed into the latency ring, each load counted as a hit or a miss, the store reached through its
services) against the same engine without them (a plain redis-py client, no count, the store
reached directly), in one process, interleaved round by round against one ``redis-server``.

Workloads at a ~350 B session: load (one ``GET``) and cycle (a load, then a save: ``GET`` and one
``EVALSHA``). The figure is the ratio timed / untimed of the medians, same run.
"""

from __future__ import annotations

import random
from typing import Any

from .common import make_session, summary, time_batch
from .engines import DjangoEngine, _workload, batch_size

SESSION_BYTES = 350


class Engine(DjangoEngine):
    """The Redis engine with one way of reaching its store, set before each of its batches."""

    def __init__(self, store_class: type, get_store: Any) -> None:
        self.store_class = store_class
        self.get_store = get_store

    def use(self) -> None:
        from django_memsession.redis import engine

        engine.get_store = self.get_store


def make_engines() -> dict[str, Engine]:
    import redis

    from django_memsession.redis import engine, services
    from django_memsession.redis.client import client_options
    from django_memsession.redis.conf import store_settings
    from django_memsession.redis.scripts import source
    from django_memsession.redis.store import RedisStore

    config = store_settings()
    plain = RedisStore(config)
    plain.client = redis.Redis.from_url(config.url, **client_options(config))
    plain._promote = plain.client.register_script(source("promote"))
    plain._update = plain.client.register_script(source("update"))

    class Uncounted(engine.SessionStore):
        def _decoded(self, loaded: Any) -> dict[str, Any]:
            # The engine's _decoded() before the figures: no hit or miss counted.
            if loaded is None:
                self._session_key = None
                return {}
            self._known_expires_at = loaded.expires_at
            self._came_back = True
            return engine.current_codec().loads(loaded.payload)

    return {
        "timed": Engine(engine.SessionStore, services.redis_store),
        "untimed": Engine(Uncounted, lambda: plain),
    }


def run(rounds: int, target_ms: float, quick: bool) -> dict[str, Any]:
    """{workload: {timed|untimed: {median, min, max, rounds}, ratio}} in µs per operation."""
    from django_memsession.redis import engine, services

    engines = make_engines()
    payload = make_session(SESSION_BYTES)
    results: dict[str, Any] = {}
    rng = random.Random(3)
    try:
        for workload in ("load", "cycle"):
            operations, counts = {}, {}
            for name, candidate in engines.items():
                candidate.use()
                operations[name] = _workload(candidate, workload, payload, pool=200)
                counts[name] = batch_size(operations[name], target_ms)
            samples: dict[str, list[float]] = {name: [] for name in engines}
            order = list(engines)
            for _ in range(rounds):
                rng.shuffle(order)
                for name in order:
                    engines[name].use()
                    samples[name].append(time_batch(operations[name], counts[name]))
            figures = {name: summary(s) for name, s in samples.items()}
            figures["ratio"] = figures["timed"]["median"] / figures["untimed"]["median"]
            results[workload] = figures
            if not quick:
                print(
                    f"  {workload}: timed {figures['timed']['median']:.1f} µs, untimed "
                    f"{figures['untimed']['median']:.1f} µs, {figures['ratio']:.3f}x",
                    flush=True,
                )
    finally:
        engine.get_store = services.redis_store
    return results


def table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| workload | timed, counted (µs) | untimed (µs) | timed / untimed |",
        "|---|---|---|---|",
    ]
    for workload, figures in results.items():
        timed, untimed = figures["timed"], figures["untimed"]
        lines.append(
            f"| {workload} | {timed['median']:.1f} ({timed['min']:.1f}-{timed['max']:.1f}) | "
            f"{untimed['median']:.1f} ({untimed['min']:.1f}-{untimed['max']:.1f}) | "
            f"**{figures['ratio']:.3f}x** |"
        )
    return lines
