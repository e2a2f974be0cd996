"""How the engine behaves at scale. Each measure runs in a fresh process (clean RSS):

    python -m benchmarks.scale <measure> [--quick]

- ``save``: ``save()`` (load-modify-save) cost with 1k and with 1M sessions stored, interleaved.
- ``prune``: pruning 1M expired sessions: sessions/s, the longest lock hold, and how long a
  concurrent request thread waits for the lock (p50/p99/max).
- ``memory``: bytes per stored 300 B session (RSS and tracemalloc), memsession vs LocMem vs a
  bare dict of JSON strings, and accounted bytes vs tracemalloc.
- ``flood``: 1M new sessions into a 32 MiB budget: accounted bytes over time, RSS growth.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
import tracemalloc
from typing import Any

from .common import make_session, rss_bytes, setup_django, summary, time_batch


def _fill(store: Any, count: int, payload: bytes, expires_at: float) -> list[str]:
    """``count`` sessions straight into a store (fast: no serializing per session)."""
    from django_memsession.engine import new_session_key

    keys = []
    for _ in range(count):
        key = new_session_key()
        store.put(key, payload, expires_at, authenticated=True, create=True)
        keys.append(key)
    return keys


def measure_save(quick: bool) -> dict[str, Any]:
    setup_django()
    import django_memsession
    from django_memsession import runtime
    from django_memsession.serializers import get_codec
    from django_memsession.store import MemoryStore

    big_count = 100_000 if quick else 1_000_000
    payload = get_codec("django.contrib.sessions.serializers.JSONSerializer").dumps(
        make_session(300)
    )
    expires = time.time() + 3600
    stores = {}
    keys = {}
    for label, count in (("1k", 1_000), ("1M", big_count)):
        store = MemoryStore(runtime.conf.limits(), on_event=None)
        keys[label] = _fill(store, count, payload, expires)
        stores[label] = store
    samples: dict[str, list[float]] = {"1k": [], "1M": []}
    for _ in range(5 if quick else 30):
        for label in ("1k", "1M"):
            runtime._store = stores[label]  # the engine's global store, swapped per batch
            pool = keys[label]
            step = max(1, len(pool) // 997)

            def cycle(i: int, pool: list[str] = pool, step: int = step) -> None:
                session = django_memsession.SessionStore(pool[(i * step) % len(pool)])
                session["n"] = i
                session.save()

            samples[label].append(time_batch(cycle, 2000))
    result = {label: summary(s) for label, s in samples.items()}
    result["stored"] = {"1k": 1_000, "1M": big_count}
    result["ratio"] = result["1M"]["median"] / result["1k"]["median"]
    return result


def measure_prune(quick: bool) -> dict[str, Any]:
    setup_django()
    from django_memsession import runtime
    from django_memsession.serializers import get_codec
    from django_memsession.store import MemoryStore

    count = 100_000 if quick else 1_000_000
    payload = get_codec("django.contrib.sessions.serializers.JSONSerializer").dumps(
        make_session(300)
    )
    now = [time.time()]
    store = MemoryStore(runtime.conf.limits(), clock=lambda: now[0])
    _fill(store, count, payload, now[0] + 10)
    live = _fill(store, 1, payload, now[0] + 10_000)[0]
    now[0] += 11
    waits: list[float] = []
    stop = threading.Event()

    def request_thread() -> None:
        # A request's view of the prune: how long one get() takes, lock wait included.
        while not stop.is_set():
            started = time.perf_counter()
            store.get(live)
            waits.append(time.perf_counter() - started)
            time.sleep(0.0005)

    thread = threading.Thread(target=request_thread)
    thread.start()
    started = time.perf_counter()
    result = store.prune_expired()
    duration = time.perf_counter() - started
    stop.set()
    thread.join()
    waits.sort()
    return {
        "expired": count,
        "removed": result.removed,
        "seconds": duration,
        "sessions_per_second": result.removed / duration,
        "chunk_size": 1000,
        "longest_lock_hold_ms": result.longest_lock_hold * 1000,
        "request_wait_ms": {
            "p50": waits[len(waits) // 2] * 1000,
            "p99": waits[int(len(waits) * 0.99)] * 1000,
            "max": waits[-1] * 1000,
            "samples": len(waits),
        },
        "left": store.stats()["entries"],
    }


def measure_memory(quick: bool, engine: str) -> dict[str, Any]:
    """Bytes per stored 300 B session for one engine (each engine in its own process)."""
    setup_django()
    from importlib import import_module

    from django.core.cache import caches

    count = 20_000 if quick else 100_000
    payload = make_session(300)
    gc.collect()
    tracemalloc.start()
    base_rss = rss_bytes()
    base_traced = tracemalloc.get_traced_memory()[0]
    holder: Any = None
    if engine == "dict":
        holder = {}
        codec = json.JSONEncoder(separators=(",", ":"))
        from django_memsession.engine import new_session_key

        for _ in range(count):
            holder[new_session_key()] = codec.encode(payload)
    else:
        module = {
            "memsession": "django_memsession",
            "locmem": "django.contrib.sessions.backends.cache",
        }[engine]
        store_class = import_module(module).SessionStore
        for _ in range(count):
            session = store_class()
            session.update(payload)
            session.save()
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - base_traced
    rss = rss_bytes() - base_rss
    tracemalloc.stop()
    result: dict[str, Any] = {
        "engine": engine,
        "sessions": count,
        "rss_per_session": rss / count,
        "tracemalloc_per_session": traced / count,
    }
    if engine == "memsession":
        from django_memsession import stats

        accounted = stats()["bytes"]
        result["accounted_per_session"] = accounted / count
        result["accounted_vs_tracemalloc"] = accounted / traced
    if engine == "locmem":
        result["entries_in_cache"] = len(caches["default"]._cache)
    return result


def measure_flood(quick: bool) -> dict[str, Any]:
    setup_django(MEMSESSION_MAX_SIZE="32M")
    import django_memsession
    from django_memsession import stats

    count = 200_000 if quick else 1_000_000
    payload = make_session(300)
    budget = stats()["max_bytes"]
    gc.collect()
    base_rss = rss_bytes()
    samples = []
    worst = 0
    started = time.perf_counter()
    for i in range(count):
        session = django_memsession.SessionStore()
        session.update(payload)
        session.save()
        if i % 1000 == 0:
            figures = stats()
            worst = max(worst, figures["bytes"])
            if i % 50_000 == 0:
                samples.append(
                    {
                        "created": i,
                        "bytes": figures["bytes"],
                        "entries": figures["entries"],
                        "rss_growth": rss_bytes() - base_rss,
                    }
                )
    duration = time.perf_counter() - started
    figures = stats()
    growth = rss_bytes() - base_rss
    return {
        "created": count,
        "budget": budget,
        "max_accounted": max(worst, figures["bytes"]),
        "over_budget": max(worst, figures["bytes"]) > budget,
        "entries_at_end": figures["entries"],
        "evictions": figures["evictions"],
        "rss_growth": growth,
        "rss_growth_vs_budget": growth / budget,
        "creates_per_second": count / duration,
        "samples": samples,
    }


def main(argv: list[str]) -> None:
    measure, quick = argv[0], "--quick" in argv
    if measure == "memory":
        result = measure_memory(quick, argv[1])
    else:
        result = {"save": measure_save, "prune": measure_prune, "flood": measure_flood}[measure](
            quick
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
