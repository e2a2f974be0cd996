"""The memory store on its own: budget, recency, expiry, eviction, remembered keys, accounting.

Time is a fake clock; nothing sleeps.
"""

from __future__ import annotations

import pytest

from django_memsession.memory.store import HEADER_SIZE, EntryTooLarge, PutResult, StoreEvent

DAY = 86400.0


def key(n: int) -> str:
    return f"{n:032d}"


def put(store, k: str, payload: bytes = b"x" * 100, ttl: float = DAY, **kw) -> PutResult:
    kw.setdefault("authenticated", False)
    kw.setdefault("create", True)
    return store.put(k, payload, store.clock() + ttl, **kw)


def fill(store, count: int, start: int = 0, **kw) -> None:
    for n in range(start, start + count):
        assert put(store, key(n), **kw) is PutResult.STORED


def capacity(make_store, authenticated: bool = False, **limits) -> int:
    """How many ``put`` sessions a fresh store with these limits holds before its first eviction
    (the tables of the containers count too, so this is found by filling, not by dividing).
    A logged-in session's value carries its facts: fewer of them fit."""
    probe = make_store(**limits)
    count = 0
    while probe.stats()["evictions"] == 0:
        put(probe, key(count), authenticated=authenticated)
        count += 1
    return count - 1


def test_put_then_get_returns_the_payload(make_store):
    store = make_store()
    put(store, key(1), b'{"a":1}')
    assert store.get(key(1)) == b'{"a":1}'


def test_get_of_unknown_key_is_none_and_counts_a_miss(make_store):
    store = make_store()
    assert store.get(key(1)) is None
    assert store.stats()["misses"] == 1


def test_create_of_a_live_key_reports_exists_and_keeps_the_data(make_store):
    store = make_store()
    put(store, key(1), b"first")
    assert put(store, key(1), b"second") is PutResult.EXISTS
    assert store.get(key(1)) == b"first"


def test_update_of_an_unknown_key_reports_missing_and_stores_nothing(make_store):
    store = make_store()
    assert put(store, key(1), create=False) is PutResult.MISSING
    assert store.stats()["entries"] == 0


def test_expired_session_is_never_returned(make_store, clock):
    store = make_store()
    put(store, key(1), ttl=10)
    clock.advance(10)
    assert store.get(key(1)) is None
    assert store.stats()["expired"] == 1
    assert (store.stats()["entries"], store.stats()["bytes"]) == (0, store.accounted_bytes())


def test_exists_is_false_once_expired(make_store, clock):
    store = make_store()
    put(store, key(1), ttl=10)
    assert store.exists(key(1))
    clock.advance(11)
    assert not store.exists(key(1))


def test_update_of_an_expired_key_is_missing(make_store, clock):
    store = make_store()
    put(store, key(1), ttl=10)
    clock.advance(11)
    assert put(store, key(1), create=False) is PutResult.MISSING


def test_create_over_an_expired_key_not_yet_pruned_fails_as_with_the_db_engine(make_store, clock):
    """Django's db engine keeps an expired row until clearsessions: a create of its key is an
    IntegrityError there, a CreateError for the engine (which then picks another key)."""
    store = make_store()
    put(store, key(1), b"old", ttl=10)
    clock.advance(11)
    assert put(store, key(1), b"new") is PutResult.EXISTS
    assert store.get(key(1)) is None


def test_create_over_an_expired_key_succeeds_once_it_is_pruned(make_store, clock):
    store = make_store()
    put(store, key(1), b"old", ttl=10)
    clock.advance(11)
    store.prune_expired()
    assert put(store, key(1), b"new") is PutResult.STORED
    assert store.get(key(1)) == b"new"


