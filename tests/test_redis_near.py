"""The near cache (``MEMSESSION_REDIS_NEAR_CACHE``): a memory store in each process in front of
Redis, kept coherent by ``CLIENT TRACKING``, against a real ``redis-server``.

"Another process" is a second :class:`RedisStore` built from the same settings: its own L1, its
own tracking connections, exactly what a second worker has. The races are driven, not waited
for: a test steps in between a command's reply and the L1 insert, makes the other write, and
waits (bounded) until its invalidation has reached our socket.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import FakeClock
from django.contrib.sessions.backends.base import UpdateError
from redis_server import RedisServer

from django_memsession.redis import SessionStore, stats
from django_memsession.redis.conf import store_settings
from django_memsession.redis.near import NearCache, parse_resp
from django_memsession.redis.store import RedisStore, get_store

pytestmark = pytest.mark.usefixtures("near_cache")

WAIT = 10.0  # bound for waiting on Redis to deliver something; never a measured duration


@pytest.fixture
def near_cache(redis_url: str, settings) -> Iterator[RedisStore]:
    """The engine on Redis with a 1 MiB near cache, tracking registered."""
    settings.MEMSESSION_REDIS_NEAR_CACHE = "1M"
    store = get_store()
    assert store.near is not None
    assert store.near.connect()
    yield store


@pytest.fixture
def other() -> Iterator[RedisStore]:
    """Another process's store: same settings, its own L1 and tracking."""
    store = RedisStore(store_settings())
    assert store.near is not None and store.near.connect()
    yield store
    store.close()


def near(store: RedisStore) -> NearCache:
    assert store.near is not None
    return store.near


def saved(data: dict, *, user: str | None = "7") -> SessionStore:
    """A settled session (a logged-in user's: full age at once) saved through the engine."""
    session = SessionStore()
    session.update(data)
    if user is not None:
        session["_auth_user_id"] = user
    session.save()
    return session


def cached(store: RedisStore, session_key: str) -> bool:
    """Whether the store's L1 holds a live copy of the session (without counting a hit)."""
    return near(store).l1.exists(session_key)


def value(store: RedisStore, session_key: str) -> bytes | None:
    loaded = store.load(session_key)
    return None if loaded is None else loaded.payload


def wait_for_invalidation(store: RedisStore) -> None:
    """Until the store's invalidation socket has something to read (bounded)."""
    sock = near(store)._invalidation_socket
    assert sock is not None
    readable, _, _ = select.select([sock], [], [], WAIT)
    assert readable, "no invalidation arrived"


def write_elsewhere(server: RedisServer, store: RedisStore, session_key: str, record: bytes):
    """Another client (no near cache at all) overwrites the session's record."""
    client = server.client()
    try:
        client.set(store.key(session_key), record, px=3_600_000)
    finally:
        client.close()


def client_ids(server: RedisServer, name: str) -> list[int]:
    client = server.client()
    try:
        return [int(c["id"]) for c in client.client_list() if c["name"].startswith(name)]
    finally:
        client.close()


def kill(server: RedisServer, client_id: int) -> None:
    client = server.client()
    try:
        assert client.execute_command("CLIENT", "KILL", "ID", client_id) == 1
    finally:
        client.close()


# -- no round trip --------------------------------------------------------------------------------


def test_a_load_that_finds_a_valid_copy_makes_no_round_trip(redis_server):
    session = saved({"cart": ["tea"]})  # the save puts the new version into L1
    before = redis_server.calls()
    assert SessionStore(session.session_key)["cart"] == ["tea"]
    assert redis_server.calls() == before


def test_a_load_modify_save_with_an_l1_hit_is_one_round_trip(redis_server):
    session = saved({"n": 1})  # a create is kept in L1
    warm = SessionStore(session.session_key)
    warm["warm"] = True
    warm.save()  # loads the update script into Redis (and leaves L1: see the next tests)
    SessionStore(session.session_key).load()  # from Redis, into L1
    before = redis_server.calls("get"), redis_server.calls("evalsha")
    again = SessionStore(session.session_key)
    again["n"] = again["n"] + 1
    again.save()
    after = redis_server.calls("get"), redis_server.calls("evalsha")
    assert (after[0] - before[0], after[1] - before[1]) == (0, 1)
    assert SessionStore(session.session_key)["n"] == 2


