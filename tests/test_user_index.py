"""The store's user index and each logged-in session's facts (see django_memsession/users.py).

Time is a fake clock; nothing sleeps.
"""

from __future__ import annotations

from userindex import index_problems

from django_memsession.memory.store import Limits, MemoryStore, PutResult

DAY = 86400.0


def key(n: int) -> str:
    return f"{n:032d}"


def login(store, k: str, user: str = "7", create: bool = True, **kw) -> PutResult:
    return store.put(
        k,
        b'{"_auth_user_id":"%s"}' % user.encode(),
        store.clock() + kw.pop("ttl", DAY),
        authenticated=True,
        create=create,
        user=user,
        **kw,
    )


def anonymous(store, k: str, create: bool = True, ttl: float = DAY) -> PutResult:
    return store.put(k, b"{}", store.clock() + ttl, authenticated=False, create=create)


def listed(store, user: str = "7") -> list[str]:
    return [row.key for row in store.user_sessions(user)]


def test_a_logged_in_session_is_listed_under_its_user(make_store):
    store = make_store()
    login(store, key(1), "7")
    login(store, key(2), "8")
    assert listed(store, "7") == [key(1)]
    assert store.stats()["users"] == 2


def test_an_anonymous_session_is_not_indexed(make_store):
    store = make_store()
    anonymous(store, key(1))
    assert store.stats()["users"] == 0
    assert store.user_sessions("") == []


def test_a_session_that_logs_in_without_a_new_key_is_indexed(make_store):
    store = make_store()
    anonymous(store, key(1))
    login(store, key(1), create=False)
    assert listed(store) == [key(1)]
    assert index_problems(store) == []


def test_logout_without_flush_takes_the_session_out_of_the_index(make_store):
    store = make_store()
    login(store, key(1))
    anonymous(store, key(1), create=False)
    assert listed(store) == [] and store.stats()["users"] == 0


def test_delete_takes_the_session_out_of_the_index(make_store):
    store = make_store()
    login(store, key(1))
    login(store, key(2))
    store.delete(key(1))
    assert listed(store) == [key(2)]
    store.delete(key(2))
    assert store.stats()["users"] == 0


def test_another_user_on_the_same_key_moves_it_between_users(make_store):
    store = make_store()
    login(store, key(1), "7")
    login(store, key(2), "7")
    login(store, key(1), "8", create=False)
    assert (listed(store, "7"), listed(store, "8")) == ([key(2)], [key(1)])
    assert store.stats()["bytes"] == store.accounted_bytes()
    assert index_problems(store) == []


def test_a_session_found_expired_on_load_leaves_the_index(make_store, clock):
    store = make_store()
    login(store, key(1), ttl=10)
    clock.advance(10)
    assert store.get(key(1)) is None
    assert store.stats()["users"] == 0


def test_a_prune_walk_takes_expired_sessions_out_of_the_index(make_store, clock):
    store = make_store()
    login(store, key(1), ttl=10)
    login(store, key(2), ttl=100)
    clock.advance(10)
    store.prune_expired(chunk_size=1)
    assert listed(store) == [key(2)]
    assert index_problems(store) == []


def test_expired_sessions_are_not_listed_before_they_are_pruned(make_store, clock):
    store = make_store()
    login(store, key(1), ttl=10)
    clock.advance(10)
    assert listed(store) == []


def test_eviction_takes_sessions_out_of_the_index(make_store):
    store = make_store(max_bytes=64 * 1024)
    for n in range(2000):
        login(store, key(n), str(n % 50))
    assert store.stats()["evictions"] > 0
    assert sum(len(store.user_sessions(str(u))) for u in range(50)) == store.stats()["entries"]
    assert index_problems(store) == []
    assert store.stats()["bytes"] == store.accounted_bytes()


def test_created_is_kept_and_last_used_follows_saves_and_loads(make_store, clock):
    store = make_store()
    login(store, key(1))
    created = int(clock())
    clock.advance(5.5)
    login(store, key(1), create=False)
    clock.advance(3)
    store.get(key(1))
    (row,) = store.user_sessions("7")
    assert (row.created, row.last_used) == (created, int(clock()))


def test_loads_return_the_payload_of_a_logged_in_session(make_store, clock):
    store = make_store()
    login(store, key(1), "42")
    clock.advance(2)  # the load notes a new second: the value is copied with it
    assert store.get(key(1)) == b'{"_auth_user_id":"42"}'
    assert store.get(key(1)) == b'{"_auth_user_id":"42"}'


def test_most_recently_used_first(make_store, clock):
    store = make_store()
    for n in range(3):
        login(store, key(n))
        clock.advance(1)
    store.get(key(0))
    assert listed(store) == [key(0), key(2), key(1)]


def test_the_client_is_kept_until_another_is_given(make_store):
    store = make_store()
    login(store, key(1), client="10.0.0.1\nFirefox")
    login(store, key(1), create=False)
    assert store.user_sessions("7")[0].client == "10.0.0.1\nFirefox"
    assert store.note_client(key(1), "10.0.0.2\nFirefox")
    assert not store.note_client(key(1), "10.0.0.2\nFirefox")
    assert store.user_sessions("7")[0].client == "10.0.0.2\nFirefox"
    assert store.stats()["bytes"] == store.accounted_bytes()