def test_write_over_budget_evicts_least_recently_used(make_store):
    store = make_store(max_bytes=20 * 1024)
    full = capacity(make_store, authenticated=True, max_bytes=20 * 1024)
    fill(store, full, authenticated=True)  # one segment: plain LRU
    store.get(key(0))  # key 0 is now the most recently used
    put(store, key(full), authenticated=True)
    assert store.get(key(0)) is not None
    assert not store.exists(key(1))
    assert store.stats()["evictions"] >= 1


def test_each_write_into_a_full_store_evicts_one_session_of_its_size(make_store):
    # Remembering an evicted key takes room from its own slice of the budget, not from the
    # sessions': otherwise each eviction would free a fraction of what it evicts.
    store = make_store(max_bytes=20 * 1024)
    full = capacity(make_store, max_bytes=20 * 1024)
    fill(store, full + 1)
    evicted = store.stats()["evictions"]
    fill(store, 10, start=full + 1)
    assert store.stats()["evictions"] - evicted == 10
    assert store.stats()["remembered"] > 0


def test_accounted_bytes_never_exceed_the_budget(make_store):
    store = make_store(max_bytes=16 * 1024)
    for n in range(2000):
        put(store, key(n), b"y" * (50 + n % 300))
        assert store.stats()["bytes"] <= store.limits.max_bytes


def test_write_over_budget_removes_expired_entries_before_live_ones(make_store, clock):
    store = make_store(max_bytes=20 * 1024)
    full = capacity(make_store, max_bytes=20 * 1024)
    put(store, key(0), ttl=5)  # coldest, and about to expire
    fill(store, full - 1, start=1)
    clock.advance(6)
    put(store, key(9999))
    stats = store.stats()
    assert stats["expired"] == 1
    assert stats["evictions"] == 0


def test_oversized_entry_is_refused_and_leaves_the_previous_version(make_store):
    store = make_store(max_bytes=64 * 1024, max_session_bytes=1024)
    put(store, key(1), b"small")
    put(store, key(2), b"other")
    with pytest.raises(EntryTooLarge) as excinfo:
        put(store, key(1), b"z" * 2000, create=False)
    assert excinfo.value.limit == 1024
    assert excinfo.value.size > 2000
    assert store.get(key(1)) == b"small"
    assert store.get(key(2)) == b"other"
    assert store.stats()["rejected"] == 1


def test_evicted_key_is_stored_again_by_an_update(make_store):
    store = make_store(max_bytes=20 * 1024)
    fill(store, capacity(make_store, max_bytes=20 * 1024) + 1)
    assert not store.exists(key(0))
    assert put(store, key(0), b"back", create=False) is PutResult.RESTORED
    assert store.get(key(0)) == b"back"


def test_deleted_key_is_never_restored(make_store):
    store = make_store(max_bytes=20 * 1024)
    fill(store, capacity(make_store, max_bytes=20 * 1024) + 1)
    assert store.stats()["remembered"] > 0
    store.delete(key(0))  # logout of a session that had been evicted
    assert put(store, key(0), create=False) is PutResult.MISSING


def test_evicted_key_past_its_expiry_is_not_restored(make_store, clock):
    store = make_store(max_bytes=20 * 1024)
    put(store, key(0), ttl=60)
    fill(store, capacity(make_store, max_bytes=20 * 1024), start=1)
    assert store.stats()["remembered"] > 0
    clock.advance(61)
    assert put(store, key(0), create=False) is PutResult.MISSING


def test_remembered_keys_are_bounded_and_counted(make_store):
    store = make_store(max_bytes=20 * 1024)
    fill(store, 5000)
    stats = store.stats()
    assert 0 < stats["remembered_bytes"] <= store.limits.remember_bytes
    assert stats["bytes"] == store.accounted_bytes()


def test_delete_removes_the_entry_and_frees_exactly_its_bytes(make_store):
    store = make_store()
    put(store, key(1), b"x" * 100)
    stored = store.stats()["bytes"]
    assert store.delete(key(1))
    assert store.get(key(1)) is None
    assert stored - store.stats()["bytes"] == store.sizer.entry(32, HEADER_SIZE + 100)