def test_the_first_load_after_a_miss_fills_l1_and_the_next_is_a_hit(redis_server, near_cache):
    session = saved({"a": 1})
    near(near_cache).l1.clear()
    before = redis_server.calls("get")
    for _ in range(3):
        assert SessionStore(session.session_key)["a"] == 1
    assert redis_server.calls("get") - before == 1


# -- coherence between processes ----------------------------------------------------------------


def test_a_save_in_another_process_is_never_served_stale(near_cache, other):
    session = saved({"n": 1})
    assert value(other, session.session_key) is not None  # fills the other's L1
    assert cached(other, session.session_key)
    session["n"] = 2
    session.save()
    # The save has returned: the other process must not serve n = 1.
    assert b'"n":2' in value(other, session.session_key)


def test_a_logout_in_another_process_holds_there_at_once(near_cache, other):
    session = saved({"n": 1})
    key = session.session_key
    value(other, key)
    assert cached(other, key)
    session.flush()
    assert other.load(key) is None


def test_cycle_key_in_another_process_leaves_no_copy_of_the_old_key(near_cache, other):
    session = saved({"n": 1})
    old = session.session_key
    value(other, old)
    session.cycle_key()
    assert other.load(old) is None
    assert b'"n":1' in value(other, session.session_key)


def test_a_write_by_a_client_without_a_near_cache_invalidates_every_copy(
    near_cache, other, redis_server
):
    session = saved({"n": 1})
    value(other, session.session_key)
    write_elsewhere(redis_server, other, session.session_key, b"T")
    wait_for_invalidation(other)
    assert other.load(session.session_key) is None


def test_a_session_created_here_is_kept_in_l1_and_not_invalidated_by_its_own_echo(
    near_cache, redis_server
):
    session = saved({"n": 1})
    assert cached(near_cache, session.session_key)
    # Another client's write arrives after ours: had ours come back, it would have come first.
    probe = saved({"probe": 1})
    write_elsewhere(redis_server, near_cache, probe.session_key, b"T")
    wait_for_invalidation(near_cache)
    assert near(near_cache).get(session.session_key) is not None
    assert near(near_cache).get(probe.session_key) is None


def test_a_save_of_an_existing_session_is_kept_and_its_scripts_write_does_not_come_back(
    near_cache, redis_server
):
    """Redis 7.0 sends a script's writes even to the NOLOOP connection that ran it; the
    writer makes itself the key's last writer (PEXPIRE ... GT after the script), so the copy
    stays and the next load makes no round trip."""
    session = saved({"n": 1})
    session["n"] = 2
    session.save()
    probe = saved({"probe": 1})
    write_elsewhere(redis_server, near_cache, probe.session_key, b"T")
    wait_for_invalidation(near_cache)
    assert near(near_cache).get(probe.session_key) is None  # drained up to the probe's write
    before = redis_server.calls("get")
    assert SessionStore(session.session_key)["n"] == 2
    assert redis_server.calls("get") == before


def test_a_save_that_finds_a_tombstone_keeps_nothing_and_leaves_the_tombstone(
    near_cache, redis_server
):
    session = saved({"n": 1})
    key = near_cache.key(session.session_key)
    write_elsewhere(redis_server, near_cache, session.session_key, b"T")
    wait_for_invalidation(near_cache)
    session["n"] = 2
    with pytest.raises(UpdateError):
        session.save()
    assert not cached(near_cache, session.session_key)
    client = redis_server.client()
    try:
        assert client.get(key) == b"T"
    finally:
        client.close()


# -- the races ------------------------------------------------------------------------------------


def test_fill_race_a_get_that_returned_v1_is_not_cached_after_v2s_invalidation(
    near_cache, other, redis_server, monkeypatch
):
    """A ``GET`` returns v1; before v1 goes into L1, another process stores v2 and its
    invalidation arrives and is applied (by an L1 hit on another session). v1 must not be
    cached: the invalidation found nothing to remove."""
    session = saved({"v": 1})
    bystander = saved({"b": 1})
    value(other, bystander.session_key)
    near(other).l1.delete(session.session_key)
    real_get = other.client.get

    def get_then_v2(key):
        record = real_get(key)
        v2 = SessionStore(session.session_key)
        v2["v"] = 2
        v2.save()
        wait_for_invalidation(other)
        assert value(other, bystander.session_key) is not None  # an L1 hit drains the socket
        return record

    monkeypatch.setattr(other.client, "get", get_then_v2)
    assert b'"v":1' in value(other, session.session_key)  # this load saw v1
    monkeypatch.setattr(other.client, "get", real_get)
    assert not cached(other, session.session_key)
    assert b'"v":2' in value(other, session.session_key)


