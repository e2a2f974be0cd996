"""Per-operation cost of session engines on Redis, in one process, against one ``redis-server``
on loopback that this module starts, interleaved round by round.

Engines: ``django_memsession.redis``; the same with its near cache (``near``, a 16 MiB
``MEMSESSION_REDIS_NEAR_CACHE``: a load of a session it holds makes no round trip); the memory
engine (``memory``, ``django_memsession``: what a load from L1 is measured against); Django's
cache engine on
``django.core.cache.backends.redis.RedisCache``; the same engine on django-redis's cache backend
(``pip install -e ".[bench]"``; left out when it is not installed); and a *floor*: raw redis-py
with the least a Redis session engine must do — one ``GET`` and a JSON decode for a load, that
plus a JSON encode and one ``SET ... EX`` for a load-modify-save ("cycle"), one ``SET ... NX EX``
for a create. Workloads at a ~350 B session: load, cycle, create.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

from .common import make_session, summary, time_batch
from .engines import DjangoEngine, _workload, batch_size

SESSION_BYTES = 350
AGE = 14 * 24 * 3600


class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port: no persistence, no eviction."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(executable):
            raise RuntimeError("redis-server is not installed")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.directory = tempfile.mkdtemp(prefix="memsession-bench-redis-")
        self.process = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def settings(url: str) -> dict[str, Any]:
    """The Django settings this part needs (``setup_django(**settings(url))``)."""
    caches: dict[str, Any] = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 10_000_000},
        },
        "rediscache": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url},
    }
    if _has_django_redis():
        caches["django_redis"] = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url}
    return {"CACHES": caches, "MEMSESSION_REDIS_URL": url}


def _has_django_redis() -> bool:
    try:
        import django_redis  # noqa: F401
    except ImportError:
        return False
    return True


class CacheEngine(DjangoEngine):
    """Django's cache engine on the cache named ``alias``."""

    def __init__(self, alias: str) -> None:
        from django.contrib.sessions.backends import cache as cache_engine
        from django.contrib.sessions.backends.base import SessionBase
        from django.core.cache import caches

        class Store(cache_engine.SessionStore):
            def __init__(self, session_key: str | None = None) -> None:
                SessionBase.__init__(self, session_key)
                self._cache = caches[alias]

        self.store_class = Store


class Floor:
    """Raw redis-py: the round trips and the JSON work any Redis session engine must do."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)

    def create(self, payload: dict[str, Any]) -> str:
        key = os.urandom(16).hex()
        self.client.set(key, json.dumps(payload), ex=AGE, nx=True)
        return key

    def cycle(self, key: str, n: int) -> str:
        session = json.loads(self.client.get(key))
        session["n"] = n
        self.client.set(key, json.dumps(session), ex=AGE)
        return key

    def load(self, key: str) -> None:
        json.loads(self.client.get(key))


class NearEngine(DjangoEngine):
    """Our Redis engine with a near cache of its own (the process's store stays without)."""

    def __init__(self) -> None:
        from dataclasses import replace

        from django_memsession.redis.conf import store_settings
        from django_memsession.redis.engine import SessionStore
        from django_memsession.redis.store import RedisStore

        store = RedisStore(replace(store_settings(), near_cache_bytes=16 * 1024 * 1024))
        assert store.near is not None and store.near.connect()

        class Store(SessionStore):
            _get_store = staticmethod(lambda: store)

        self.store_class = Store


def make_engines(url: str) -> dict[str, Any]:
    engines: dict[str, Any] = {
        "memsession": DjangoEngine("django_memsession.redis"),
        "near": NearEngine(),
        "memory": DjangoEngine("django_memsession"),
        "rediscache": CacheEngine("rediscache"),
    }
    if _has_django_redis():
        engines["django_redis"] = CacheEngine("django_redis")
    engines["floor"] = Floor(url)
    return engines


def run(url: str, rounds: int, target_ms: float, quick: bool) -> dict[str, Any]:
    """{workload: {engine: {median, min, max, rounds}}} in µs per operation."""
    engines = make_engines(url)
    payload = make_session(SESSION_BYTES)
    results: dict[str, Any] = {}
    rng = random.Random(2)
    for workload in ("load", "cycle", "create"):
        operations = {
            name: _workload(engine, workload, payload, pool=200) for name, engine in engines.items()
        }
        counts = {name: batch_size(operation, target_ms) for name, operation in operations.items()}
        samples: dict[str, list[float]] = {name: [] for name in operations}
        order = list(operations)
        for _ in range(rounds):
            rng.shuffle(order)  # interleaved, in a new order each round
            for name in order:
                samples[name].append(time_batch(operations[name], counts[name]))
        results[workload] = {name: summary(s) for name, s in samples.items()}
        results[workload]["payload_bytes"] = len(json.dumps(payload, separators=(",", ":")))
        if not quick:
            print(
                f"  {workload}: "
                + ", ".join(f"{e} {results[workload][e]['median']:.1f}" for e in operations),
                flush=True,
            )
    return results


# The near cache's targets (issue 14): near / the engine, at most.
NEAR_TARGETS = {"load": {"memory": 1.5}, "cycle": {"rediscache": 0.4}}

# The targets: memsession / the engine, at most.
TARGETS = {
    "load": {"rediscache": 0.6, "django_redis": 0.6, "floor": 1.3},
    "cycle": {"rediscache": 0.4, "django_redis": 0.4, "floor": 1.3},
    "create": {"rediscache": 0.3, "django_redis": 0.3, "floor": 1.3},
}


def table(results: dict[str, Any]) -> list[str]:
    names = ["memsession", "near", "memory", "rediscache", "django_redis", "floor"]
    names = [name for name in names if name in results["load"]]
    others = [name for name in names if name in ("rediscache", "django_redis", "floor")]
    lines = [
        "| workload | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"memsession / {name} (target)" for name in others)
        + " |",
        "|---" * (len(names) + len(others) + 1) + "|",
    ]
    for workload, figures in results.items():
        ours = figures["memsession"]["median"]
        cells = [
            f"{figures[n]['median']:.1f} ({figures[n]['min']:.1f}-{figures[n]['max']:.1f})"
            for n in names
        ]
        ratios = [
            f"**{ours / figures[n]['median']:.2f}x** (≤ {TARGETS[workload][n]}x)" for n in others
        ]
        lines.append(
            f"| {workload} ({figures['payload_bytes']} B) | "
            + " | ".join(cells)
            + " | "
            + " | ".join(ratios)
            + " |"
        )
    lines += ["", "| near cache | near / memory (target) | near / rediscache (target) |"]
    lines.append("|---|---|---|")
    for workload, figures in results.items():
        if "near" not in figures:
            continue
        near = figures["near"]["median"]
        cells = []
        for other in ("memory", "rediscache"):
            target = NEAR_TARGETS.get(workload, {}).get(other)
            wanted = f" (≤ {target}x)" if target else ""
            cells.append(f"**{near / figures[other]['median']:.2f}x**{wanted}")
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    return lines
