"""How the engine behaves at scale. Each measure runs in a fresh process (clean RSS):

    python -m benchmarks.scale <measure> [--quick]

- ``save``: ``save()`` (load-modify-save) cost with 1k and with 1M sessions stored, interleaved.
- ``prune``: pruning 1M expired sessions: sessions/s, the longest lock hold, and how long a
  concurrent request thread waits for the lock (p50/p99/max).
- ``memory <engine> rss|tracemalloc``: bytes per stored 300 B session, memsession vs LocMem vs a
  bare dict of JSON strings, and accounted bytes vs tracemalloc.
- ``flood <prune_every>``: 1M new sessions into a 32 MiB budget, with a pruner pass every so many
  sessions (0: none): accounted bytes over time, RSS growth.
- ``snapshot``: 1M sessions created through ``SessionStore``, then written to a snapshot (while a
  request thread measures its waits for the lock) and restored into a fresh store, both against
  the time it took to create them; the file's size against the store's; and load-modify-save
  with the journal on against off, interleaved.
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
    from django_memsession.memory.engine import new_session_key

    keys = []
    for _ in range(count):
        key = new_session_key()
        store.put(key, payload, expires_at, authenticated=True, create=True)
        keys.append(key)
    return keys


def _stored_payload() -> bytes:
    """A 300 B session as the engine stores it (Django's default serializer)."""
    from django_memsession.serializers import get_codec

    return get_codec("django.contrib.sessions.serializers.JSONSerializer").dumps(make_session(300))


def measure_save(quick: bool) -> dict[str, Any]:
    setup_django()
    import django_memsession
    from django_memsession.memory import services as runtime
    from django_memsession.memory.store import MemoryStore

    big_count = 100_000 if quick else 1_000_000
    payload = _stored_payload()
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
            # The same number of sessions visited in both stores, spread over the whole store:
            # indexing a list of a million keys would add its own cache misses to the 1M side.
            visited = keys[label][:: max(1, len(keys[label]) // 997)]

            def cycle(i: int, visited: list[str] = visited) -> None:
                session = django_memsession.SessionStore(visited[i % len(visited)])
                session["n"] = i
                session.save()

            samples[label].append(time_batch(cycle, 2000))
    result = {label: summary(s) for label, s in samples.items()}
    result["stored"] = {"1k": 1_000, "1M": big_count}
    result["ratio"] = result["1M"]["median"] / result["1k"]["median"]
    return result


def measure_prune(quick: bool) -> dict[str, Any]:
    setup_django()
    from django_memsession.memory import services as runtime
    from django_memsession.memory.store import MemoryStore

    count = 100_000 if quick else 1_000_000
    payload = _stored_payload()
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


def _store_sessions(engine: str, count: int, payload: dict[str, Any]) -> Any:
    """``count`` sessions through ``engine``; returns what holds them (so it stays alive)."""
    from importlib import import_module

    from django_memsession.memory.engine import new_session_key

    if engine == "dict":
        encode = json.JSONEncoder(separators=(",", ":")).encode
        return {new_session_key(): encode(payload) for _ in range(count)}
    module = {"memsession": "django_memsession", "locmem": "django.contrib.sessions.backends.cache"}
    store_class = import_module(module[engine]).SessionStore
    for _ in range(count):
        session = store_class()
        session.update(payload)
        session.save()
    return None


def measure_memory(quick: bool, engine: str, method: str) -> dict[str, Any]:
    """Bytes per stored 300 B session for one engine, by RSS or by tracemalloc.

    Each engine and method runs in a process of its own: tracemalloc's own bookkeeping (a trace
    per live allocation) would inflate an RSS measured while it runs.
    """
    setup_django()
    count = 20_000 if quick else 100_000
    payload = make_session(300)
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = rss_bytes()
    holder = _store_sessions(engine, count, payload)
    gc.collect()
    if method == "tracemalloc":
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    else:
        grown = rss_bytes() - before
    result: dict[str, Any] = {
        "engine": engine,
        "sessions": count,
        f"{method}_per_session": grown / count,
    }
    if engine == "memsession":
        from django_memsession import stats

        accounted = stats()["bytes"]
        result["accounted_per_session"] = accounted / count
        result[f"accounted_vs_{method}"] = accounted / grown
    del holder
    return result


def measure_flood(quick: bool, prune_every: int) -> dict[str, Any]:
    """New sessions into a 32 MiB budget, as fast as one thread can create them.

    ``prune_every``: a pruner pass after every so many sessions (0: none, the request path
    alone). The default pruner runs every 60 s; one process serving about 1,700 new sessions a
    second makes 100,000 in that time.
    """
    setup_django(MEMSESSION_MAX_SIZE="32M")
    import django_memsession
    from django_memsession import stats

    count = 200_000 if quick else 1_000_000
    payload = make_session(300)
    budget = stats()["max_bytes"]
    gc.collect()
    base_rss = rss_bytes()
    samples = []
    worst = peak_rss = 0
    started = time.perf_counter()
    for i in range(1, count + 1):
        session = django_memsession.SessionStore()
        session.update(payload)
        session.save()
        if prune_every and i % prune_every == 0:
            django_memsession.prune()
        if i % 1000 == 0:
            figures = stats()
            worst = max(worst, figures["bytes"])
            peak_rss = max(peak_rss, rss_bytes() - base_rss)
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
    return {
        "created": count,
        "prune_every": prune_every,
        "budget": budget,
        "max_accounted": max(worst, figures["bytes"]),
        "over_budget": max(worst, figures["bytes"]) > budget,
        "entries_at_end": figures["entries"],
        "evictions": figures["evictions"],
        "rss_growth": rss_bytes() - base_rss,
        "peak_rss_growth": peak_rss,
        "peak_rss_growth_vs_budget": peak_rss / budget,
        "creates_per_second": count / duration,
        "samples": samples,
    }


def measure_snapshot(quick: bool) -> dict[str, Any]:
    setup_django()
    from pathlib import Path

    from pympler import asizeof

    import django_memsession
    from django_memsession.memory import services as runtime
    from django_memsession.memory.snapshot.writer import Snapshotter
    from django_memsession.memory.store import MemoryStore

    from .common import WORKDIR

    count = 100_000 if quick else 1_000_000
    payload = make_session(300)
    started = time.perf_counter()
    keys = []
    for _ in range(count):
        session = django_memsession.SessionStore()
        session.update(payload)
        session.save()
        keys.append(session.session_key)
    create_seconds = time.perf_counter() - started
    store = runtime.get_store()
    path = Path(WORKDIR) / "sessions.snapshot"
    writer = Snapshotter(store, path)
    store.on_journal = writer.journal_write
    writer.restore()  # claims the (absent) file and starts journaling

    waits: list[float] = []
    stop = threading.Event()
    live = keys[len(keys) // 2]

    def request_thread() -> None:
        while not stop.is_set():
            began = time.perf_counter()
            store.get(live)
            waits.append(time.perf_counter() - began)
            time.sleep(0.0005)

    thread = threading.Thread(target=request_thread)
    thread.start()
    written = writer.write("benchmark")
    stop.set()
    thread.join()
    waits.sort()
    accounted = store.stats()["bytes"]
    writer.shutdown()  # a final snapshot and the claim released, as at exit
    size = path.stat().st_size

    fresh = MemoryStore(runtime.conf.limits())
    reader = Snapshotter(fresh, path)
    fresh.on_journal = reader.journal_write
    began = time.perf_counter()
    restored = reader.restore()
    restore_seconds = time.perf_counter() - began
    assert restored is not None
    exact = fresh.stats()["bytes"] == asizeof.asizeof(*fresh.containers())
    reader.shutdown()

    cycle = _journal_cycle(quick)
    return {
        "sessions": count,
        "create_seconds": create_seconds,
        "snapshot_seconds": written.duration,
        "snapshot_vs_create": written.duration / create_seconds,
        "request_wait_ms": {
            "p50": waits[len(waits) // 2] * 1000,
            "p99": waits[int(len(waits) * 0.99)] * 1000,
            "max": waits[-1] * 1000,
            "samples": len(waits),
        },
        "restore_seconds": restore_seconds,
        "restore_vs_create": restore_seconds / create_seconds,
        "restored": restored.sessions,
        "restored_accounting_equals_asizeof": exact,
        "file_bytes": size,
        "accounted_bytes": accounted,
        "file_vs_accounted": size / accounted,
        "cycle": cycle,
    }


def _journal_cycle(quick: bool) -> dict[str, Any]:
    """Load-modify-save with snapshots (the journal) on against off, interleaved: the steady
    state (a session saved again within a snapshot interval: journaled once), and the first
    write of each session after a snapshot began (one ``write()`` to the journal each)."""
    from pathlib import Path

    import django_memsession
    from django_memsession.memory import services as runtime
    from django_memsession.memory.snapshot.writer import Snapshotter
    from django_memsession.memory.store import MemoryStore

    from .common import WORKDIR

    payload = make_session(300)
    stores: dict[str, MemoryStore] = {}
    writers: dict[str, Snapshotter] = {}
    keys: dict[str, list[str]] = {}
    for label in ("off", "on"):
        store = MemoryStore(runtime.conf.limits())
        runtime._store = store
        keys[label] = []
        for _ in range(20_000):
            session = django_memsession.SessionStore()
            session.update(payload)
            session.save()
            keys[label].append(session.session_key)
        if label == "on":
            writer = Snapshotter(store, Path(WORKDIR) / "cycle.snapshot")
            store.on_journal = writer.journal_write
            writer.restore()
            writers[label] = writer
        stores[label] = store
    samples: dict[str, list[float]] = {"off": [], "on": [], "off first": [], "on first": []}
    for round_number in range(5 if quick else 20):
        for label in ("off", "on"):
            runtime._store = stores[label]
            # A new epoch (as when a snapshot begins): the next write of each session is its
            # first in it, and is journaled; later ones are not.
            if label == "on":
                writers[label]._begin_epoch(stores[label].epoch + 1)
            fresh = keys[label][1000 + round_number * 900 : 1000 + (round_number + 1) * 900]
            visited = keys[label][:997]

            def save(i: int, sessions: list[str]) -> None:
                session = django_memsession.SessionStore(sessions[i % len(sessions)])
                session["n"] = i
                session.save()

            samples[f"{label} first"].append(time_batch(lambda i, f=fresh: save(i, f), 900))
            for i in range(len(visited)):  # their first write in this epoch, not timed
                save(i, visited)
            samples[label].append(time_batch(lambda i, v=visited: save(i, v), 2000))
    writers["on"].shutdown()
    result = {label: summary(values) for label, values in samples.items()}
    result["steady_ratio"] = result["on"]["median"] / result["off"]["median"]
    result["first_write_ratio"] = result["on first"]["median"] / result["off first"]["median"]
    return result


def main(argv: list[str]) -> None:
    measure, quick = argv[0], "--quick" in argv
    if measure == "memory":
        result = measure_memory(quick, argv[1], argv[2])
    elif measure == "flood":
        result = measure_flood(quick, int(argv[1]))
    else:
        result = {"save": measure_save, "prune": measure_prune, "snapshot": measure_snapshot}[
            measure
        ](quick)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