def test_running_total_equals_a_recount_after_mixed_operations(make_store, clock):
    store = make_store(max_bytes=32 * 1024)
    for n in range(3000):
        k = key(n % 700)
        if n % 7 == 0:
            store.delete(k)
        elif n % 5 == 0:
            store.get(k)
        else:
            put(store, k, b"v" * (n % 500), ttl=1 + n % 50, create=False)
            put(store, k, b"w" * (n % 400), ttl=1 + n % 60)
        clock.advance(0.5)
    assert store.stats()["bytes"] == store.accounted_bytes()


def test_anonymous_flood_does_not_evict_authenticated_sessions(make_store):
    store = make_store(max_bytes=64 * 1024)
    fill(store, 50, authenticated=True)
    fill(store, 5000, start=1000)
    assert all(store.exists(key(n)) for n in range(50))


def test_returning_guest_outlives_a_flood_of_new_sessions(make_store):
    store = make_store(max_bytes=64 * 1024)
    put(store, key(1))
    store.get(key(1))  # the guest came back: promoted out of probation
    fill(store, 5000, start=1000)
    assert store.exists(key(1))


def test_authenticated_sessions_alone_over_budget_evict_their_own_lru(make_store):
    store = make_store(max_bytes=20 * 1024)
    full = capacity(make_store, max_bytes=20 * 1024)
    fill(store, full + 10, authenticated=True)
    assert not store.exists(key(0))
    assert store.exists(key(full + 9))


def test_prune_removes_only_expired_sessions(make_store, clock):
    store = make_store()
    fill(store, 10)
    for n in range(10, 30):
        put(store, key(n), ttl=5)
    clock.advance(6)
    result = store.prune_expired(chunk_size=7)
    assert result.removed == 20
    assert store.stats()["entries"] == 10
    assert store.stats()["bytes"] == store.accounted_bytes()


def test_prune_dry_run_counts_without_removing(make_store, clock):
    store = make_store()
    fill(store, 5, ttl=1)
    clock.advance(2)
    assert store.prune_expired(dry_run=True).removed == 5
    assert store.stats()["entries"] == 5


def test_shrink_brings_the_store_to_the_low_water_mark(make_store):
    store = make_store(max_bytes=40 * 1024, low_water=0.5)
    fill(store, capacity(make_store, max_bytes=40 * 1024, low_water=0.5))
    result = store.shrink(chunk_size=10)
    assert result.evicted > 0
    assert store.stats()["bytes"] <= store.limits.low_water_bytes


@pytest.mark.parametrize("sessions", [1.0, 3.0], ids=["full", "after a flood"])
def test_shrink_dry_run_estimates_what_a_shrink_evicts_and_evicts_nothing(make_store, sessions):
    store = make_store(max_bytes=40 * 1024, low_water=0.5)
    fill(store, int(sessions * capacity(make_store, max_bytes=40 * 1024, low_water=0.5)))
    entries = store.stats()["entries"]
    estimate = store.shrink(dry_run=True)
    assert store.stats()["entries"] == entries
    done = store.shrink()
    assert abs(estimate.evicted - done.evicted) <= 2  # tables that grow are not foreseen
    assert abs(estimate.evicted_bytes - done.evicted_bytes) <= 2 * store.sizer.entry(
        32, HEADER_SIZE + 100
    )


def test_events_are_reported_once_per_batch(make_store):
    store = make_store(max_bytes=20 * 1024)
    received: list[list[StoreEvent]] = []
    store.on_event = received.append
    fill(store, capacity(make_store, max_bytes=20 * 1024))
    put(store, key(99999), b"q" * 1500)  # needs several evictions
    assert len(received) == 1
    (event,) = received[0]
    assert event.kind == "evicted"
    assert event.count > 1