def test_write_then_fill_race_v2_is_not_cached_over_v3(near_cache, other, redis_server):
    """This process stores v2 (a create, which L1 keeps); another client stores v3 and its
    invalidation lands before v2 enters L1. v2 must not be cached."""
    real_execute = near(other).execute
    v3 = b"S%015d" % int((time.time() + 3600) * 1000) + b'{"v":3}'

    def execute_then_v3(ticket, *args, **options):
        reply = real_execute(ticket, *args, **options)
        write_elsewhere(redis_server, other, ticket.session_key, v3)
        wait_for_invalidation(other)
        return reply

    near(other).execute = execute_then_v3  # type: ignore[method-assign]
    try:
        assert other.create("v" * 32, b'{"v":2}', time.time() + 3600, 3_600_000, settled=True)
    finally:
        near(other).execute = real_execute  # type: ignore[method-assign]
    assert not cached(other, "v" * 32)
    assert value(other, "v" * 32) == b'{"v":3}'


def test_a_write_of_our_own_refuses_a_fill_of_the_same_key_begun_before_it(near_cache):
    """A load in another thread that read the old version before our logout must not cache
    it after the logout (whether or not the logout's invalidation has come back yet)."""
    session = saved({"v": 1})
    store = near_cache
    ticket = near(store).begin(session.session_key)
    assert ticket is not None
    old = store.client.get(store.key(session.session_key))
    session.delete()
    assert not near(store).fill(ticket, old, time.time() + 3600, wrote=False)
    assert store.load(session.session_key) is None


def test_a_load_that_read_before_a_write_of_ours_began_is_not_cached(near_cache):
    """Redis tells a NOLOOP client nothing of a key whose last writer in an event-loop turn
    was that client, so another process's write just before ours, in the same turn, never
    reaches us as an invalidation: a load that read the version before it is refused as soon
    as our write begins, whatever the order in which the two finish."""
    session = saved({"v": 1})
    store = near(near_cache)
    load = store.begin(session.session_key)
    assert load is not None
    old = near_cache.client.get(near_cache.key(session.session_key))
    write = store.begin(session.session_key, write=True)
    assert write is not None
    assert not store.fill(load, old, time.time() + 3600, wrote=False)
    store.fill(write, None, 0.0, wrote=True)


def test_no_load_fills_l1_while_a_write_of_ours_to_the_key_is_in_flight(near_cache):
    session = saved({"v": 1})
    store = near(near_cache)
    write = store.begin(session.session_key, write=True)
    assert write is not None
    load = store.begin(session.session_key)
    assert load is not None
    record = near_cache.client.get(near_cache.key(session.session_key))
    assert not store.fill(load, record, time.time() + 3600, wrote=False)
    store.fill(write, None, 0.0, wrote=True)
    assert not cached(near_cache, session.session_key)


def in_one_turn(server: RedisServer, *writes: Callable[[], object]) -> list[object]:
    """Run ``writes`` (each sends one write, on a connection of its own) so that Redis runs
    them one after the other in the order given, in one event-loop turn: ``CLIENT PAUSE
    WRITE`` holds each until all are waiting, then ``CLIENT UNPAUSE`` releases them together.
    Their results, in order."""
    results: list[object] = [None] * len(writes)

    def run(index: int) -> None:
        try:
            results[index] = writes[index]()
        except BaseException as exc:  # re-raised below, in the test's thread
            results[index] = exc

    pauser = server.client()
    threads = []
    try:
        pauser.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
        for index in range(len(writes)):
            thread = threading.Thread(target=run, args=(index,))
            thread.start()
            threads.append(thread)
            deadline = time.monotonic() + WAIT
            while pauser.info("clients")["blocked_clients"] < index + 1:
                assert time.monotonic() < deadline, "the write did not reach Redis"
                time.sleep(0.001)
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
        pauser.close()
        for thread in threads:
            thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def test_a_write_by_another_process_right_after_our_save_in_the_same_turn_reaches_us(
    near_cache, other, redis_server
):
    """Our save and another process's, one after the other in one event-loop turn: Redis
    sends one invalidation for both, and keeps ours (the last writer's) out only if ours was
    last. Here the other's was: we hear of it, and do not serve our own version."""
    session = saved({"v": 1})
    ours = SessionStore(session.session_key)
    ours["v"] = 2
    theirs = session.session_key

    def save_there() -> None:
        loaded = other.load(theirs)
        assert loaded is not None
        other.update(theirs, b'{"v":3}', loaded.expires_at, 3_600_000, 3_600_000, False)

    value(other, theirs)  # the other's load (in the turn) is an L1 hit: no GET in the pause
    in_one_turn(redis_server, ours.save, save_there)
    assert b'"v":3' in value(near_cache, session.session_key)


