"""Sizes: the setting parser, and accounted bytes held to asizeof and tracemalloc."""

from __future__ import annotations

import gc
import random
import tracemalloc

import pytest
from pympler import asizeof

from django_memsession.sizing import format_size, parse_size
from django_memsession.store import Limits, MemoryStore


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512K", 512 * 1024),
        ("512k", 512 * 1024),
        ("4M", 4 * 1024**2),
        ("64MB", 64 * 1024**2),
        ("64MiB", 64 * 1024**2),
        ("64mib", 64 * 1024**2),
        ("1G", 1024**3),
        ("1.5G", int(1.5 * 1024**3)),
        ("1048576", 1048576),
        ("100B", 100),
        (" 2 M ", 2 * 1024**2),
        (4096, 4096),
    ],
)
def test_parse_size_accepts(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", "M", "64X", "-1M", "0", 0, -1, "1..5G", True, None, [], "1e6"]
)
def test_parse_size_rejects_with_a_hint(text):
    with pytest.raises(ValueError, match="'64M'"):
        parse_size(text)


def test_format_size_is_binary():
    assert format_size(64 * 1024**2) == "64.0 MiB"
    assert format_size(100) == "100 B"


def _random_payload(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([0, 1, 7, 60, 300, 1000, 9000]))


def test_entry_size_matches_asizeof_of_key_and_value(sizer):
    rng = random.Random(7)
    for _ in range(200):
        key = "k" * rng.choice([8, 32, 40, 64])
        value = _random_payload(rng)
        expected = asizeof.asizeof(key) + asizeof.asizeof(value)
        assert sizer.entry(len(key), len(value)) - sizer.slot_size == expected


def test_container_share_is_what_asizeof_charges_for_the_container(sizer):
    from collections import OrderedDict

    # A hash table's share per slot swings with its fill (it doubles when full), so compare the
    # mean over fills spread across more than one doubling.
    shares = []
    for count in range(2000, 9000, 700):
        container = OrderedDict((f"{n:032d}", b"v" * (n % 300)) for n in range(count))
        items = asizeof.asizeof(*container.keys(), *container.values())
        shares.append((asizeof.asizeof(container) - items) / count)
    mean = sum(shares) / len(shares)
    assert abs(mean - sizer.slot_size) <= 0.10 * sizer.slot_size


def _filled(count: int, sizer, seed: int) -> MemoryStore:
    store = MemoryStore(Limits(1 << 40, 1 << 30, 0.75), sizer=sizer)
    rng = random.Random(seed)
    for n in range(count):
        store.put(
            f"{n:032d}",
            _random_payload(rng),
            store.clock() + 3600,
            authenticated=n % 3 == 0,
            create=True,
        )
    return store


@pytest.mark.parametrize(
    "count",
    [
        1_000,
        pytest.param(10_000, marks=pytest.mark.heavy),
        pytest.param(60_000, marks=pytest.mark.heavy),
    ],
)
def test_accounted_bytes_are_within_10_percent_of_asizeof(count, sizer):
    store = _filled(count, sizer, seed=count)
    measured = asizeof.asizeof(store._policy.segments)
    accounted = store.stats()["bytes"]
    assert abs(accounted - measured) <= 0.10 * measured


@pytest.mark.parametrize(
    "count",
    [
        1_000,
        pytest.param(10_000, marks=pytest.mark.heavy),
        pytest.param(60_000, marks=pytest.mark.heavy),
    ],
)
def test_accounted_bytes_are_within_10_percent_of_tracemalloc(count, sizer):
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = _filled(count, sizer, seed=count)
        gc.collect()
        measured = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    accounted = store.stats()["bytes"]
    assert abs(accounted - measured) <= 0.10 * measured, (accounted, measured)
