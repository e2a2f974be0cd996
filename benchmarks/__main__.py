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

from . import engines, http
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--only",
        choices=["engines", "scale", "http"],
        action="append",
        help="run only these parts (repeatable)",
    )
    args = parser.parse_args()
    parts = args.only or ["engines", "scale", "http"]
    setup_django()
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
        print(json.dumps(report["scale"], indent=1), flush=True)
    if "http" in parts:
        print("http (requests/s)", flush=True)
        report["http"] = http.run(args.quick)
        print(json.dumps(report["http"], indent=1), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
