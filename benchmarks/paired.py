"""What the same-run Redis comparisons share (``benchmarks.sentinel``, ``benchmarks.cluster``):
the tests' server helpers, an engine on a store of its own, and paired rounds.

Rounds are paired: each round runs every engine's batch, in a new order, back to back; a ratio
is the median over the rounds of that round's ratio (noise hits both sides of a round alike).
Figures are µs per operation, median (min-max) over the rounds.

The anonymous workloads are load, load-modify-save ("cycle") and create; the waited ones are
**login**, the save that first puts ``_auth_user_id`` in (a session loaded, ``cycle_key()``, the
auth keys set, as ``django.contrib.auth.login`` leaves it: only the save is timed), and
**logout**, ``flush()`` of a loaded logged-in session (only the flush is timed).

``counters`` (optional, per engine) are callables returning the servers' own counts now (a
``Counter``: ``INFO commandstats`` calls by command, and ``"round trips"``): the difference over
the timed batches, divided by the operations, is the ``commands_per_operation`` of the report.
"""

from __future__ import annotations

import random
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from .common import AUTH_KEYS, REPO_ROOT, summary, time_batch
from .engines import DjangoEngine, _workload, batch_size

ANONYMOUS = ("load", "cycle", "create")
WAITED = ("login", "logout")
Pairs = Sequence[tuple[str, str]]
Counters = dict[str, Callable[[], Counter]]