def test_a_write_by_another_process_right_before_our_save_in_the_same_turn_is_seen_by_it(
    near_cache, other, redis_server
):
    """The other order: their logout, then our save, in one turn. Our script sees the
    tombstone and stores nothing; the invalidation of their write never reaches us (we were
    the key's last writer), and our copy goes with our own write."""
    session = saved({"v": 1})
    assert cached(near_cache, session.session_key)
    ours = SessionStore(session.session_key)
    ours["v"] = 2
    value(other, session.session_key)

    def save_here() -> None:
        with pytest.raises(UpdateError):
            ours.save()

    in_one_turn(redis_server, lambda: other.delete(session.session_key), save_here)
    assert near_cache.load(session.session_key) is None


def writer_last_command(server: RedisServer) -> str:
    client = server.client()
    try:
        [writer] = [
            c for c in client.client_list() if c["name"].startswith("memsession-near-writer")
        ]
        return writer["cmd"]
    finally:
        client.close()


def test_writes_with_nothing_to_keep_go_on_the_pool_not_the_writer_connection(
    near_cache, redis_server
):
    """A logout, or a save of a session on probation, keeps nothing in L1: it does not wait
    behind the process's other writes on the one writer connection."""
    session = saved({"v": 1})
    session["v"] = 2
    session.save()  # a settled session's save: on the writer, which claims the key
    assert writer_last_command(redis_server) == "pexpire"
    anonymous = SessionStore()
    anonymous["cart"] = ["tea"]
    anonymous.save()  # on probation
    session.delete()
    assert writer_last_command(redis_server) == "pexpire"
    assert near_cache.load(session.session_key) is None
    assert near_cache.load(anonymous.session_key) is not None


def test_an_insert_is_refused_after_a_reset_arrived(near_cache, redis_server):
    session = saved({"v": 1})
    store = near_cache
    ticket = near(store).begin(session.session_key)
    assert ticket is not None
    record = store.client.get(store.key(session.session_key))
    client = redis_server.client()
    client.flushall()
    client.close()
    wait_for_invalidation(store)
    assert not near(store).fill(ticket, record, time.time() + 3600, wrote=False)
    assert store.load(session.session_key) is None


# -- tracking loss, flushes, restarts -------------------------------------------------------------


def test_a_killed_invalidation_connection_empties_and_bypasses_l1(near_cache, redis_server):
    session = saved({"v": 1})
    assert cached(near_cache, session.session_key)
    kill(redis_server, near(near_cache)._invalidation_id)
    write_elsewhere(redis_server, near_cache, session.session_key, b"T")
    assert near_cache.load(session.session_key) is None
    assert near(near_cache).stats()["tracking_losses"] == 1


def test_a_killed_invalidation_connection_with_invalidations_unread_before_its_end_is_lost(
    near_cache, redis_server
):
    """Redis closes the connection after the invalidations it had sent: the drain that reads
    them must read on to the end, or this load would serve a copy that no invalidation can
    reach any more."""
    session = saved({"v": 1})
    bystander = saved({"b": 1})
    assert cached(near_cache, session.session_key)
    write_elsewhere(redis_server, near_cache, bystander.session_key, b"T")
    wait_for_invalidation(near_cache)  # unread, in front of the end that follows
    kill(redis_server, near(near_cache)._invalidation_id)
    write_elsewhere(redis_server, near_cache, session.session_key, b"T")
    assert near_cache.load(session.session_key) is None
    assert near(near_cache).stats()["tracking_losses"] == 1


