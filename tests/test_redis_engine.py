"""The Redis engine against Django's ``SessionBase`` contract, sync and async, on a real Redis.

Modelled on the behaviours Django's own ``SessionTestsMixin`` checks for every built-in engine,
plus this engine's own: eviction is not logout, a logout is never undone, probation TTLs, and
every key it writes has a TTL.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from datetime import timedelta

import django
import pytest
from conftest import FakeClock
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.utils import timezone
from redis_server import RedisServer

from django_memsession import SessionTooLarge
from django_memsession.redis import SessionStore
from django_memsession.redis.store import get_store, unpack

pytestmark = pytest.mark.usefixtures("redis_url")

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
def session() -> SessionStore:
    return SessionStore()


@pytest.fixture
def clock() -> Iterator[FakeClock]:
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


def test_unknown_valid_looking_key_loads_empty_and_creates_nothing(redis_server):
    s = SessionStore("a" * 32)
    assert s.load() == {}
    assert s.session_key is None
    assert raw(redis_server, "a" * 32) == (None, -2)


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


def test_unknown_key_gets_a_fresh_key_on_save():
    s = SessionStore("a" * 32)
    s["x"] = 1
    s.save()
    assert s.session_key not in (None, "a" * 32)
    assert SessionStore(s.session_key)["x"] == 1


def test_keys_carry_the_prefix(redis_server, settings):
    settings.MEMSESSION_REDIS_PREFIX = "shop:s:"
    s = SessionStore()
    s.save()
    client = redis_server.client()
    assert client.keys("*") == [f"shop:s:{s.session_key}".encode()]
    client.close()


# -- basic dict behaviour and persistence -------------------------------------------------------


def test_new_session_is_empty(session):
    assert not session.modified
    assert not session.accessed
    assert session.is_empty()


def test_values_round_trip_through_save_and_load(session):
    session["cart"] = [{"sku": "A1", "qty": 2}]
    session["n"] = 3
    session.save()
    loaded = SessionStore(session.session_key)
    assert loaded["cart"] == [{"sku": "A1", "qty": 2}]
    assert loaded["n"] == 3


VALUES = {
    "tuple": (1, 2),
    "int keys": {1: "int key"},
    "big int": 2**80,
    "unicode": "ключ \u2028 ☃",
    "nan": float("nan"),
    "nested": {"a": [{"b": [1.5, None, True]}]},
}


@pytest.mark.django_db
@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_values_round_trip_exactly_as_through_the_db_engine(value):
    def round_trip(store_class: type) -> str:
        session = store_class()
        session["value"] = value
        session.save()
        return repr(store_class(session.session_key)["value"])

    assert round_trip(SessionStore) == round_trip(DatabaseSessionStore)


class TaggingSerializer:
    """A custom SESSION_SERIALIZER that leaves a mark on what it loads."""

    def dumps(self, obj):
        return json.dumps(obj).encode()

    def loads(self, data):
        return {**json.loads(data), "loaded_by": "tagging"}


def test_a_custom_session_serializer_is_used(settings):
    settings.SESSION_SERIALIZER = f"{__name__}.TaggingSerializer"
    s = SessionStore()
    s["b"] = 2
    s.save()
    assert SessionStore(s.session_key)["loaded_by"] == "tagging"


def test_loaded_dict_is_not_shared_between_requests(session):
    session["cart"] = ["a"]
    session.save()
    first = SessionStore(session.session_key)
    first["cart"].append("b")  # not saved
    assert SessionStore(session.session_key)["cart"] == ["a"]


@pytest.mark.django_db
def test_unserializable_value_raises_like_the_db_engine(session, redis_server):
    def failure(store_class: type) -> type[BaseException] | None:
        s = store_class()
        s["when"] = timezone.now()
        try:
            s.save()
        except Exception as exc:
            return type(exc)
        return None

    assert failure(SessionStore) is failure(DatabaseSessionStore) is TypeError
    client = redis_server.client()
    assert client.dbsize() == 0
    client.close()


def test_pop_and_setdefault_and_update(session):
    session["a"] = 1
    assert session.pop("a") == 1
    assert session.pop("a", "gone") == "gone"
    assert session.setdefault("b", 2) == 2
    session.update({"c": 3})
    assert dict(session.items()) == {"b": 2, "c": 3}


def test_save_then_exists(session):
    session.save()
    assert session.exists(session.session_key)


def test_delete_removes_the_session(session):
    session.save()
    key = session.session_key
    session.delete()
    assert not session.exists(key)
    assert SessionStore(key).load() == {}


def test_delete_of_another_key(session):
    other = SessionStore()
    other.save()
    session.delete(other.session_key)
    assert not session.exists(other.session_key)


def test_flush_deletes_and_forgets_the_key(session):
    session["a"] = 1
    session.save()
    key = session.session_key
    session.flush()
    assert not session.exists(key)
    assert session.session_key is None
    assert session.modified
    assert session.accessed


def test_cycle_key_keeps_data_under_a_new_key(session):
    session["a"] = 1
    session.save()
    old = session.session_key
    session.cycle_key()
    assert session.session_key != old
    assert not session.exists(old)
    assert SessionStore(session.session_key)["a"] == 1


def test_cycle_key_of_an_empty_unsaved_session(session):
    session.cycle_key()
    assert session.exists(session.session_key)


def test_save_must_create_on_existing_key_raises_create_error(session):
    session.save()
    twin = SessionStore(session.session_key)
    with pytest.raises(CreateError):
        twin.save(must_create=True)


def test_create_never_reuses_the_key_of_a_deleted_session(session):
    session.save()
    session.delete()
    twin = SessionStore(session.session_key)
    with pytest.raises(CreateError):
        twin.save(must_create=True)


def test_clear_empties_without_loading(session):
    session["a"] = 1
    session.save()
    s = SessionStore(session.session_key)
    s.clear()
    assert list(s.keys()) == []
    assert s.modified


def test_test_cookie(session):
    session.set_test_cookie()
    assert session.test_cookie_worked()
    session.delete_test_cookie()
    assert not session.test_cookie_worked()


def test_instance_has_every_attribute_sessionbase_init_sets():
    from django.contrib.sessions.backends.base import SessionBase

    base = SessionBase()
    ours = SessionStore()
    # serializer is a property (read when used, not imported on every request).
    assert set(vars(base)) - {"serializer"} <= set(vars(ours))
    assert ours.serializer is base.serializer


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


def test_save_of_a_key_that_no_longer_exists_without_loading_it_raises_update_error(redis_server):
    with pytest.raises(UpdateError):
        SessionStore("a" * 32).save()
    assert raw(redis_server, "a" * 32) == (None, -2)


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


def test_freezegun_moves_the_expiry_of_redis_sessions():
    freezegun = pytest.importorskip("freezegun")
    with freezegun.freeze_time() as frozen:
        s = SessionStore()
        s["a"] = 1
        s.set_expiry(60)
        s.save()
        frozen.tick(59)
        assert SessionStore(s.session_key).get("a") == 1
        frozen.tick(2)
        assert SessionStore(s.session_key).get("a") is None
        assert not s.exists(s.session_key)


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


# -- sizes ----------------------------------------------------------------------------------------


def test_session_too_large_is_a_bad_request_and_keeps_the_old_version(session, caplog, settings):
    session["a"] = "small"
    session.save()
    settings.MEMSESSION_MAX_SESSION_SIZE = "2K"
    session["a"] = "x" * 5000
    with (
        caplog.at_level(logging.ERROR, logger="django_memsession"),
        pytest.raises(SessionTooLarge) as excinfo,
    ):
        session.save()
    assert "MEMSESSION_MAX_SESSION_SIZE" in str(excinfo.value)
    assert SessionStore(session.session_key)["a"] == "small"
    assert session.session_key not in caplog.text
    assert "over MEMSESSION_MAX_SESSION_SIZE" in caplog.text


# -- expiry ---------------------------------------------------------------------------------------


def test_default_expiry_is_session_cookie_age(session, settings):
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE


def test_session_expires_after_cookie_age(session, clock, settings):
    session["_auth_user_id"] = "1"
    session.save()
    clock.advance(settings.SESSION_COOKIE_AGE - 1)
    assert SessionStore(session.session_key).get("_auth_user_id") == "1"
    clock.advance(2)
    assert SessionStore(session.session_key).get("_auth_user_id") is None


def test_redis_expires_the_key_with_the_session(session, redis_server):
    session["_auth_user_id"] = "1"
    session.set_expiry(600)
    session.save()
    _, ttl = raw(redis_server, session.session_key)
    assert 540_000 < ttl <= 600_000


def test_set_expiry_seconds(session, clock):
    session.set_expiry(60)
    session.save()
    clock.advance(61)
    assert not session.exists(session.session_key)


def test_set_expiry_timedelta(session, clock):
    session.set_expiry(timedelta(seconds=90))
    assert 85 <= session.get_expiry_age() <= 90
    session.save()
    clock.advance(91)
    assert not session.exists(session.session_key)


def test_set_expiry_datetime(session, clock):
    session.set_expiry(timezone.now() + timedelta(seconds=30))
    session.save()
    clock.advance(31)
    assert not session.exists(session.session_key)


def test_set_expiry_in_the_past_is_never_returned(session):
    session["a"] = 1
    session.save()
    session.set_expiry(timezone.now() - timedelta(seconds=5))
    session.save()
    assert SessionStore(session.session_key).get("a") is None


def test_set_expiry_zero_expires_at_browser_close_and_lives_cookie_age(session, settings):
    session.set_expiry(0)
    assert session.get_expire_at_browser_close()
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE


def test_set_expiry_none_restores_the_default(session, settings):
    session.set_expiry(60)
    session.set_expiry(None)
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE


@pytest.mark.django_db
@pytest.mark.parametrize("expiry", [math.nan, math.inf, 10**15], ids=["nan", "inf", "huge"])
def test_an_impossible_expiry_raises_as_with_the_db_engine(expiry, redis_server):
    def failure(store_class: type) -> type[BaseException] | None:
        s = store_class()
        s["a"] = 1
        s.set_expiry(expiry)
        try:
            s.save()
        except Exception as exc:
            return type(exc)
        return None

    expected = failure(DatabaseSessionStore)
    assert expected in (ValueError, OverflowError)
    assert failure(SessionStore) is expected
    client = redis_server.client()
    assert client.dbsize() == 0
    client.close()


def test_update_of_an_expired_session_raises_update_error(session, clock):
    session.set_expiry(10)
    session.save()
    loaded = SessionStore(session.session_key)
    loaded["a"] = 1
    clock.advance(11)
    # Redis still holds the key (its TTL runs on real time); the web server's clock says it
    # has expired, and that decides.
    with pytest.raises(UpdateError):
        loaded.save()


def test_clear_expired_keeps_live_sessions(session):
    session.save()
    assert SessionStore.clear_expired() is None
    assert session.exists(session.session_key)


# -- async twins ----------------------------------------------------------------------------------

needs_django5_async = pytest.mark.skipif(
    django.VERSION < (5, 0), reason="SessionBase's async API arrived in Django 5.0"
)


async def test_async_engine_methods_round_trip():
    s = SessionStore()
    s["a"] = 1
    await s.asave()
    loaded = SessionStore(s.session_key)
    assert await loaded.aload() == {"a": 1}
    await loaded.adelete()
    assert not await s.aexists(s.session_key)


@needs_django5_async
async def test_async_round_trip():
    s = SessionStore()
    await s.aset("a", 1)
    await s.asave()
    loaded = SessionStore(s.session_key)
    assert await loaded.aget("a") == 1
    assert await loaded.aexists(s.session_key)


async def test_async_create_and_must_create_conflict():
    s = SessionStore()
    await s.acreate()
    twin = SessionStore(s.session_key)
    with pytest.raises(CreateError):
        await twin.asave(must_create=True)


@needs_django5_async
async def test_async_update_after_delete_raises_update_error():
    s = SessionStore()
    await s.aset("a", 1)
    await s.asave()
    other = SessionStore(s.session_key)
    await other.aget("a")
    await s.adelete()
    await other.aset("b", 2)
    with pytest.raises(UpdateError):
        await other.asave()


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


@needs_django5_async
async def test_async_flush_and_cycle_key():
    s = SessionStore()
    await s.aset("a", 1)
    await s.asave()
    old = s.session_key
    await s.acycle_key()
    assert s.session_key != old
    assert not await s.aexists(old)
    await s.aflush()
    assert s.session_key is None


async def test_async_unknown_key_loads_empty():
    s = SessionStore("b" * 32)
    assert await s.aload() == {}
    assert s.session_key is None


@needs_django5_async
async def test_async_expiry(clock):
    s = SessionStore()
    await s.aset_expiry(10)
    await s.asave()
    clock.advance(11)
    assert not await s.aexists(s.session_key)
    assert await SessionStore.aclear_expired() is None


async def test_async_promotes_a_session_that_comes_back(redis_server, settings):
    s = SessionStore()
    s["cart"] = ["tea"]
    await s.asave()
    assert await SessionStore(s.session_key).aload() == {"cart": ["tea"]}
    _, ttl = raw(redis_server, s.session_key)
    assert ttl > settings.SESSION_COOKIE_AGE * 1000 - 60_000