def test_no_client_is_noted_for_an_anonymous_session(make_store):
    store = make_store()
    anonymous(store, key(1))
    assert not store.note_client(key(1), "10.0.0.1\nFirefox")


def test_a_user_beyond_the_per_user_limit_loses_their_least_recently_used_session(clock, sizer):
    store = MemoryStore(
        Limits(1 << 20, 1 << 16, 0.75, max_sessions_per_user=2), clock=clock, sizer=sizer
    )
    events = []
    store.on_event = events.extend
    login(store, key(1))
    clock.advance(1)
    login(store, key(2))
    clock.advance(1)
    store.get(key(1))  # key 2 is now the least recently used
    login(store, key(3))
    assert sorted(listed(store)) == [key(1), key(3)]
    assert not store.exists(key(2))
    assert [(e.kind, e.count, e.reason, e.user) for e in events] == [("ended", 1, "limit", "7")]


def test_saves_of_a_user_at_the_limit_end_nothing(clock, sizer):
    store = MemoryStore(
        Limits(1 << 20, 1 << 16, 0.75, max_sessions_per_user=2), clock=clock, sizer=sizer
    )
    login(store, key(1))
    login(store, key(2))
    login(store, key(2), create=False)
    assert sorted(listed(store)) == [key(1), key(2)]


def test_an_ended_session_is_not_restored_by_its_next_save(clock, sizer):
    store = MemoryStore(
        Limits(1 << 20, 1 << 16, 0.75, max_sessions_per_user=1), clock=clock, sizer=sizer
    )
    login(store, key(1))
    login(store, key(2))
    assert login(store, key(1), create=False) is PutResult.MISSING


def test_the_session_cap_evicts_by_the_same_policy(clock, sizer):
    store = MemoryStore(Limits(1 << 20, 1 << 16, 0.75, max_sessions=3), clock=clock, sizer=sizer)
    login(store, key(1))
    for n in range(2, 6):
        anonymous(store, key(n))
    # Anonymous newcomers go first: the logged-in session is protected.
    assert store.stats()["entries"] == 3
    assert store.exists(key(1)) and store.exists(key(5))
    assert store.stats()["evictions"] == 2


def test_a_restore_rebuilds_the_index_with_the_facts(make_store, clock):
    store = make_store()
    login(store, key(1), "7", client="10.0.0.1\nFirefox")
    login(store, key(2), "8")
    anonymous(store, key(3))
    before = {u: store.user_sessions(u) for u in ("7", "8")}
    records = [record for chunk in store.copy_chunks() for record in chunk]
    restored = make_store()
    restored.restore(records)
    assert {u: restored.user_sessions(u) for u in ("7", "8")} == before
    assert restored.stats()["users"] == 2
    assert restored.stats()["bytes"] == restored.accounted_bytes()


def test_delete_many_ends_the_given_sessions(make_store):
    store = make_store()
    for n in range(3):
        login(store, key(n))
    assert store.delete_many([key(0), key(2), key(9)]) == 2
    assert listed(store) == [key(1)]


def test_user_ids_that_are_not_numbers_are_indexed_as_text(make_store):
    store = make_store()
    uuid = "0b7c6f6e-5d3a-4c1e-9f3b-2a1d4e5f6a7b"
    login(store, key(1), uuid)
    login(store, key(2), "007")  # not the same user as "7"
    login(store, key(3), "7")
    assert listed(store, uuid) == [key(1)]
    assert listed(store, "007") == [key(2)]
    assert store.stats()["bytes"] == store.accounted_bytes()


def test_an_evicted_session_coming_back_is_not_a_login_over_the_limit(clock, sizer):
    store = MemoryStore(
        Limits(64 * 1024, 8 * 1024, 0.75, max_sessions_per_user=2), clock=clock, sizer=sizer
    )
    login(store, key(1))
    login(store, key(2))
    n = 3
    while store.exists(key(1)):  # other users' logins push key 1 out; key 2 stays in use
        store.get(key(2))
        login(store, key(n), str(1000 + n))
        n += 1
    login(store, key(n), "7")  # alice's second session again
    assert login(store, key(1), create=False) is PutResult.RESTORED
    assert sorted(listed(store)) == sorted([key(1), key(2), key(n)])


class _WalkFirst:
    """The store's lock, but the first acquisition after ``arm()`` lets a whole prune walk run
    first: a request that read the store's tables before the lock meets the walk's swap."""

    def __init__(self, lock, walk) -> None:
        self.lock, self.walk, self.armed = lock, walk, False

    def acquire(self, *args) -> bool:
        if self.armed:
            self.armed = False
            self.walk()
        return self.lock.acquire(*args)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def test_a_load_that_meets_the_end_of_a_prune_walk_serves_the_session(make_store):
    store = make_store()
    login(store, key(1))
    login(store, key(2))
    lock = store._lock = _WalkFirst(store._lock, lambda: store.prune_expired(chunk_size=1))
    lock.armed = True
    assert store.get(key(1)) == b'{"_auth_user_id":"7"}'
    assert not lock.armed
    assert sorted(listed(store)) == [key(1), key(2)]
    assert index_problems(store) == []