def test_a_killed_writer_connection_empties_and_bypasses_l1(near_cache, redis_server):
    """The writer connection carries the tracking registration: when it drops, no more
    invalidations come, although the invalidation connection is fine."""
    session = saved({"v": 1})
    [writer_id] = client_ids(redis_server, f"memsession-near-writer-{os.getpid()}")
    kill(redis_server, writer_id)
    write_elsewhere(redis_server, near_cache, session.session_key, b"T")
    assert near_cache.load(session.session_key) is None


def test_a_writer_connection_closed_by_redis_py_is_never_reopened_without_tracking(
    near_cache, redis_server
):
    """redis-py closes a connection on an error in the middle of a reply, and its next
    command would open a new one, silently, with no tracking registered on it: the near cache
    takes it as a loss instead, and the write goes to Redis on the pool."""
    session = saved({"v": 1})
    writer = near(near_cache)._writer
    assert writer is not None
    writer.connection.disconnect()
    session["v"] = 2
    session.save()
    assert not near(near_cache).up
    assert client_ids(redis_server, f"memsession-near-writer-{os.getpid()}") == []
    assert b'"v":2' in value(near_cache, session.session_key)


def test_an_idle_writer_connection_found_empty_on_a_second_look_is_no_loss(near_cache):
    """The writer's socket polled readable (a reply in flight), and the reply was read before
    the check took the writer's lock: nothing to read is not an end. (The socket has
    redis-py's timeout: a peek at it would wait that long, then fail as if it had ended.)"""
    store = near(near_cache)
    assert store._check_writer()
    assert store.up
    assert store.stats()["tracking_losses"] == 0


def test_after_a_reconnection_tracking_redirects_to_the_new_connection(
    near_cache, other, redis_server
):
    """redis/redis#13082: a writer connection that outlives its invalidation connection goes
    on redirecting to the old client id, with no error. Tracking comes back on a fresh pair,
    and invalidations reach the new connection."""
    session = saved({"v": 1})
    old_invalidation = near(other)._invalidation_id
    old_writer = client_ids(redis_server, f"memsession-near-writer-{os.getpid()}")
    kill(redis_server, old_invalidation)
    assert value(other, session.session_key) is not None  # bypass; Redis answered: reconnect
    assert near(other).up
    new_invalidation, writer_id = near(other).client_ids
    assert new_invalidation != old_invalidation
    assert writer_id not in old_writer
    value(other, session.session_key)  # cached again
    assert cached(other, session.session_key)
    session["v"] = 2
    session.save()
    assert b'"v":2' in value(other, session.session_key)


def test_a_flush_empties_l1(near_cache, redis_server):
    session = saved({"v": 1})
    client = redis_server.client()
    client.flushall()
    client.close()
    wait_for_invalidation(near_cache)
    assert near_cache.load(session.session_key) is None
    assert near(near_cache).stats()["flushes"] == 1


def test_a_redis_restart_empties_l1_and_it_is_used_again_afterwards(near_cache, redis_server):
    session = saved({"v": 1})
    redis_server.restart()  # an empty Redis: the session is gone
    assert near_cache.load(session.session_key) is None
    fresh = saved({"v": 2})
    assert near(near_cache).up  # registered again after a round trip that worked
    fresh_load = SessionStore(fresh.session_key)
    fresh_load.load()
    before = redis_server.calls()
    assert SessionStore(fresh.session_key)["v"] == 2
    assert redis_server.calls() == before


# -- the Redis engine's rules -------------------------------------------------------------------


def test_a_session_on_probation_is_never_served_from_l1(redis_server, near_cache):
    session = SessionStore()
    session["cart"] = ["tea"]
    session.save()  # anonymous: on probation
    assert not cached(near_cache, session.session_key)
    assert SessionStore(session.session_key)["cart"] == ["tea"]
    client = redis_server.client()
    record = client.get(near_cache.key(session.session_key))
    client.close()
    assert record[:1] == b"S"  # its return reached Redis, which promoted it
    assert not cached(near_cache, session.session_key)


def test_an_l1_copy_never_outlives_its_session(near_cache, redis_server):
    clock = FakeClock(time.time())
    near_cache.clock = clock
    session = SessionStore()
    session["_auth_user_id"] = "7"
    session.set_expiry(60)
    session.save()
    assert cached(near_cache, session.session_key)
    clock.advance(61)
    assert SessionStore(session.session_key).get("v") is None


