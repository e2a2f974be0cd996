"""The Redis engine's own behaviours, on a real Redis, with and without the near cache (the
``engine`` fixture's ``redis`` and ``redis+near``): invalid keys cost no round trip, eviction is
not logout, a logout is never undone, probation TTLs, and every key it writes has a TTL. What
every engine keeps (Django's ``SessionBase`` contract) is in ``test_contract_sessions.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import django
import pytest
from conftest import FakeClock
from django.contrib.sessions.backends.base import CreateError, UpdateError
from redis_server import RedisServer

from django_memsession.redis import SessionStore
from django_memsession.redis.store import get_store, unpack

pytestmark = [pytest.mark.engines("redis", "redis+near"), pytest.mark.usefixtures("engine")]

HOUR_MS = 3600 * 1000


def raw(server: RedisServer, session_key: str) -> tuple[bytes | None, int]:
    """The stored value and its TTL in ms (-2: no key, -1: no TTL)."""
    client = server.client()
    try:
        key = get_store().key(session_key)
        return client.get(key), client.pttl(key)
    finally:
        client.close()


def evict(server: RedisServer, session_key: str) -> None:
    """What Redis does to a key under memory pressure: it is simply gone."""
    client = server.client()
    try:
        assert client.delete(get_store().key(session_key)) == 1
    finally:
        client.close()


@pytest.fixture
def session(engine) -> SessionStore:
    return SessionStore()


@pytest.fixture
def clock(engine) -> Iterator[FakeClock]:
    """Move the web server's clock for the Redis store (Redis's own TTLs keep real time)."""
    store = get_store()
    fake = FakeClock(time.time())
    real = store.clock
    store.clock = fake
    yield fake
    store.clock = real


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cookie",
    ["short", "x" * 65, "ABCDEFGHIJKL", "abc/../../etc", "abcdefgh\x00ijk", "ключключключ", ""],
)
def test_invalid_key_is_no_session_and_makes_no_redis_call(cookie, redis_server):
    before = redis_server.calls()
    s = SessionStore(cookie)
    assert s.session_key is None
    assert s.get("anything") is None
    assert not s.exists(cookie)
    s.delete(cookie)
    assert redis_server.calls() == before


def test_a_load_without_a_key_is_empty_and_makes_no_redis_call(redis_server):
    s = SessionStore("not a valid key")  # SessionBase drops an invalid key: session_key is None
    before = redis_server.calls()
    assert s.load() == {}
    assert redis_server.calls() == before


async def test_an_async_load_without_a_key_is_empty_and_makes_no_redis_call(redis_server):
    s = SessionStore()
    before = redis_server.calls()
    assert await s.aload() == {}
    assert redis_server.calls() == before


def test_keys_carry_the_prefix(redis_server, settings):
    settings.MEMSESSION_REDIS_PREFIX = "shop:s:"
    s = SessionStore()
    s.save()
    client = redis_server.client()
    assert client.keys("*") == [f"shop:s:{s.session_key}".encode()]
    client.close()


def test_create_never_reuses_the_key_of_a_deleted_session(session):
    session.save()
    session.delete()
    twin = SessionStore(session.session_key)
    with pytest.raises(CreateError):
        twin.save(must_create=True)


# -- logout is not undone; eviction is not logout ------------------------------------------------


def test_save_after_deletion_in_another_request_raises_update_error(session, redis_server):
    session["a"] = 1
    session.save()
    other = SessionStore(session.session_key)
    other["a"]  # loaded
    session.delete()
    other["b"] = 2
    with pytest.raises(UpdateError):
        other.save()
    assert raw(redis_server, session.session_key)[0] == b"T"


def test_save_after_eviction_stores_the_session_again(session, redis_server):
    session["a"] = 1
    session.save()
    in_flight = SessionStore(session.session_key)
    assert in_flight["a"] == 1
    evict(redis_server, session.session_key)
    in_flight["b"] = 2
    in_flight.save()  # no UpdateError: eviction is not logout
    assert SessionStore(session.session_key)["b"] == 2


def test_a_session_evicted_then_expired_is_not_stored_again(session, redis_server, clock):
    session.set_expiry(60)
    session.save()
    in_flight = SessionStore(session.session_key)
    in_flight["a"] = 1
    evict(redis_server, session.session_key)
    clock.advance(61)
    with pytest.raises(UpdateError):
        in_flight.save()
    assert raw(redis_server, session.session_key) == (None, -2)


def test_a_tombstone_outlives_the_probation_ttl(session, redis_server):
    session.save()
    session.delete()
    value, ttl = raw(redis_server, session.session_key)
    assert value == b"T"
    assert ttl > HOUR_MS  # the default probation age


# -- probation ------------------------------------------------------------------------------------


def test_a_new_anonymous_session_is_stored_with_the_probation_ttl(session, redis_server):
    session["cart"] = ["tea"]
    session.save()
    _, ttl = raw(redis_server, session.session_key)
    assert HOUR_MS - 60_000 < ttl <= HOUR_MS


def test_the_probation_age_is_a_setting(session, redis_server, settings):
    settings.MEMSESSION_REDIS_PROBATION_AGE = 120
    session.save()
    _, ttl = raw(redis_server, session.session_key)
    assert 60_000 < ttl <= 120_000


def test_a_session_that_comes_back_gets_its_full_age_on_load(session, redis_server, settings):
    session["cart"] = ["tea"]
    session.save()
    assert SessionStore(session.session_key)["cart"] == ["tea"]  # a load only, no save
    _, ttl = raw(redis_server, session.session_key)
    assert ttl > settings.SESSION_COOKIE_AGE * 1000 - 60_000


def test_a_session_that_comes_back_keeps_its_full_age_when_saved(session, redis_server, settings):
    session.save()
    returning = SessionStore(session.session_key)
    returning["cart"] = ["tea"]
    returning.save()
    _, ttl = raw(redis_server, session.session_key)
    assert ttl > settings.SESSION_COOKIE_AGE * 1000 - 60_000


def test_a_logged_in_session_gets_its_full_age_at_once(session, redis_server, settings):
    session["_auth_user_id"] = "42"
    session.save()
    _, ttl = raw(redis_server, session.session_key)
    assert ttl > settings.SESSION_COOKIE_AGE * 1000 - 60_000


def test_a_session_shorter_than_the_probation_age_keeps_its_own_age(session, redis_server):
    session.set_expiry(30)
    session.save()
    SessionStore(session.session_key).load()
    _, ttl = raw(redis_server, session.session_key)
    assert 0 < ttl <= 30_000


def test_a_new_anonymous_session_is_marked_on_probation_and_settled_when_it_comes_back(
    session, redis_server
):
    session["cart"] = ["tea"]
    session.save()
    assert raw(redis_server, session.session_key)[0][:1] == b"P"
    SessionStore(session.session_key).load()
    assert raw(redis_server, session.session_key)[0][:1] == b"S"


# With the near cache, the session just saved is in L1 and the load makes no round trip
# (test_redis_near.py: test_a_load_that_finds_a_valid_copy_makes_no_...).
@pytest.mark.engines("redis")
def test_a_load_of_a_settled_session_is_one_plain_get(session, redis_server):
    session["_auth_user_id"] = "42"
    session.save()
    before = redis_server.calls(), redis_server.calls("get")
    assert SessionStore(session.session_key)["_auth_user_id"] == "42"
    assert (redis_server.calls() - before[0], redis_server.calls("get") - before[1]) == (1, 1)


def test_only_the_first_return_from_probation_costs_a_promotion(session, redis_server):
    session.save()
    before = redis_server.calls("evalsha")
    for _ in range(3):
        SessionStore(session.session_key).load()
    assert redis_server.calls("evalsha") - before == 1


def test_a_promotion_never_undoes_a_logout(session, redis_server):
    """A load's GET finds the session on probation; a logout in another request lands before
    the load's promotion: the promotion leaves the tombstone."""
    session.save()
    store = get_store()
    record, _ = raw(redis_server, session.session_key)
    loaded = unpack(record, store.clock())
    assert loaded is not None
    session.delete()
    store._promote_once(store.key(session.session_key), loaded, store.clock())
    assert raw(redis_server, session.session_key)[0] == b"T"


