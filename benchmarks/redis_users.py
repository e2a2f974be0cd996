"""Who is logged in on the Redis engine: what the user index costs, in one process, against one
``redis-server`` on loopback that this module starts. Everything is compared within this run.

``python -m benchmarks.redis_users [--quick]`` prints one JSON line (``python -m benchmarks`` runs
it in a fresh process, as part ``redis-users``):

- **load-modify-save** of the same logged-in sessions through ``SessionStore``, with the index
  (the save's script also writes the user's hash) and without it (an engine that treats the
  session as not logged in: the path every save took before the index), in paired rounds; the
  figure is the median of the rounds' ratios. Twice: on the real clock (a load notes "last used"
  at most once a minute per session and process), and with every load noting it (the worst
  case: one more round trip).
- **memory**: ``MEMORY USAGE`` of each user's hash, one logged-in session per user, without and
  with client tracking (an IP address and a 100-character user agent); and of the sessions'
  own keys for scale.
- **user_sessions**: ``django_memsession.user_sessions(user)`` for a user with 1 and with 10
  sessions, against a plain load of one session (one ``GET``) in the same rounds.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
from typing import Any

from .common import make_session, setup_django, summary, time_batch

USERS = 1000


def _engines() -> tuple[type, type]:
    from django_memsession.redis import SessionStore

    class Unindexed(SessionStore):
        """The engine as it was before the index: a logged-in session saved as any other."""

        @staticmethod
        def _user_of(data: dict[str, Any]) -> str | None:
            return None

        def _decoded(self, loaded: Any) -> dict[str, Any]:
            data = super()._decoded(loaded)
            self._user = None
            return data

    return SessionStore, Unindexed


def load_modify_save(rounds: int, count: int) -> dict[str, Any]:
    from django_memsession.redis.store import get_store

    indexed, unindexed = _engines()
    payload = make_session(300)
    keys: dict[str, list[str]] = {}
    engines = {"with index": indexed, "without index": unindexed}
    for name, engine in engines.items():
        keys[name] = []
        for n in range(USERS):
            session = engine()
            session.update({**payload, "_auth_user_id": str(n)})
            session.save()
            keys[name].append(session.session_key)

    def cycle(name: str):  # type: ignore[no-untyped-def]
        engine, chosen = engines[name], keys[name]

        def operation(i: int) -> None:
            session = engine(chosen[i % USERS])
            session["n"] = i
            session.save()

        return operation

    store = get_store()
    results: dict[str, Any] = {"payload_bytes": len(json.dumps(payload))}
    for label, every_load in (("real clock", False), ("every load notes last used", True)):
        if every_load:
            store.index.touch_due = lambda *args: True  # type: ignore[method-assign]
        ratios: list[float] = []
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(rounds):
            taken = {}
            for name in random.sample(list(engines), 2):
                taken[name] = time_batch(cycle(name), count)
                times[name].append(taken[name])
            ratios.append(taken["with index"] / taken["without index"])
        results[label] = {
            **{name: summary(values) for name, values in times.items()},
            "ratio": statistics.median(ratios),
        }
    del store.index.touch_due
    return results


def memory(server_url: str) -> dict[str, Any]:
    import redis

    from django_memsession.redis import SessionStore
    from django_memsession.redis.store import get_store

    store = get_store()
    client = redis.Redis.from_url(server_url)
    payload = make_session(300)
    agent = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 " + "x" * 28
    figures: dict[str, Any] = {}
    for label, client_text in (("untracked", None), ("tracked", f"203.0.113.5\n{agent}")):
        hashes, sessions = [], []
        for n in range(USERS):
            user = f"{label}-{n}"
            session = SessionStore()
            session.client = client_text
            session.update({**payload, "_auth_user_id": user})
            session.save()
            hashes.append(client.memory_usage(store.index.users_key(user), samples=0))
            sessions.append(client.memory_usage(store.key(session.session_key), samples=0))
        figures[label] = {
            "index_bytes_per_user": statistics.mean(hashes),
            "session_bytes": statistics.mean(sessions),
        }
    before = client.dbsize()
    for _ in range(USERS):
        anonymous = SessionStore()
        anonymous["cart"] = payload["cart"]
        anonymous.save()
    figures["anonymous_keys_per_session"] = (client.dbsize() - before) / USERS  # 1: no index
    client.close()
    return figures


def lookups(samples: int, rounds: int) -> dict[str, Any]:
    import django_memsession
    from django_memsession.redis import SessionStore

    for user, count in (("one", 1), ("ten", 10)):
        for _ in range(count):
            session = SessionStore()
            session["_auth_user_id"] = user
            session.save()
    plain = SessionStore()
    plain["cart"] = 1
    plain.save()
    key = plain.session_key

    operations = {
        "user_sessions, 1 session": lambda i: django_memsession.user_sessions("one"),
        "user_sessions, 10 sessions": lambda i: django_memsession.user_sessions("ten"),
        "load (one GET)": lambda i: SessionStore(key).load(),
    }
    times: dict[str, list[float]] = {name: [] for name in operations}
    for _ in range(rounds):
        for name in random.sample(list(operations), len(operations)):
            times[name].append(time_batch(operations[name], samples))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "us_per_call": {name: summary(values) for name, values in times.items()},
        "vs_load": {
            name: medians[name] / medians["load (one GET)"]
            for name in operations
            if name.startswith("user_sessions")
        },
    }


def table(report: dict[str, Any]) -> list[str]:
    cycle, memory_figures, lookup = (
        report["load_modify_save"],
        report["memory"],
        report["user_sessions"],
    )
    lines = ["| measure | figure |", "|---|---|"]
    for label in ("real clock", "every load notes last used"):
        figures = cycle[label]
        lines.append(
            f"| load-modify-save of a logged-in session ({cycle['payload_bytes']} B), with the "
            f"index vs without, {label} | {figures['with index']['median']:.1f} vs "
            f"{figures['without index']['median']:.1f} µs: **{figures['ratio']:.3f}x** |"
        )
    for label in ("untracked", "tracked"):
        figures = memory_figures[label]
        lines.append(
            f"| index bytes per logged-in user in Redis (one session, clients {label}; "
            f"MEMORY USAGE) | **{figures['index_bytes_per_user']:.0f} B** (the session's own "
            f"key: {figures['session_bytes']:.0f} B) |"
        )
    lines.append(
        "| keys per anonymous session (no index) | "
        f"{memory_figures['anonymous_keys_per_session']:.2f} |"
    )
    per_call = lookup["us_per_call"]
    for name, ratio in lookup["vs_load"].items():
        lines.append(
            f"| {name} vs a load of one session | {per_call[name]['median']:.1f} vs "
            f"{per_call['load (one GET)']['median']:.1f} µs: **{ratio:.2f}x** |"
        )
    return lines


def main() -> None:
    from .redis_engines import RedisServer

    quick = "--quick" in sys.argv
    server = RedisServer()
    try:
        setup_django(MEMSESSION_REDIS_URL=server.url, SESSION_ENGINE="django_memsession.redis")
        report = {
            "load_modify_save": load_modify_save(
                rounds=5 if quick else 41, count=200 if quick else 1000
            ),
            "memory": memory(server.url),
            "user_sessions": lookups(samples=200 if quick else 1000, rounds=3 if quick else 15),
        }
    finally:
        server.stop()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