def test_redis_keeps_a_cached_session_as_long_as_l1_may_serve_it(near_cache, redis_server):
    """A settled session's TTL in Redis ends at its expiry, as its L1 copy does, and reads
    never move either: Redis never expires a session that L1 still serves."""
    session = SessionStore()
    session.update({"_auth_user_id": "7", "v": 1})
    session.set_expiry(600)
    session.save()
    for _ in range(3):
        assert SessionStore(session.session_key)["v"] == 1
    record = near(near_cache).l1.get(session.session_key)
    copy_expires_at = int(record[1:16]) / 1000
    client = redis_server.client()
    ttl_ms = client.pttl(near_cache.key(session.session_key))
    client.close()
    redis_expires_at = time.time() + ttl_ms / 1000
    assert redis_expires_at >= copy_expires_at - 1.0
    assert copy_expires_at <= time.time() + 600


def ttls_asked_for(server: RedisServer, key: bytes, write: Callable[[], object]) -> list[int]:
    """Every TTL (ms) Redis was asked to give ``key`` while ``write`` ran, by a command or by a
    script's command: read from ``MONITOR``, what Redis itself was sent."""
    end = f"end-of-{key.decode()}"
    asked = []
    watcher = server.client()
    try:
        with watcher.monitor() as monitor:
            write()
            marker = server.client()
            marker.get(end)
            marker.close()
            while (command := monitor.next_command()["command"].split(" ")) != ["GET", end]:
                if command[1:2] != [key.decode()]:
                    continue
                if command[0] == "PEXPIRE":
                    asked.append(int(command[2]))
                elif command[0] == "SET" and "PX" in command:
                    asked.append(int(command[command.index("PX") + 1]))
    finally:
        watcher.close()
    return asked


def test_a_kept_save_never_gives_its_key_a_longer_ttl_than_its_session_has(
    near_cache, redis_server
):
    """A save that L1 keeps claims its key after the script (``PEXPIRE ... GT``, see
    ``NearCache._run_claiming``): that may give the key the TTL its session has left, never a
    longer one, not even by the millisecond in which both ran."""
    session = saved({"n": 1})
    session.set_expiry(600)
    session["n"] = 2
    asked = ttls_asked_for(redis_server, near_cache.key(session.session_key), session.save)
    assert asked and max(asked) <= 600_000


def test_a_save_that_finds_its_session_expired_gives_its_key_no_longer_life(
    near_cache, redis_server
):
    """The session has expired by the web server's clock, Redis's TTL has a little left: the
    save is refused, and the key lives no longer for it (the claim after the script finds no
    key to lengthen)."""
    clock = FakeClock(time.time())
    near_cache.clock = clock
    session = saved({"n": 1})
    session.set_expiry(60)
    session.save()
    clock.advance(61)
    session.set_expiry(3600)
    session["n"] = 2
    with pytest.raises(UpdateError):
        session.save()
    client = redis_server.client()
    try:
        assert client.pttl(near_cache.key(session.session_key)) <= 60_000
    finally:
        client.close()


def test_logged_in_copies_in_l1_are_not_indexed_as_this_processs_users(near_cache):
    """L1 holds copies of Redis records: who is logged in is not answered from it, and its
    figures never count a user."""
    session = saved({"v": 1}, user="7")
    assert cached(near_cache, session.session_key)
    l1 = near(near_cache).l1
    assert l1.user_sessions("7") == []
    assert l1.stats()["users"] == 0


def test_a_session_larger_than_an_eighth_of_the_near_cache_is_not_kept(settings, redis_server):
    settings.MEMSESSION_REDIS_NEAR_CACHE = "64K"
    near(get_store()).connect()
    session = saved({"blob": "x" * 9000})
    assert not cached(get_store(), session.session_key)
    assert SessionStore(session.session_key)["blob"] == "x" * 9000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_forked_child_has_its_own_tracking_and_an_empty_l1(near_cache):
    session = saved({"v": 1})
    assert cached(near_cache, session.session_key)
    parent_id = near(near_cache)._invalidation_id
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            own = get_store()
            empty = own.near is not None and not own.near.l1.exists(session.session_key)
            works = SessionStore(session.session_key)["v"] == 1  # from Redis; reconnects
            up = own.near is not None and own.near.up
            separate = own.near is not None and own.near._invalidation_id != parent_id
            code = 0 if empty and works and up and separate else 2
        finally:
            os.write(writer, bytes([code]))
            os._exit(code)
    os.close(writer)
    try:
        answer = os.read(reader, 1)
    finally:
        os.close(reader)
        os.waitpid(pid, 0)
    assert answer == b"\x00"
    assert near(near_cache)._invalidation_id == parent_id
    assert cached(near_cache, session.session_key)


