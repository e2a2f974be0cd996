"""What mirroring to Redis costs a request while a move to Redis is under way, and what an export
of a large store costs.

``python -m benchmarks.mirror [--quick]`` prints one JSON line. Everything is compared within this
run, against one throwaway ``redis-server``:

- **load-modify-save** of a 1 KB session through ``SessionStore`` with the mirror off and on (its
  thread sending every save to Redis as the rounds run), in paired rounds in random order; the
  figure is the median of the rounds' ratios. The queue left at the end of each round says
  whether the thread keeps up.
- **export**: a store of N sessions exported (copied in pages, sent to Redis) against writing a
  snapshot of the same store, both in this process.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import make_session, setup_django, time_batch
from .redis_engines import RedisServer


def mirror_overhead(url: str, rounds: int, count: int) -> dict[str, Any]:
    from django_memsession import SessionStore
    from django_memsession.redis.move import Mirror
    from django_memsession.runtime import get_store

    store = get_store()
    keys = []
    for _ in range(200):
        session = SessionStore()
        session.update(make_session(1_000))
        session.save()
        keys.append(session.session_key)

    def cycle(i: int) -> None:
        session = SessionStore(keys[i % len(keys)])
        session["n"] = i
        session.save()

    mirror = Mirror(url, url)
    mirror.start()
    ratios, off_us, on_us, queued = [], [], [], []
    for _ in range(rounds):
        timings = {}
        for mode in random.sample(["off", "on"], 2):
            store.on_mirror = mirror.note if mode == "on" else None
            timings[mode] = time_batch(cycle, count)
        store.on_mirror = None
        queued.append(mirror.state().queued)
        ratios.append(timings["on"] / timings["off"])
        off_us.append(timings["off"])
        on_us.append(timings["on"])
    drained = mirror.stop(timeout=30)
    return {
        "ratio_on_vs_off": statistics.median(ratios),
        "off_us": statistics.median(off_us),
        "on_us": statistics.median(on_us),
        "queued_at_round_end_max": max(queued),
        "mirrored": mirror.mirrored,
        "all_sent": drained,
    }


def export_vs_snapshot(url: str, count: int) -> dict[str, Any]:
    import base64

    from django_memsession.memory.export import ExportRun
    from django_memsession.memory.snapshot.file import write_snapshot
    from django_memsession.redis.importer import Kind, Write, importer_for
    from django_memsession.runtime import clear, get_store

    clear()
    store = get_store()
    payload = json.dumps(make_session(300)).encode()
    now = store.clock()
    for i in range(count):
        store.put(f"{i:032d}", payload, now + 3600, authenticated=False, create=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        write_snapshot(Path(directory) / "s", store.copy_chunks(), epoch=1, started_at=now)
    snapshot_s = time.perf_counter() - started

    importer = importer_for(url)
    started = time.perf_counter()
    run = ExportRun("bench", store)
    offset = 0
    while offset < run.total:
        page = run.page(offset)
        writes = [
            Write(Kind.EXPORT, s.key, base64.b64decode(s.payload), s.expires_at) for s in page
        ]
        for start in range(0, len(writes), 1000):
            importer.write(writes[start : start + 1000])
        offset += len(page)
    export_s = time.perf_counter() - started
    importer.close()
    return {
        "sessions": count,
        "export_s": export_s,
        "snapshot_s": snapshot_s,
        "ratio_export_vs_snapshot": export_s / snapshot_s,
    }


def main() -> None:
    quick = "--quick" in sys.argv
    server = RedisServer()
    try:
        setup_django(MEMSESSION_REDIS_URL=server.url)
        results = {
            "load_modify_save": mirror_overhead(
                server.url, rounds=5 if quick else 15, count=2_000 if quick else 10_000
            ),
            "export": export_vs_snapshot(server.url, 20_000 if quick else 200_000),
        }
    finally:
        server.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
