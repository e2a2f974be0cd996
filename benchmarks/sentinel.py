"""The Redis engine through Sentinel against the same engine at one plain server, in one run.

``python -m benchmarks.sentinel [--quick] [--json PATH]`` (``python -m benchmarks --only
redis-sentinel`` runs it in a fresh process) starts, on loopback, one plain server and a Sentinel
set: a primary, one replica and three sentinels monitoring them as ``mymaster``. The servers are
the tests' own (``tests/redis_server.py``, ``tests/sentinel_servers.py``: the executable
``MEMSESSION_TEST_REDIS_SERVER`` names, else ``redis-server``), all the same binary and flags.

Engines, each a ``SessionStore`` on a store of its own in this process:

- ``plain``: ``MEMSESSION_REDIS_URL`` at the plain server;
- ``sentinel``: ``MEMSESSION_REDIS_URL = "redis://mymaster/0"`` with ``MEMSESSION_REDIS_SENTINELS``
  (the settings a user writes), waiting for replicas as by default (``"connected"``: the one
  replica);
- ``sentinel, no wait``: the same with ``MEMSESSION_REDIS_WAIT_REPLICAS = 0``;
- ``primary, plain URL``: the Sentinel set's primary at its own address, no Sentinel (for the
  anonymous workloads: separates what redis-py's Sentinel client costs from what a primary with
  a replica attached costs).

Workloads, at a ~350 B anonymous session: load, load-modify-save ("cycle"), create; then
**login**, the save that first puts ``_auth_user_id`` in (a session loaded, ``cycle_key()``, the
auth keys set, as ``django.contrib.auth.login`` leaves it: only the save is timed), and
**logout**, ``flush()`` of a loaded logged-in session (only the flush is timed). A login and a
logout wait for the connected replica (``WAIT``, pipelined with the write): the primary's
``INFO commandstats`` counts the waits of each batch, so the table says how many each operation
made.

Rounds are paired: each round runs every engine's batch, in a new order, back to back; a
ratio is the median over the rounds of that round's ratio (noise hits both sides of a round
alike). Figures are µs per operation, median (min-max) over the rounds.

The anonymous workloads report three ratios:

- ``sentinel / primary, plain URL``: the same primary (its replica attached) through Sentinel
  and at its own plain URL: what Sentinel itself costs, the figure issue 22 wants within 5 %
  (``TARGET``; ``within_target`` says whether it is);
- ``sentinel / plain``: through Sentinel against a plain server without a replica: what having
  a replica costs on this machine (it shares the cores, and the primary feeds it) plus Sentinel;
- ``primary, plain URL / plain``: the replica's cost alone.

The machine's load average (1, 5, 15 min) at the start and end of the run is in the report.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import paired
from .common import machine, make_session, setup_django
from .paired import Engine

SERVICE_URL = "redis://mymaster/0"
# make_session(500) without its auth keys: a ~350 B anonymous session.
ANONYMOUS_TARGET = 500
# The engines each kind of workload compares, and the ratios it reports (numerator, denominator).
ANONYMOUS_ENGINES = ("plain", "sentinel", "primary, plain URL")
WAITED_ENGINES = ("plain", "sentinel", "sentinel, no wait")
# The first is Sentinel itself (the same primary, with and without Sentinel): TARGET applies to it.
SENTINEL_ITSELF = ("sentinel", "primary, plain URL")
ANONYMOUS_RATIOS = (SENTINEL_ITSELF, ("sentinel", "plain"), ("primary, plain URL", "plain"))
WAITED_RATIOS = (("sentinel", "plain"), ("sentinel, no wait", "plain"))
WAITED_RATIOS += (("sentinel", "sentinel, no wait"),)
TARGET = 1.05  # issue 22: Sentinel itself within 5 % (the same primary at its own plain URL)


def _waits(server: Any) -> Callable[[], Counter]:
    """How many ``WAIT``s this server has run (its own counters)."""
    return lambda: Counter(wait=server.calls("wait"))


def _sentinel_commands(sentinels: Any) -> int:
    """Commands the three sentinels have processed (a sentinel keeps no per-command counts)."""
    total = 0
    for sentinel in sentinels.sentinels:
        client = sentinel.client()
        try:
            total += int(client.info("stats")["total_commands_processed"])
        finally:
            client.close()
    return total


def anonymous(
    engines: dict[str, Engine], payload: dict[str, Any], rounds: int, target_ms: float
) -> dict[str, Any]:
    """{workload: {engine: summary, "ratios": {...}}} for load, cycle, create."""
    results = paired.anonymous(
        engines, ANONYMOUS_ENGINES, payload, rounds, target_ms, ANONYMOUS_RATIOS, seed=22
    )
    for figures in results.values():
        figures["within_target"] = figures["ratios"][" / ".join(SENTINEL_ITSELF)] <= TARGET
    return results


def waited(
    engines: dict[str, Engine],
    payload: dict[str, Any],
    rounds: int,
    count: int,
    servers: dict[str, Any],
) -> dict[str, Any]:
    """{login|logout: {engine: summary, "waits_per_operation": {...}, "ratios": {...},
    "wait_us": ...}}: each round prepares ``count`` sessions per engine, then times them."""
    counters = {name: _waits(servers[name]) for name in WAITED_ENGINES}
    results = paired.waited(
        engines, WAITED_ENGINES, payload, rounds, count, WAITED_RATIOS, seed=23, counters=counters
    )
    for workload, figures in results.items():
        commands = figures.pop("commands_per_operation", {})
        figures["waits_per_operation"] = {
            name: commands.get(name, {}).get("wait", 0.0) for name in WAITED_ENGINES
        }
        figures["wait_us"] = statistics.median(
            a - b
            for a, b in zip(
                figures["samples_us"]["sentinel"],
                figures["samples_us"]["sentinel, no wait"],
                strict=True,
            )
        )
        print(
            f"  {workload}: "
            + ", ".join(f"{name} {figures[name]['median']:.1f}" for name in WAITED_ENGINES)
            + f" µs; the wait {figures['wait_us']:.1f} µs; "
            + ", ".join(f"{k} {v:.3f}x" for k, v in figures["ratios"].items()),
            flush=True,
        )
    return results


def run(quick: bool) -> dict[str, Any]:
    redis_server, sentinel_servers = paired.test_servers("sentinel_servers")
    executable = redis_server.REDIS_SERVER
    plain = redis_server.RedisServer(executable)
    sentinels = sentinel_servers.SentinelSet(executable)
    engines: dict[str, Engine] = {}
    try:
        plain.start()
        sentinels.start()
        setup_django(
            SESSION_ENGINE="django_memsession.redis",
            MEMSESSION_REDIS_URL=SERVICE_URL,
            MEMSESSION_REDIS_SENTINELS=sentinels.addresses,
        )
        from django_memsession.redis.conf import store_settings

        through = store_settings()  # through Sentinel, waiting for "connected" replicas
        assert through.sentinels is not None and through.wait_replicas == "connected"
        primary = sentinels.primary
        direct = replace(through, sentinels=None)
        engines = {
            "plain": Engine(replace(direct, url=plain.url)),
            "sentinel": Engine(through),
            "sentinel, no wait": Engine(replace(through, wait_replicas=0)),
            "primary, plain URL": Engine(replace(direct, url=primary.url)),
        }
        servers = {"plain": plain, "sentinel": primary, "sentinel, no wait": primary}
        payload = {
            k: v for k, v in make_session(ANONYMOUS_TARGET).items() if not k.startswith("_auth")
        }
        asked_before = _sentinel_commands(sentinels)
        started = time.monotonic()
        report: dict[str, Any] = {
            "load_average_at_start": os.getloadavg(),
            "server": redis_server.server_version(executable),
            "payload_bytes": len(json.dumps(payload, separators=(",", ":"))),
            "anonymous": anonymous(
                engines, payload, rounds=3 if quick else 31, target_ms=2 if quick else 20
            ),
            "waited": waited(
                engines,
                payload,
                rounds=3 if quick else 31,
                count=30 if quick else 300,
                servers=servers,
            ),
        }
        pool = engines["sentinel"].store.client.connection_pool
        report["sentinel_asked"] = {
            "commands_at_the_sentinels": _sentinel_commands(sentinels) - asked_before,
            "seconds": time.monotonic() - started,
            "connections_of_the_sentinel_pool": len(pool._available_connections)
            + len(pool._in_use_connections),
            "replicas_connected": sentinels.role(sentinels.replica) == "slave",
        }
        report["load_average_at_end"] = os.getloadavg()
    finally:
        for engine in engines.values():
            engine.close()
        sentinels.stop()
        plain.stop()
    return report


def table(report: dict[str, Any]) -> list[str]:
    lines = [
        f"| operation ({report['payload_bytes']} B) | plain, no replica (µs) | primary at its own "
        "URL (µs) | through Sentinel (µs) | Sentinel itself: through Sentinel / the same primary "
        f"at its own URL (target ≤ {TARGET:.2f}x) | the replica on this machine: through Sentinel "
        "/ plain, no replica | primary at its own URL / plain, no replica |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload, figures in report["anonymous"].items():
        cells = [
            f"{figures[name]['median']:.1f} ({figures[name]['min']:.1f}-{figures[name]['max']:.1f})"
            for name in ("plain", "primary, plain URL", "sentinel")
        ]
        ratios = figures["ratios"]
        itself = ratios[" / ".join(SENTINEL_ITSELF)]
        verdict = "within" if itself <= TARGET else "NOT within"
        lines.append(
            f"| {workload} | {' | '.join(cells)} | **{itself:.3f}x** ({verdict}) | "
            f"{ratios['sentinel / plain']:.3f}x | {ratios['primary, plain URL / plain']:.3f}x |"
        )
    lines += [
        "",
        "| operation | plain (µs) | Sentinel, WAIT (µs) | Sentinel, no WAIT (µs) | WAITs per "
        "op (plain / WAIT / no WAIT) | the wait (µs) | Sentinel / plain | Sentinel no WAIT / "
        "plain | WAIT / no WAIT |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, figures in report["waited"].items():
        waits = figures["waits_per_operation"]
        ratios = figures["ratios"]
        lines.append(
            f"| {workload} | "
            + " | ".join(f"{figures[name]['median']:.1f}" for name in WAITED_ENGINES)
            + " | "
            + " / ".join(f"{waits[name]:.2f}" for name in WAITED_ENGINES)
            + f" | {figures['wait_us']:.1f} | **{ratios['sentinel / plain']:.3f}x** | "
            f"{ratios['sentinel, no wait / plain']:.3f}x | "
            f"**{ratios['sentinel / sentinel, no wait']:.3f}x** |"
        )
    asked = report["sentinel_asked"]
    loads = [report.get(f"load_average_at_{when}") for when in ("start", "end")]
    if all(loads):
        lines.append(
            "\nLoad average (1, 5, 15 min) at the start: "
            + ", ".join(f"{x:.2f}" for x in loads[0])
            + "; at the end: "
            + ", ".join(f"{x:.2f}" for x in loads[1])
            + "."
        )
    lines.append(
        f"\nThe sentinels processed {asked['commands_at_the_sentinels']} commands in "
        f"{asked['seconds']:.0f} s of benchmark (their own PINGs included); the Sentinel store's "
        f"pool held {asked['connections_of_the_sentinel_pool']} connection(s)."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sentinel", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--json-line", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    report: dict[str, Any] = {"started": time.time(), "quick": args.quick}
    report.update(run(args.quick))
    print("\n".join(table(report)), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), **report}, indent=1))
    if args.json_line:  # for python -m benchmarks, which reads the last line
        print(json.dumps(report))


if __name__ == "__main__":
    main()