# -- async ----------------------------------------------------------------------------------------


async def test_an_async_load_is_served_from_l1_with_no_round_trip(redis_server):
    session = saved({"v": 1})
    before = redis_server.calls()
    assert await SessionStore(session.session_key).aload() == {"_auth_user_id": "7", "v": 1}
    assert redis_server.calls() == before


async def test_an_async_save_leaves_no_stale_copy_in_its_own_l1(near_cache):
    session = saved({"v": 1})
    again = SessionStore(session.session_key)
    again["v"] = 2
    await again.asave()
    assert not cached(near_cache, session.session_key)
    assert await SessionStore(session.session_key).aload() == {"_auth_user_id": "7", "v": 2}


# -- figures --------------------------------------------------------------------------------------


def test_stats_count_l1_hits_l2_hits_misses_and_invalidations(near_cache, other):
    session = saved({"v": 1})
    wait_for_invalidation(other)  # the create's
    other.load("y" * 32)  # applies it (a miss)
    invalidations_before = other.stats()["invalidations"]
    value(other, session.session_key)  # L2 hit, fills
    value(other, session.session_key)  # L1 hit
    other.load("z" * 32)  # miss
    session["v"] = 2
    session.save()
    wait_for_invalidation(other)
    value(other, session.session_key)  # applies the invalidation, then L2 hit
    figures = other.stats()
    invalidations = figures["invalidations"] - invalidations_before
    assert (figures["l1_hits"], figures["l2_hits"], figures["misses"]) == (1, 2, 2)
    assert figures["l1_hit_rate"] == 0.2
    assert figures["miss_rate"] == 0.4
    assert invalidations == 1
    assert figures["near_cache"]["tracking"] is True


def test_the_engines_stats_function_reports_this_process():
    session = saved({"v": 1})
    SessionStore(session.session_key).load()
    figures = stats()
    assert figures["pid"] == os.getpid()
    assert figures["l1_hits"] == 1
    assert figures["near_cache"]["entries"] == 1


# -- the invalidation connection's reader ---------------------------------------------------------


def test_parse_resp_reads_invalidations_and_flushes_and_keeps_an_incomplete_reply():
    buffer = bytearray(
        b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$3\r\np:a\r\n"
        b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n"
        b"*3\r\n$7\r\nmess"
    )
    assert list(parse_resp(buffer)) == [
        [b"message", b"__redis__:invalidate", [b"p:a"]],
        [b"message", b"__redis__:invalidate", None],
    ]
    assert buffer == b"*3\r\n$7\r\nmess"
    buffer += b"age\r\n$1\r\nc\r\n:5\r\n"
    assert list(parse_resp(buffer)) == [[b"message", b"c", 5]]
    assert buffer == b""


def test_an_invalidation_split_across_reads_is_applied_when_complete(near_cache):
    session = saved({"v": 1})
    cache = near(near_cache)
    key = near_cache.key(session.session_key)
    message = b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$%d\r\n%s\r\n" % (
        len(key),
        key,
    )
    with cache._lock:
        cache._buffer += message[:30]
        cache._invalidate_buffered()
    assert cache.l1.exists(session.session_key)
    with cache._lock:
        cache._buffer += message[30:]
        cache._invalidate_buffered()
    assert not cache.l1.exists(session.session_key)


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["lots", 0, "1K"])
def test_a_bad_near_cache_size_is_e108(settings, size):
    from django_memsession.redis.conf import problems

    settings.MEMSESSION_REDIS_NEAR_CACHE = size
    assert [problem.id for problem in problems()] == ["memsession.E108"]


def test_without_the_setting_there_is_no_near_cache(settings):
    settings.MEMSESSION_REDIS_NEAR_CACHE = None
    assert get_store().near is None
    session = saved({"v": 1})
    assert SessionStore(session.session_key)["v"] == 1
    assert stats()["near_cache"] is None
