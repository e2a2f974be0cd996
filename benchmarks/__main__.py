"""Run the benchmark suite and print its tables: ``python -m benchmarks [--quick] [--json PATH]``.

Everything is compared within one run (absolute times drift on shared machines): the engine
micro-benchmarks interleave engines round by round; the scale measures run each in a fresh
process; the HTTP runs follow each other on the same machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import against as against_module
from . import (
    cluster,
    engines,
    http,
    redis_engines,
    redis_http,
    redis_latency,
    redis_users,
    sentinel,
)
from .common import REPO_ROOT, machine, setup_django

TARGETS = {
    "create": (0.25, 2.0),
    "cycle": (0.5, 1.5),
    "load": (0.5, 1.5),
    "cycle 1 KB": (1.0, None),
    "cycle 10 KB": (1.0, None),
}


def _scale(measure: str, *args: str, quick: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.scale", measure, *args]
    if quick:
        command.append("--quick")
    output = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _engine_table(results: dict[str, Any]) -> list[str]:
    names = ["memsession", "locmem", "floor", "signed_cookies", "file", "db"]
    lines = [
        "| workload | " + " | ".join(names) + " | memsession / LocMem | memsession / floor |",
        "|---" * (len(names) + 3) + "|",
    ]
    for workload, figures in results.items():
        cells = []
        for name in names:
            f = figures[name]
            cells.append(f"{f['median']:.1f} ({f['min']:.1f}-{f['max']:.1f})")
        ours = figures["memsession"]["median"]
        vs_locmem = ours / figures["locmem"]["median"]
        vs_floor = ours / figures["floor"]["median"]
        lines.append(
            f"| {workload} ({figures['payload_bytes']} B) | "
            + " | ".join(cells)
            + f" | {vs_locmem:.2f}x | {vs_floor:.2f}x |"
        )
    return lines


def _scale_lines(scale: dict[str, Any]) -> list[str]:
    save, prune, memory = scale["save"], scale["prune"], scale["memory"]
    mem, locmem, bare = memory["memsession"], memory["locmem"], memory["dict"]
    lines = [
        "| measure | figure | target |",
        "|---|---|---|",
        f"| load-modify-save with {save['stored']['1M']:,} stored vs 1,000 stored | "
        f"{save['1M']['median']:.1f} vs {save['1k']['median']:.1f} µs: "
        f"**{save['ratio']:.2f}x** | ≤ 1.2x |",
        f"| prune {prune['expired']:,} expired sessions | "
        f"**{prune['sessions_per_second'] / 1000:,.0f}k sessions/s** "
        f"({prune['seconds']:.2f} s) | ≥ 500k/s |",
        f"| longest lock hold during that prune (chunks of {prune['chunk_size']}) | "
        f"{prune['longest_lock_hold_ms']:.1f} ms | bounded by the chunk |",
        f"| a concurrent request's wait during that prune, p50 / p99 / max | "
        f"{prune['request_wait_ms']['p50']:.3f} / **{prune['request_wait_ms']['p99']:.3f}** / "
        f"{prune['request_wait_ms']['max']:.3f} ms | p99 ≤ 5 ms |",
        f"| RSS per stored 300 B session: memsession / LocMem / bare dict of JSON | "
        f"**{mem['rss_per_session']:.0f}** / {locmem['rss_per_session']:.0f} / "
        f"{bare['rss_per_session']:.0f} B "
        f"({mem['rss_per_session'] / locmem['rss_per_session']:.2f}x LocMem) "
        "| ≤ 643 B (stretch ≤ 560 B) |",
        f"| tracemalloc per session: memsession / LocMem / bare dict | "
        f"{mem['tracemalloc_per_session']:.0f} / {locmem['tracemalloc_per_session']:.0f} / "
        f"{bare['tracemalloc_per_session']:.0f} B | |",
        f"| accounted bytes vs tracemalloc | **{mem['accounted_vs_tracemalloc']:.3f}x** | "
        "within ±10 % |",
    ]
    for label, flood in scale["flood"].items():
        lines.append(
            f"| flood of {flood['created']:,} new sessions into {flood['budget'] >> 20} MiB, "
            f"{label}: highest accounted bytes / budget; peak RSS growth / budget | "
            f"{flood['max_accounted'] / flood['budget']:.4f}; "
            f"**{flood['peak_rss_growth_vs_budget']:.2f}x** | ≤ 1; ≤ 1.3x |"
        )
    snap = scale.get("snapshot")
    if snap:
        waits, cycle = snap["request_wait_ms"], snap["cycle"]
        lines += [
            f"| snapshot of {snap['sessions']:,} sessions vs creating them | "
            f"{snap['snapshot_seconds']:.2f} vs {snap['create_seconds']:.2f} s: "
            f"**{snap['snapshot_vs_create']:.2f}x** | ≤ 0.3x |",
            f"| a concurrent request's wait during that snapshot, p50 / p99 / max | "
            f"{waits['p50']:.3f} / **{waits['p99']:.3f}** / **{waits['max']:.3f}** ms "
            "| p99 ≤ 5 ms, max ≤ 20 ms |",
            f"| restore of that file at start vs creating them | "
            f"{snap['restore_seconds']:.2f} s: **{snap['restore_vs_create']:.2f}x**; accounted "
            f"bytes {'=' if snap['restored_accounting_equals_asizeof'] else '≠'} asizeof "
            "| ≤ 0.3x; = |",
            f"| snapshot file size vs the store's accounted bytes | "
            f"**{snap['file_vs_accounted']:.2f}x** | ≤ 1.2x |",
            f"| load-modify-save with snapshots on vs off (journaled once per snapshot) | "
            f"{cycle['on']['median']:.1f} vs {cycle['off']['median']:.1f} µs: "
            f"**{cycle['steady_ratio']:.2f}x** | ≤ 1.1x |",
            f"| the first save of a session after a snapshot began (one journal write) | "
            f"{cycle['on first']['median']:.1f} vs {cycle['off first']['median']:.1f} µs: "
            f"{cycle['first_write_ratio']:.2f}x | |",
        ]
    return lines


def _users(quick: bool, module: str = "benchmarks.users") -> dict[str, Any]:
    command = [sys.executable, "-m", module, *(["--quick"] if quick else [])]
    output = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _against(quick: bool) -> dict[str, Any]:
    """The engine against itself before the user index (benchmarks/against.py); needs git and
    this checkout's history."""
    command = [sys.executable, "-m", "benchmarks.against", *(["--quick"] if quick else [])]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return {"skipped": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sentinel(quick: bool, module: str = "benchmarks.sentinel") -> dict[str, Any]:
    """benchmarks/sentinel.py (or ``module``: benchmarks/cluster.py) in a fresh process: it
    starts its own servers and configures Django for them."""
    command = [sys.executable, "-m", module, "--json-line"]
    command += ["--quick"] if quick else []
    output = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _users_lines(users: dict[str, Any]) -> list[str]:
    cycle, memory, lookup = users["load_modify_save"], users["memory"], users["user_sessions"]
    per_call = lookup["us_per_call"]
    lines = ["| measure | figure | target |", "|---|---|---|"]
    against = users.get("against", {})
    if "skipped" in against:
        lines.append(f"| against the engine before the index | skipped: {against['skipped']} | |")
    elif against:
        for operation in against_module.OPERATIONS:
            figures = against[operation]
            target = "≤ 1.05x" if operation == "load-modify-save logged in" else ""
            lines.append(
                f"| {operation}, this vs {against['rev'][:7]} (before the index) | "
                f"{figures['this_us']:.2f} vs {figures['rev_us']:.2f} µs: "
                f"**{figures['ratio']:.3f}x** (median of {against['pairs']} process pairs) "
                f"| {target} |"
            )
    for clock, label in (
        ("real clock", "real clock"),
        ("every load a new second", "every load notes a new second (worst case)"),
    ):
        figures = cycle[clock]
        lines.append(
            f"| load-modify-save, logged in vs anonymous ({cycle['payload_bytes']} B), {label} | "
            f"{figures['logged in']['median']:.1f} vs {figures['anonymous']['median']:.1f} µs: "
            f"**{figures['ratio']:.3f}x** (median of paired rounds; what a logged-in "
            "session's facts add) | |"
        )
    lines += [
        f"| memory per logged-in session, one per user ({memory['sessions']:,}): index + facts "
        f"| {memory['index_per_session']:.1f} + {memory['facts_per_session']:.1f} = "
        f"**{memory['per_logged_in_session']:.1f} B** | ≤ 160 B |",
        "| index memory of anonymous sessions | "
        f"{memory['anonymous_index_bytes_growth']} B | 0 B |",
        f"| a user's {lookup['sessions_per_user']} sessions as records, {lookup['sessions']:,} "
        f"sessions of {lookup['users']:,} users: store vs plain dict + records | "
        f"{per_call['store 1M']['median']:.1f} vs {per_call['plain dict']['median']:.1f} µs: "
        f"**{lookup['vs_plain_dict']:.2f}x** | ≤ 2x |",
        f"| the same in a store of 10,000 sessions (O(their sessions), not of the store) | "
        f"{per_call['store 10k']['median']:.1f} µs: {lookup['vs_small_store']:.2f}x | ≈ 1x |",
    ]
    return lines


def _http_lines(results: dict[str, Any], unit: str) -> list[str]:
    if "skipped" in results:
        return [f"skipped: {results['skipped']}"]
    lines = [
        f"| workload ({unit}) | memsession | LocMem | db | memsession / LocMem | memsession / db |",
        "|---|---|---|---|---|---|",
    ]
    for workload in results["memsession"]:
        ours, locmem, db = (results[e][workload]["median"] for e in ("memsession", "locmem", "db"))
        lines.append(
            f"| {workload} | {ours:.0f} | {locmem:.0f} | {db:.0f} | "
            f"**{ours / locmem:.2f}x** | **{ours / db:.2f}x** |"
        )
    return lines


# The parts of the suite, in the order a full run takes them.
PARTS = (
    "engines",
    "scale",
    "users",
    "http",
    "redis",
    "redis-http",
    "redis-latency",
    "redis-users",
    "redis-sentinel",
    "redis-cluster",
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only these parts (repeatable)",
    )
    args = parser.parse_args()
    parts = args.only or list(PARTS)
    # redis-sentinel and redis-cluster start their own servers, in their own processes.
    own_servers = ("redis-sentinel", "redis-cluster")
    uses_redis = any(part.startswith("redis") and part not in own_servers for part in parts)
    redis_server = redis_engines.RedisServer() if uses_redis else None
    setup_django(**(redis_engines.settings(redis_server.url) if redis_server else {}))
    report: dict[str, Any] = {"machine": machine(), "quick": args.quick, "started": time.time()}
    if "engines" in parts:
        print("engines (µs per operation, median (min-max) over interleaved rounds)", flush=True)
        report["engines"] = engines.run(
            rounds=3 if args.quick else 15, target_ms=2 if args.quick else 20, quick=args.quick
        )
        print("\n".join(_engine_table(report["engines"])), flush=True)
    if "scale" in parts:
        print("scale", flush=True)
        report["scale"] = {
            "save": _scale("save", quick=args.quick),
            "prune": _scale("prune", quick=args.quick),
            "snapshot": _scale("snapshot", quick=args.quick),
            "flood": {
                "request path only": _scale("flood", "0", quick=args.quick),
                "pruner pass every 100k": _scale("flood", "100000", quick=args.quick),
            },
            "memory": {
                engine: {
                    **_scale("memory", engine, "rss", quick=args.quick),
                    **_scale("memory", engine, "tracemalloc", quick=args.quick),
                }
                for engine in ("memsession", "locmem", "dict")
            },
        }
        print("\n".join(_scale_lines(report["scale"])), flush=True)
    if "users" in parts:
        print("users: who is logged in (a fresh process; same-run ratios)", flush=True)
        report["users"] = _users(args.quick)
        report["users"]["against"] = _against(args.quick)
        print("\n".join(_users_lines(report["users"])), flush=True)
    if "redis-users" in parts:
        print(
            "redis-users: who is logged in on the Redis engine (a fresh process and its own "
            "redis-server; same-run ratios)",
            flush=True,
        )
        report["redis_users"] = _users(args.quick, "benchmarks.redis_users")
        print("\n".join(redis_users.table(report["redis_users"])), flush=True)
    if "redis-sentinel" in parts:
        print(
            "redis-sentinel: the Redis engine through Sentinel (a primary, a replica, three "
            "sentinels) against one plain server (a fresh process, its own servers; paired "
            "rounds, µs per operation)",
            flush=True,
        )
        report["redis_sentinel"] = _sentinel(args.quick)
        print("\n".join(sentinel.table(report["redis_sentinel"])), flush=True)
    if "redis-cluster" in parts:
        print(
            "redis-cluster: the Redis engine on a six-node Redis Cluster (three primaries, a "
            "replica each) against one server, and one server with a replica (a fresh process, "
            "its own servers; paired rounds, µs per operation)",
            flush=True,
        )
        report["redis_cluster"] = _sentinel(args.quick, "benchmarks.cluster")
        print("\n".join(cluster.table(report["redis_cluster"])), flush=True)
    if "http" in parts:
        print("http: gunicorn and wrk on 127.0.0.1, median over interleaved rounds", flush=True)
        report["http"] = http.run(args.quick)
        print("\n".join(_http_lines(report["http"], "requests/s")), flush=True)
        print("Django's WSGI handler in process, no network", flush=True)
        report["handler"] = http.handler_costs(args.quick)
        print("\n".join(_http_lines(report["handler"], "µs per request")), flush=True)
    try:
        if "redis" in parts:
            assert redis_server is not None
            print(
                "redis: engines on one loopback redis-server (µs per operation, median "
                "(min-max) over interleaved rounds)",
                flush=True,
            )
            report["redis"] = redis_engines.run(
                redis_server.url,
                rounds=3 if args.quick else 15,
                target_ms=2 if args.quick else 20,
                quick=args.quick,
            )
            print("\n".join(redis_engines.table(report["redis"])), flush=True)
        if "redis-http" in parts:
            assert redis_server is not None
            print(
                "redis-http: gunicorn (2 workers x 4 threads) and wrk on 127.0.0.1, one "
                "redis-server, median over interleaved rounds",
                flush=True,
            )
            report["redis_http"] = redis_http.run(redis_server.url, args.quick)
            print("\n".join(redis_http.table(report["redis_http"])), flush=True)
        if "redis-latency" in parts:
            print(
                "redis-latency: the Redis engine with its figures (round trips timed, loads "
                "counted) and without, interleaved rounds, same run",
                flush=True,
            )
            report["redis_latency"] = redis_latency.run(
                rounds=3 if args.quick else 21,
                target_ms=2 if args.quick else 20,
                quick=args.quick,
            )
            print("\n".join(redis_latency.table(report["redis_latency"])), flush=True)
    finally:
        if redis_server is not None:
            redis_server.stop()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
