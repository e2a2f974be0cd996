"""Per-operation cost of each session engine, in one process, interleaved round by round.

Engines: django_memsession; Django's cache engine on LocMemCache (MAX_ENTRIES raised); the db
engine on SQLite; the file engine; signed_cookies; and a *floor*: ``json.dumps``/``loads`` of the
session dict plus a dict set/get under a ``threading.Lock`` — the least work an in-memory store
can do. Workloads: create; load-modify-save ("cycle"); load only; cycle at 100 B … 10 KB.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Callable
from typing import Any

from .common import SIZES, make_session, summary, time_batch

ENGINES = {
    "memsession": "django_memsession",
    "locmem": "django.contrib.sessions.backends.cache",
    "db": "django.contrib.sessions.backends.db",
    "file": "django.contrib.sessions.backends.file",
    "signed_cookies": "django.contrib.sessions.backends.signed_cookies",
}


class Floor:
    """The least an in-memory JSON session store can do: no key checks, no expiry, no budget."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.lock = threading.Lock()

    def create(self, payload: dict[str, Any]) -> str:
        key = os.urandom(16).hex()
        value = json.dumps(payload)
        with self.lock:
            self.data[key] = value
        return key

    def cycle(self, key: str, n: int) -> str:
        with self.lock:
            value = self.data[key]
        session = json.loads(value)
        session["n"] = n
        value = json.dumps(session)
        with self.lock:
            self.data[key] = value
        return key

    def load(self, key: str) -> None:
        with self.lock:
            value = self.data[key]
        json.loads(value)


class DjangoEngine:
    """The same three operations through a Django ``SessionStore``, as a request does them."""

    def __init__(self, module: str) -> None:
        from importlib import import_module

        self.store_class = import_module(module).SessionStore

    def create(self, payload: dict[str, Any]) -> str:
        session = self.store_class()
        session.update(payload)
        session.save()
        return session.session_key

    def cycle(self, key: str, n: int) -> str:
        session = self.store_class(key)
        session["n"] = n
        session.save()
        return session.session_key  # signed_cookies: the new cookie value

    def load(self, key: str) -> None:
        self.store_class(key).get("_auth_user_id")


def make_engines() -> dict[str, Any]:
    engines: dict[str, Any] = {name: DjangoEngine(module) for name, module in ENGINES.items()}
    engines["floor"] = Floor()
    return engines


def _workload(
    engine: Any, kind: str, payload: dict[str, Any], pool: int
) -> Callable[[int], object]:
    """An operation ``f(i)`` for this engine and workload, with its sessions made beforehand."""
    if kind == "create":
        return lambda i: engine.create(payload)
    keys = [engine.create(payload) for _ in range(pool)]
    if kind == "load":
        return lambda i: engine.load(keys[i % pool])

    def cycle(i: int) -> None:
        index = i % pool
        keys[index] = engine.cycle(keys[index], i)

    return cycle


def batch_size(operation: Callable[[int], object], target_ms: float) -> int:
    """How many calls take about ``target_ms``, measured after a warm-up.

    The first calls of an engine pay one-off costs (building the store, calibrating sizes,
    opening a database): estimating from them gives batches so small that timer overhead and
    cold caches dominate the figures.
    """
    time_batch(operation, 20)  # warm-up
    count = 8
    while (per_call := time_batch(operation, count)) * count < target_ms * 250:  # a quarter
        count *= 2
    return max(3, min(100_000, int(target_ms * 1000 / per_call)))


def run(rounds: int, target_ms: float, quick: bool) -> dict[str, Any]:
    """{workload: {engine: {median, min, max, rounds}}} in µs per operation."""
    engines = make_engines()
    workloads: list[tuple[str, str, int]] = [
        ("create", "create", 300),
        ("cycle", "cycle", 300),
        ("load", "load", 300),
    ]
    workloads += [(f"cycle {label}", "cycle", size) for label, size in SIZES.items()]
    results: dict[str, Any] = {}
    rng = random.Random(1)
    for name, kind, size in workloads:
        payload = make_session(size)
        operations = {
            engine_name: _workload(engine, kind, payload, pool=200)
            for engine_name, engine in engines.items()
        }
        counts = {
            engine_name: batch_size(operation, target_ms)
            for engine_name, operation in operations.items()
        }
        samples: dict[str, list[float]] = {engine_name: [] for engine_name in operations}
        order = list(operations)
        for _ in range(rounds):
            rng.shuffle(order)  # interleaved, in a new order each round
            for engine_name in order:
                samples[engine_name].append(
                    time_batch(operations[engine_name], counts[engine_name])
                )
        results[name] = {engine_name: summary(s) for engine_name, s in samples.items()}
        results[name]["payload_bytes"] = len(json.dumps(payload, separators=(",", ":")))
        if not quick:
            print(
                f"  {name}: "
                + ", ".join(f"{e} {results[name][e]['median']:.1f}" for e in operations),
                flush=True,
            )
    return results