def test_servers(*names: str) -> list[Any]:
    """The tests' server helpers (``tests/`` is not a package: its modules import each other by
    name): ``redis_server`` then the modules named; exit when there is no server to start."""
    tests = str(REPO_ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import importlib

    import redis_server

    if redis_server.REDIS_SERVER is None:
        named = redis_server.NAMED_SERVER
        raise SystemExit(
            f"{redis_server.SERVER_VARIABLE}={named!r} is not an executable file"
            if named
            else "redis-server is not installed (or set MEMSESSION_TEST_REDIS_SERVER)"
        )
    return [redis_server, *(importlib.import_module(name) for name in names)]


class Engine(DjangoEngine):
    """The Redis engine on a store of its own (as ``redis_engines.NearEngine``)."""

    def __init__(self, config: Any) -> None:
        from django_memsession.redis.engine import SessionStore
        from django_memsession.redis.store import RedisStore

        store = self.store = RedisStore(config)

        class Store(SessionStore):
            _get_store = staticmethod(lambda: store)

        self.store_class = Store

    # The waited writes, each on objects prepared beforehand (untimed): ``prepare_*`` makes
    # ``count`` of them, the operation takes the ``i``-th.

    def prepare_login(self, payload: dict[str, Any], count: int) -> list[Any]:
        """Sessions as ``login()`` leaves them before its save: an anonymous session that came
        back (loaded once, so promoted), loaded again, ``cycle_key()`` done, the auth keys in."""
        sessions = []
        for _ in range(count):
            key = self.create(payload)
            self.load(key)  # came back: promoted
            session = self.store_class(key)
            session.get("_auth_user_id")  # the request loads it
            session.cycle_key()
            session.update(AUTH_KEYS)
            sessions.append(session)
        return sessions

    def prepare_logout(self, payload: dict[str, Any], count: int) -> list[Any]:
        """Logged-in sessions, each loaded by the object that flushes it (as a request does)."""
        sessions = []
        for _ in range(count):
            key = self.create({**payload, **AUTH_KEYS})
            session = self.store_class(key)
            session.get("_auth_user_id")
            sessions.append(session)
        return sessions

    def close(self) -> None:
        self.store.close()


def ratios(samples: dict[str, list[float]], pairs: Pairs) -> dict[str, float]:
    """Each pair's ratio: the median over the rounds of that round's ratio."""
    return {
        f"{top} / {bottom}": statistics.median(
            a / b for a, b in zip(samples[top], samples[bottom], strict=True)
        )
        for top, bottom in pairs
    }


def _timed(
    operation: Callable[[int], object], count: int, counter: Callable[[], Counter] | None
) -> tuple[float, Counter]:
    before = counter() if counter else Counter()
    us = time_batch(operation, count)
    after = counter() if counter else Counter()
    return us, after - before


def _figures(
    samples: dict[str, list[float]],
    pairs: Pairs,
    counted: dict[str, Counter],
    operations: dict[str, int],
) -> dict[str, Any]:
    figures: dict[str, Any] = {name: summary(s) for name, s in samples.items()}
    figures["ratios"] = ratios(samples, pairs)
    figures["samples_us"] = samples
    if any(counted.values()):
        figures["commands_per_operation"] = {
            name: {command: calls / operations[name] for command, calls in sorted(c.items())}
            for name, c in counted.items()
        }
    return figures


def anonymous(
    engines: dict[str, Engine],
    names: Sequence[str],
    payload: dict[str, Any],
    rounds: int,
    target_ms: float,
    pairs: Pairs,
    seed: int,
    counters: Counters | None = None,
) -> dict[str, Any]:
    """{workload: {engine: summary, "ratios": {...}, "calls_per_round": {...}}} for load, cycle,
    create (and ``commands_per_operation`` with ``counters``)."""
    rng = random.Random(seed)
    counters = counters or {}
    results: dict[str, Any] = {}
    for workload in ANONYMOUS:
        operations = {name: _workload(engines[name], workload, payload, pool=200) for name in names}
        counts = {name: batch_size(operation, target_ms) for name, operation in operations.items()}
        samples: dict[str, list[float]] = {name: [] for name in names}
        counted = {name: Counter() for name in names}
        order = list(names)
        for _ in range(rounds):
            rng.shuffle(order)
            for name in order:
                us, seen = _timed(operations[name], counts[name], counters.get(name))
                samples[name].append(us)
                counted[name] += seen
        done = {name: counts[name] * rounds for name in names}
        figures = _figures(samples, pairs, counted, done)
        figures["calls_per_round"] = counts
        results[workload] = figures
        print(
            f"  {workload}: "
            + ", ".join(f"{name} {figures[name]['median']:.1f}" for name in names)
            + " µs; "
            + ", ".join(f"{k} {v:.3f}x" for k, v in figures["ratios"].items()),
            flush=True,
        )
    return results


def waited(
    engines: dict[str, Engine],
    names: Sequence[str],
    payload: dict[str, Any],
    rounds: int,
    count: int,
    pairs: Pairs,
    seed: int,
    counters: Counters | None = None,
) -> dict[str, Any]:
    """{login|logout: {engine: summary, "ratios": {...}, "calls_per_round": count}} (and
    ``commands_per_operation`` with ``counters``): each round prepares ``count`` sessions per
    engine, then times them."""
    rng = random.Random(seed)
    counters = counters or {}
    results: dict[str, Any] = {}
    acts = {
        "login": ("prepare_login", lambda session: session.save()),
        "logout": ("prepare_logout", lambda session: session.flush()),
    }
    for workload in WAITED:
        prepare, act = acts[workload]
        for name in names:  # warm-up: the first INFO replication, connections
            for session in getattr(engines[name], prepare)(payload, 20):
                act(session)
        samples: dict[str, list[float]] = {name: [] for name in names}
        counted = {name: Counter() for name in names}
        order = list(names)
        for _ in range(rounds):
            rng.shuffle(order)
            for name in order:
                sessions = getattr(engines[name], prepare)(payload, count)
                us, seen = _timed(lambda i, s=sessions, a=act: a(s[i]), count, counters.get(name))
                samples[name].append(us)
                counted[name] += seen
        figures = _figures(samples, pairs, counted, dict.fromkeys(names, rounds * count))
        figures["calls_per_round"] = count
        results[workload] = figures
    return results
