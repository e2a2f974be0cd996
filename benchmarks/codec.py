"""Micro-benchmark: µs per dumps + loads of realistic sessions, for each codec.

    python benchmarks/codec.py [--repeat 30]

Sessions hold Django's auth keys and a cart of small dicts, grown to about 100 B, 300 B, 1 KB
and 10 KB of JSON. Each figure is the best of ``--repeat`` short batches (an idle machine still
gives steadier figures). pickle is there for scale: Django's cache engine pays it.
"""

from __future__ import annotations

import argparse
import functools
import math
import pickle
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.core import signing

from django_memsession import serializers

SIZES = {"100 B": 100, "300 B": 300, "1 KB": 1_000, "10 KB": 10_000}

AUTH_KEYS = {
    "_auth_user_id": "42",
    "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
    "_auth_user_hash": "0f3b5c1d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c",
}


def make_session(target_bytes: int) -> dict[str, Any]:
    """Auth keys (only the user id below 300 B) and a cart grown to ``target_bytes`` of JSON."""
    session: dict[str, Any] = dict(AUTH_KEYS) if target_bytes >= 300 else {"_auth_user_id": "42"}
    cart: list[dict[str, Any]] = []
    session["cart"] = cart
    while json_size(session) < target_bytes:
        n = len(cart)
        cart.append(
            {"id": 10_000 + n, "sku": f"SKU-{n:05}", "name": f"Widget {n}", "qty": n % 3 + 1}
        )
    size_with_last = json_size(session)
    last = cart.pop()
    if target_bytes - json_size(session) > size_with_last - target_bytes:
        cart.append(last)  # closer to the target with it than without
    return session


def json_size(session: dict[str, Any]) -> int:
    return len(signing.JSONSerializer().dumps(session))


class PickleCodec:
    def dumps(self, session_dict: dict[str, Any]) -> bytes:
        return pickle.dumps(session_dict, pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> dict[str, Any]:
        return pickle.loads(data)


def codecs() -> dict[str, Any]:
    found: dict[str, Any] = {
        "Django JSONSerializer": signing.JSONSerializer(),
        "ours, stdlib": serializers.StdlibJSONCodec(),
    }
    if serializers.orjson is not None:
        found[f"ours, orjson {serializers.orjson.__version__}"] = serializers.OrjsonJSONCodec()
    found["pickle"] = PickleCodec()
    return found


def batch_sizes(cycles: dict[tuple[str, str], Callable[[], object]]) -> dict[tuple[str, str], int]:
    """Calls per batch: about 20 ms each."""
    return {key: max(1, timeit.Timer(cycle).autorange()[0] // 10) for key, cycle in cycles.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    sessions = {label: make_session(size) for label, size in SIZES.items()}
    cycles: dict[tuple[str, str], Callable[[], object]] = {}
    for name, codec in codecs().items():
        for label, session in sessions.items():
            assert codec.loads(codec.dumps(session)) == session, name
            cycles[name, label] = functools.partial(round_trip, codec, session)

    # Round after round, every cycle gets one batch, keeping its best: on a shared machine noise
    # only ever adds time, and interleaving spreads it evenly over the codecs.
    numbers = batch_sizes(cycles)
    best = dict.fromkeys(cycles, math.inf)
    for _ in range(args.repeat):
        for key, cycle in cycles.items():
            seconds = timeit.timeit(cycle, number=numbers[key])
            best[key] = min(best[key], seconds / numbers[key] * 1e6)

    sizes = {label: json_size(session) for label, session in sessions.items()}
    print(f"Python {sys.version.split()[0]}; µs per dumps + loads (best of {args.repeat} batches)")
    print("JSON sizes: " + ", ".join(f"{label} = {size} B" for label, size in sizes.items()))
    print(f"{'codec':<28}" + "".join(f"{label:>16}" for label in SIZES))
    names = dict.fromkeys(name for name, _ in cycles)
    baseline = next(iter(names))
    for name in names:
        cells = [
            f"{best[name, label]:8.2f} ({best[name, label] / best[baseline, label]:4.2f}x)"
            for label in SIZES
        ]
        print(f"{name:<28}" + "".join(f"{cell:>16}" for cell in cells))
    print(f"(ratio: to {baseline})")


def round_trip(codec: Any, session: dict[str, Any]) -> object:
    return codec.loads(codec.dumps(session))


if __name__ == "__main__":
    main()
