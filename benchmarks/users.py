"""Who is logged in: what the user index costs, and how fast a user's sessions are found.

``python -m benchmarks.users [--quick]`` prints one JSON line (``python -m benchmarks`` runs it in a
fresh process, as part ``users``). Everything is compared within this run:

- **load-modify-save**: a logged-in session (indexed, its facts in its value) against an anonymous
  one of the same serialized size (not indexed: the path every session took before the index),
  through ``SessionStore``, in paired rounds. Twice: on the real clock (a session loaded again
  within the second is not noted again), and with a clock one second further on at each call,
  so every load notes a new last use (the worst case).
- **memory**: accounted bytes of N logged-in sessions (one per user) less those of N anonymous
  sessions with the same payloads, per session; and the index's own share.
- **user_sessions**: a store of 1,000,000 sessions of 100,000 users (10 each): a user's records
  (index lookup, facts, opaque ids) against a plain ``dict`` lookup of the same facts plus
  building the same records; and against a store of 10,000 sessions (O(that user's sessions),
  not of the store).
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
import sys
import time
from typing import Any

from .common import make_session, setup_django, summary, time_batch


class EverySecond:
    """A clock one second further on at each call (every load notes a new last use)."""

    def __init__(self) -> None:
        self.ticks = itertools.count(int(time.time()))

    def __call__(self) -> float:
        return float(next(self.ticks))


def load_modify_save(rounds: int, count: int) -> dict[str, Any]:
    """Paired rounds: each round times both kinds back to back (in random order), and the
    figure is the median of the rounds' ratios, which a noisy neighbour moves far less than a
    ratio of medians."""
    from django_memsession import SessionStore
    from django_memsession.runtime import get_store

    store = get_store()
    real_clock = store.clock
    logged_in = make_session(300)
    anonymous = dict(logged_in)
    # Same JSON size, no _auth_user_id: the same payload, not indexed.
    anonymous["_auth_user_xx"] = anonymous.pop("_auth_user_id")
    keys: dict[str, list[str]] = {}
    for name, data in (("logged in", logged_in), ("anonymous", anonymous)):
        keys[name] = []
        for _ in range(1000):
            session = SessionStore()
            session.update(data)
            session.save()
            keys[name].append(session.session_key)

    def cycle(name: str):  # type: ignore[no-untyped-def]
        chosen = keys[name]

        def operation(i: int) -> None:
            session = SessionStore(chosen[i % 1000])
            session["n"] = i
            session.save()

        return operation

    results: dict[str, Any] = {"payload_bytes": len(json.dumps(logged_in))}
    for clock_name, clock in (("real clock", real_clock), ("every load a new second", None)):
        store.clock = clock if clock is not None else EverySecond()
        ratios: list[float] = []
        times: dict[str, list[float]] = {"logged in": [], "anonymous": []}
        for _ in range(rounds):
            taken = {}
            for name in random.sample(list(times), 2):
                taken[name] = time_batch(cycle(name), count)
                times[name].append(taken[name])
            ratios.append(taken["logged in"] / taken["anonymous"])
        results[clock_name] = {
            **{name: summary(values) for name, values in times.items()},
            "ratio": statistics.median(ratios),
        }
    store.clock = real_clock
    return results


def memory(count: int) -> dict[str, Any]:
    from django_memsession.memory.store import Limits, MemoryStore

    payload = json.dumps(make_session(300)).encode()
    figures = {}
    for name in ("logged in", "anonymous"):
        store = MemoryStore(Limits(1 << 40, 1 << 20, 0.75))
        for n in range(count):
            user = str(100_000 + n) if name == "logged in" else None
            store.put(
                f"{n:032d}",
                payload,
                time.time() + 3600,
                authenticated=user is not None,
                create=True,
                user=user,
            )
        stats = store.stats()
        figures[name] = {"bytes": stats["bytes"], "index_bytes": stats["user_index_bytes"]}
    extra = figures["logged in"]["bytes"] - figures["anonymous"]["bytes"]
    index = figures["logged in"]["index_bytes"] - figures["anonymous"]["index_bytes"]
    return {
        "sessions": count,
        "per_logged_in_session": extra / count,
        "index_per_session": index / count,
        "facts_per_session": (extra - index) / count,
        "anonymous_index_bytes_growth": figures["anonymous"]["index_bytes"]
        - MemoryStore(Limits(1 << 40, 1 << 20, 0.75)).stats()["user_index_bytes"],
    }


def _filled(users: int, per_user: int) -> Any:
    from django_memsession.memory.store import Limits, MemoryStore

    store = MemoryStore(Limits(1 << 40, 1 << 20, 0.75))
    expires = time.time() + 3600
    n = 0
    for _ in range(per_user):
        for user in range(users):
            store.put(
                f"{n:032d}",
                b'{"_auth_user_id":"%d"}' % user,
                expires,
                authenticated=True,
                create=True,
                user=str(user),
            )
            n += 1
    return store


def lookups(users: int, per_user: int, samples: int, rounds: int) -> dict[str, Any]:
    from django_memsession.logged_in import session_id
    from django_memsession.memory.who import local_sessions
    from django_memsession.messages import UserSession

    store = _filled(users, per_user)
    small = _filled(1000, per_user)
    # The baseline: the same facts in a plain dict of lists of tuples.
    plain: dict[str, list[tuple[str, int, int, float, str | None]]] = {}
    for user in range(users):
        plain[str(user)] = [
            (row.key, row.created, row.last_used, row.expires_at, row.client)
            for row in store.user_sessions(str(user))
        ]
    pid = 0

    def baseline(user: str) -> list[UserSession]:
        records = [
            UserSession(
                id=session_id(key),
                pid=pid,
                user=user,
                created=float(created),
                last_used=float(last_used),
                expires=expires,
                ip=None,
                user_agent=client,
            )
            for key, created, last_used, expires, client in plain[user]
        ]
        records.sort(key=lambda record: (record.last_used, record.created), reverse=True)
        return records

    rng = random.Random(1)
    chosen = [str(rng.randrange(1000)) for _ in range(samples)]  # users both stores hold
    results: dict[str, list[float]] = {"store 1M": [], "plain dict": [], "store 10k": []}
    for _ in range(rounds):
        results["store 1M"].append(time_batch(lambda i: local_sessions(store, chosen[i]), samples))
        results["plain dict"].append(time_batch(lambda i: baseline(chosen[i]), samples))
        results["store 10k"].append(time_batch(lambda i: local_sessions(small, chosen[i]), samples))
    medians = {name: statistics.median(values) for name, values in results.items()}
    return {
        "sessions": users * per_user,
        "users": users,
        "sessions_per_user": per_user,
        "us_per_call": {name: summary(values) for name, values in results.items()},
        "vs_plain_dict": medians["store 1M"] / medians["plain dict"],
        "vs_small_store": medians["store 1M"] / medians["store 10k"],
    }


def main() -> None:
    quick = "--quick" in sys.argv
    setup_django()
    report = {
        "load_modify_save": load_modify_save(
            rounds=5 if quick else 61, count=200 if quick else 1000
        ),
        "memory": memory(10_000 if quick else 100_000),
        "user_sessions": lookups(
            users=10_000 if quick else 100_000,
            per_user=10,
            samples=1000,
            rounds=3 if quick else 9,
        ),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