def test_a_save_never_puts_a_settled_session_back_on_probation(session, redis_server, settings):
    session["cart"] = ["tea"]
    session.save()  # on probation
    SessionStore(session.session_key).load()  # it came back: settled, full age
    session["cart"] = ["tea", "milk"]
    session.save()  # the first object, which never loaded it, saves again
    value, ttl = raw(redis_server, session.session_key)
    assert value[:1] == b"S"
    assert ttl > settings.SESSION_COOKIE_AGE * 1000 - 60_000


def test_a_session_as_short_as_the_probation_age_is_stored_settled(session, redis_server):
    session.set_expiry(30)
    session.save()
    assert raw(redis_server, session.session_key)[0][:1] == b"S"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_forked_child_builds_its_own_store_and_pool():
    parent = get_store()
    parent.ping()
    session = SessionStore()
    session["a"] = 1
    session.save()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            own = get_store()
            works = SessionStore(session.session_key)["a"] == 1
            code = 0 if own is not parent and own.client is not parent.client and works else 2
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
    assert get_store() is parent  # the parent's store is untouched
    assert SessionStore(session.session_key)["a"] == 1


def test_every_key_the_engine_writes_has_a_ttl(redis_server):
    made = []
    for i in range(5):
        s = SessionStore()
        s["i"] = i
        if i % 2:
            s["_auth_user_id"] = str(i)
        s.save()
        made.append(s)
    SessionStore(made[0].session_key).load()
    made[1].cycle_key()
    made[2].flush()
    evicted = SessionStore(made[3].session_key)
    evicted.load()
    evict(redis_server, made[3].session_key)
    evicted["b"] = 1
    evicted.save()
    client = redis_server.client()
    keys = client.keys("*")
    # The five keys (two now tombstones: the flushed one, the cycled one's old key), the
    # cycled session's new key, and the user index of the two logged-in users (1 and 3).
    assert len(keys) == 8
    assert all(client.pttl(key) > 0 for key in keys)
    client.close()