def test_clear_empties_the_store_and_resets_counters(make_store):
    store = make_store()
    fill(store, 3)
    store.get(key(0))
    store.clear()
    stats = store.stats()
    assert (stats["entries"], stats["bytes"], stats["hits"]) == (
        0,
        make_store().stats()["bytes"],
        0,
    )


def test_reconfigure_to_a_smaller_budget_evicts_to_fit(make_store, sizer):
    from django_memsession.memory.store import Limits

    store = make_store(max_bytes=64 * 1024)
    fill(store, 100)
    store.reconfigure(Limits(max_bytes=8 * 1024, max_session_bytes=1024, low_water=0.75))
    assert store.stats()["bytes"] <= 8 * 1024


def test_a_prune_walk_keeps_exact_lru_order_while_requests_touch_entries():
    from django_memsession.memory.lru import AUTHENTICATED, SegmentedLRU

    lru = SegmentedLRU()
    for key in "abcdef":
        lru.put(key, b"v", AUTHENTICATED, None)
    lru.scan(AUTHENTICATED, 2, lambda key, value: key == "b")  # the walk drops b, passes a
    lru.touch("a", AUTHENTICATED)  # a hit on an entry the walk has passed
    lru.touch("d", AUTHENTICATED)  # a hit on one it has not reached
    lru.put("g", b"v", AUTHENTICATED, None)  # a new session during the walk
    while not lru.scan(AUTHENTICATED, 2, lambda key, value: False):
        pass
    assert [key for key, _ in lru.items()] == list("cefadg")
    assert lru.fronts[AUTHENTICATED] == {}


def test_the_victim_during_a_prune_walk_is_still_the_least_recently_used():
    from django_memsession.memory.lru import AUTHENTICATED, SegmentedLRU

    lru = SegmentedLRU()
    for key in "abcd":
        lru.put(key, b"v", AUTHENTICATED, None)
    lru.scan(AUTHENTICATED, 2, lambda key, value: False)  # a, b now in the front
    assert lru.victim(spare=None)[1] == "a"
    lru.touch("a", AUTHENTICATED)
    assert lru.victim(spare=None)[1] == "b"


def test_a_prune_walk_evicts_no_session_to_pay_for_its_passing_second_table(
    make_store, monkeypatch
):
    """A walk moves a segment's entries into a new table, and the old one is freed only when
    the walk is through: writes meanwhile must not evict live sessions for that."""
    from django_memsession.memory import pruning as store_module

    store = make_store(max_bytes=256 * 1024)
    full = capacity(make_store, authenticated=True, max_bytes=256 * 1024)
    fill(store, full, authenticated=True)
    updates = iter(range(full))

    def write_between_chunks(seconds: float) -> None:
        for _ in range(3):  # other requests save their sessions, same size as before
            put(store, key(next(updates)), create=False, authenticated=True)

    monkeypatch.setattr(store_module.time, "sleep", write_between_chunks)
    store.prune_expired(chunk_size=20)
    assert store.stats()["evictions"] == 0
    assert store.stats()["bytes"] == store.accounted_bytes()


def test_a_shrink_under_a_flood_of_writes_ends(make_store, monkeypatch):
    from django_memsession.memory import pruning as store_module

    store = make_store(max_bytes=64 * 1024, low_water=0.5)
    fill(store, capacity(make_store, max_bytes=64 * 1024, low_water=0.5))
    new_keys = iter(range(10_000, 1_000_000))
    calls = []

    def flood_between_chunks(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) > 1000:
            raise AssertionError("the shrink chases the flood for ever")
        for _ in range(30):  # more new sessions than a chunk of 10 evicts
            put(store, key(next(new_keys)))

    monkeypatch.setattr(store_module.time, "sleep", flood_between_chunks)
    entries = store.stats()["entries"]
    result = store.shrink(chunk_size=10)
    assert result.evicted > 0
    assert len(calls) <= entries // 10 + 1  # at most one turn's worth of chunks
