"""Sizes: the setting parser, and accounted bytes held to asizeof and tracemalloc."""

from __future__ import annotations

import gc
import random
import time
import tracemalloc
from collections import OrderedDict

import pytest
from pympler import asizeof
from userindex import index_problems

from django_memsession.memory.store import Limits, MemoryStore
from django_memsession.sizing import ODICT_NODE_SIZE, format_size, parse_size, table_size


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


def test_entry_size_is_asizeof_of_key_and_value_plus_one_list_node(sizer):
    rng = random.Random(7)
    for _ in range(200):
        key = "k" * rng.choice([8, 32, 40, 64])
        value = _random_payload(rng)
        expected = asizeof.asizeof(key) + asizeof.asizeof(value) + sizer.node_size
        assert sizer.entry(len(key), len(value)) == expected


def _churned(count: int) -> OrderedDict[str, bytes]:
    """A container after ``count`` new keys went in and the oldest went out, many times over."""
    container: OrderedDict[str, bytes] = OrderedDict()
    for n in range(count * 7):
        container[f"{n:032d}"] = b"v"
        if len(container) > count:
            container.popitem(last=False)
    return container


@pytest.mark.parametrize("count", [0, 1, 5, 6, 1000, 1365, 1366, 5000])
def test_table_size_and_one_node_per_entry_are_what_asizeof_charges_the_container(count):
    grown = OrderedDict((f"{n:032d}", b"v") for n in range(count))
    for container in (grown, _churned(count)):
        expected = asizeof.flatsize(container)
        assert table_size(container) + len(container) * ODICT_NODE_SIZE == expected


def _filled(count: int, sizer, seed: int, clock=None) -> MemoryStore:
    store = MemoryStore(Limits(1 << 40, 1 << 30, 0.75), sizer=sizer, clock=clock or time.time)
    rng = random.Random(seed)
    for n in range(count):
        store.put(
            f"{n:032d}",
            _random_payload(rng),
            store.clock() + 3600,
            authenticated=n % 3 == 0,
            create=True,
            user=str(n % 7) if n % 3 == 0 else None,  # users with several sessions
        )
    return store


def _asizeof_store(store: MemoryStore) -> int:
    """pympler's measure of everything the store holds: containers, keys, values, expiries,
    and the user index (whose keys are the very objects the sessions' tables hold)."""
    return asizeof.asizeof(*store.containers())


@pytest.mark.parametrize(
    "count",
    [
        1_000,
        pytest.param(10_000, marks=pytest.mark.heavy),
        pytest.param(60_000, marks=pytest.mark.heavy),
    ],
)
def test_accounted_bytes_are_asizeof_of_the_store(count, sizer):
    store = _filled(count, sizer, seed=count)
    assert store.stats()["bytes"] == _asizeof_store(store)


def test_accounted_bytes_stay_asizeof_of_the_store_through_churn(sizer, clock):
    """Creates, updates, promotions, deletes, expiry, evictions, remembered keys, a prune walk
    and a shrink: after each phase the running total is still exactly what asizeof measures."""
    store = _filled(3000, sizer, seed=1, clock=clock)
    rng = random.Random(2)
    store.reconfigure(
        Limits(max_bytes=store.stats()["bytes"], max_session_bytes=1 << 20, low_water=0.5)
    )
    for n in range(3000, 9000):  # a flood into a full store: evictions, remembered keys
        key = f"{n:032d}"
        store.put(
            key,
            _random_payload(rng),
            clock() + rng.choice([5, 3600]),
            authenticated=False,
            create=True,
        )
        if n % 3 == 0:
            store.get(key)  # promoted to the returning segment
        if n % 7 == 0:
            store.delete(f"{n - 5:032d}")
    assert store.stats()["evictions"] > 0 and store.stats()["remembered"] > 0
    assert store.stats()["bytes"] == _asizeof_store(store)
    clock.advance(10)
    store.prune_expired(chunk_size=100)
    assert store.stats()["expired"] > 0
    assert store.stats()["bytes"] == _asizeof_store(store)
    store.shrink(chunk_size=100)
    assert store.stats()["bytes"] == _asizeof_store(store)


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


def test_accounted_bytes_stay_asizeof_of_the_store_through_repeated_prunes(sizer, clock):
    """Each pass turns the queue of remembered keys once (taking each key that is still
    restorable and putting it back), which fills the table's free slots until it is rebuilt,
    to the size the keys then need: here smaller, as most of them were deleted (logouts)."""
    store = MemoryStore(Limits(512 * 1024, 4 * 1024, 0.75), sizer=sizer, clock=clock)
    for n in range(5000):
        store.put(f"{n:032d}", b"v" * 100, clock() + 3600, authenticated=False, create=True)
    remembered = list(store._remembered.keys)
    for key in remembered[: len(remembered) * 9 // 10]:
        store.delete(key)
    table = table_size(store._remembered.keys)
    for _ in range(40):
        store.prune_expired()
        assert store.stats()["bytes"] == _asizeof_store(store)
        assert store.stats()["remembered_bytes"] <= store.limits.remember_bytes
    assert table_size(store._remembered.keys) < table


def test_accounted_bytes_stay_asizeof_of_the_store_with_the_user_index(sizer, clock):
    """Logins, saves, loads (last use noted), another user on a key, logouts, per-user and
    per-store limits, evictions, expiry in a walk, a restore: the index (user ids, sets of
    keys, its table) stays counted exactly, and shares the sessions' key objects."""
    store = MemoryStore(
        Limits(96 * 1024, 8 * 1024, 0.75, max_sessions=400, max_sessions_per_user=3),
        sizer=sizer,
        clock=clock,
    )
    rng = random.Random(3)
    keys: list[str] = []
    for n in range(3000):
        key = f"{n:032d}"
        user = str(rng.randrange(60)) if rng.random() < 0.6 else None
        store.put(
            key,
            _random_payload(rng)[:500],
            clock() + rng.choice([5, 3600]),
            authenticated=user is not None,
            create=True,
            user=user,
        )
        keys.append(key)
        other = rng.choice(keys)
        action = rng.random()
        if action < 0.3:
            store.get(other)
        elif action < 0.5:
            new_user = str(rng.randrange(60)) if rng.random() < 0.8 else None
            store.put(
                other,
                b"v" * rng.randrange(200),
                clock() + 3600,
                authenticated=new_user is not None,
                create=False,
                user=new_user,
            )
        elif action < 0.55:
            store.delete(other)
        if n % 500 == 0:
            clock.advance(1)
    figures = store.stats()
    assert figures["users"] > 0 and figures["evictions"] > 0
    assert figures["bytes"] == _asizeof_store(store) == store.accounted_bytes()
    assert index_problems(store) == []
    clock.advance(10)
    store.prune_expired(chunk_size=50)
    assert store.stats()["bytes"] == _asizeof_store(store)
    assert index_problems(store) == []
    copied = [record for chunk in store.copy_chunks(chunk_size=50) for record in chunk]
    store.clear()
    store.restore(copied)
    assert store.stats()["bytes"] == _asizeof_store(store)
    assert index_problems(store) == []


def test_the_index_costs_an_anonymous_session_nothing(sizer, clock):
    store = MemoryStore(Limits(1 << 30, 1 << 20, 0.75), sizer=sizer, clock=clock)
    empty = store.stats()["user_index_bytes"]
    for n in range(1000):
        store.put(f"{n:032d}", b"x" * 300, clock() + 60, authenticated=False, create=True)
    assert store.stats()["user_index_bytes"] == empty
    assert store.stats()["bytes"] == _asizeof_store(store)