# -- expiry ---------------------------------------------------------------------------------------


def test_redis_expires_the_key_with_the_session(session, redis_server):
    session["_auth_user_id"] = "1"
    session.set_expiry(600)
    session.save()
    _, ttl = raw(redis_server, session.session_key)
    assert 540_000 < ttl <= 600_000


# -- async twins ----------------------------------------------------------------------------------

needs_django5_async = pytest.mark.skipif(
    django.VERSION < (5, 0), reason="SessionBase's async API arrived in Django 5.0"
)


@needs_django5_async
async def test_async_save_after_eviction_stores_the_session_again(redis_server):
    s = SessionStore()
    await s.aset("a", 1)
    await s.asave()
    in_flight = SessionStore(s.session_key)
    await in_flight.aget("a")
    evict(redis_server, s.session_key)
    await in_flight.aset("b", 2)
    await in_flight.asave()
    assert await SessionStore(s.session_key).aload() == {"a": 1, "b": 2}


async def test_async_promotes_a_session_that_comes_back(redis_server, settings):
    s = SessionStore()
    s["cart"] = ["tea"]
    await s.asave()
    assert await SessionStore(s.session_key).aload() == {"cart": ["tea"]}
    _, ttl = raw(redis_server, s.session_key)
    assert ttl > settings.SESSION_COOKIE_AGE * 1000 - 60_000
