"""Merged saves (issue 24) on the memory engine, in one process, interleaved round by round.

``python -m benchmarks.merge [--rounds N] [--count N]`` prints one JSON line:

- load-modify-save without conflict, ``MEMSESSION_MERGE_SAVES`` on and off, anonymous and
  logged in (300-byte sessions, as ``benchmarks.against``): the ratio on / off per round, its
  median (target: at most 1.03);
- a conflicting save: two stores load one session, the first saves, the second's save is timed
  (merged onto the first: a peek, two decodes, the per-key comparison, an encode, a second
  compare-and-set), against the same save without the other store's write in between, at 300 B
  and 10 KB.

The cost of the comparison against the commit before merging (a payload compare under the lock)
is ``python -m benchmarks.against --rev <that commit>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from .common import AUTH_KEYS, machine, make_session, setup_django


def _best(operation: Callable[[int], object], count: int, repeats: int = 3) -> float:
    """Best of ``repeats`` batches, µs per call."""
    figures = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(count):
            operation(i)
        figures.append((time.perf_counter() - started) / count * 1e6)
    return min(figures)


def run(rounds: int, count: int) -> dict[str, Any]:
    setup_django()
    from django.test import override_settings

    from django_memsession import SessionStore

    anonymous = {k: v for k, v in make_session(300).items() if not k.startswith("_auth")}
    logged_in = {**anonymous, **AUTH_KEYS}

    def fill(data: dict[str, Any], n: int = 2000) -> list[str]:
        keys = []
        for _ in range(n):
            session = SessionStore()
            session.update(data)
            session.save()
            keys.append(session.session_key)
        return keys

    keys = {"anonymous": fill(anonymous), "logged in": fill(logged_in)}

    def cycle(chosen: list[str]) -> Callable[[int], None]:
        def operation(i: int) -> None:
            session = SessionStore(chosen[i % 2000])
            session["n"] = i
            session.save()

        return operation

    def saves(data: dict[str, Any], conflicting: bool) -> Callable[[int], float]:
        """µs of the second store's save, the first having saved in between (or not)."""
        key = fill(data, 1)[0]

        def operation(i: int) -> float:
            first, second = SessionStore(key), SessionStore(key)
            first.keys(), second.keys()
            if conflicting:
                first["a"] = i
                first.save()
            second["b"] = i
            started = time.perf_counter()
            second.save()
            return time.perf_counter() - started

        return operation

    def timed_saves(operation: Callable[[int], float]) -> float:
        return min(sum(operation(i) for i in range(count)) / count * 1e6 for _ in range(3))

    cycles: dict[str, dict[str, list[float]]] = {name: {"on": [], "off": []} for name in keys}
    conflict_cases = {
        "300 B": {**logged_in},
        "10 KB": make_session(10_000),
    }
    conflicts: dict[str, dict[str, list[float]]] = {
        name: {"plain": [], "merged": []} for name in conflict_cases
    }
    for round_ in range(rounds):
        order = ("on", "off") if round_ % 2 == 0 else ("off", "on")
        for name, chosen in keys.items():
            for setting in order:
                with override_settings(MEMSESSION_MERGE_SAVES=setting == "on"):
                    cycles[name][setting].append(_best(cycle(chosen), count))
        for name, data in conflict_cases.items():
            conflicts[name]["plain"].append(timed_saves(saves(data, False)))
            conflicts[name]["merged"].append(timed_saves(saves(data, True)))
    result: dict[str, Any] = {"rounds": rounds, "calls_per_round": count, "machine": machine()}
    for name, figures in cycles.items():
        result[f"load-modify-save {name}, no conflict"] = {
            "merge_on_us": statistics.median(figures["on"]),
            "merge_off_us": statistics.median(figures["off"]),
            "ratio_on_off": statistics.median(
                a / b for a, b in zip(figures["on"], figures["off"], strict=True)
            ),
        }
    for name, figures in conflicts.items():
        result[f"save {name}, conflicting"] = {
            "plain_save_us": statistics.median(figures["plain"]),
            "merged_save_us": statistics.median(figures["merged"]),
            "extra_us": statistics.median(
                a - b for a, b in zip(figures["merged"], figures["plain"], strict=True)
            ),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="3 rounds, 1000 calls")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.count = 3, 1000
    print(json.dumps(run(args.rounds, args.count)))


if __name__ == "__main__":
    main()
