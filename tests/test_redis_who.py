"""Who is logged in on the Redis engine, through Django, on a real Redis: what is the Redis
index's own (a logout or an ending is never undone in the index, the index's TTL, lazy cleaning,
the per-user limit as it counts use). What every engine keeps is in ``test_contract_who.py``."""

from __future__ import annotations

import logging
import time

import pytest
from accounts import key_of, logged_in, whoami
from conftest import FakeClock
from django.contrib.auth import login
from django.contrib.auth.models import User
from django.contrib.sessions.backends.base import UpdateError
from django.test import Client, RequestFactory, override_settings
from redis_index import gone_long_ago
from redis_server import RedisServer

import django_memsession
from django_memsession.logged_in import session_id
from django_memsession.redis import SessionStore
from django_memsession.redis import store as store_module
from django_memsession.redis.index import INDEX_TTL_MARGIN_MS, LAST_USED_INTERVAL
from django_memsession.redis.store import RedisStore, get_store

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_site")]


@pytest.fixture
def global_clock(redis_site: str, monkeypatch) -> FakeClock:
    """Move the Redis store's clock (Redis's own TTLs keep real time), also for a store rebuilt
    by a settings change."""
    fake = FakeClock(time.time())
    build = store_module._build

    def build_with_fake_clock() -> RedisStore:
        store = build()
        store.clock = fake
        return store

    monkeypatch.setattr(store_module, "_build", build_with_fake_clock)
    monkeypatch.setattr(get_store(), "clock", fake)
    return fake


def users_hash(server: RedisServer, user: User) -> dict[bytes, bytes]:
    client = server.client()
    try:
        return client.hgetall(get_store().index.users_key(str(user.pk)))
    finally:
        client.close()


# -- the index ------------------------------------------------------------------------------------


def test_a_login_writes_one_member_under_the_user(alice, redis_server):
    client = logged_in(alice)
    assert list(users_hash(redis_server, alice)) == [key_of(client).encode()]


def test_anonymous_sessions_write_no_index(redis_server):
    for _ in range(5):
        Client().get("/session/make/")
    client = redis_server.client()
    try:
        assert list(client.scan_iter(match=b"memsession:u:*")) == []
    finally:
        client.close()


def test_the_index_lives_as_long_as_its_longest_session(alice, redis_server, settings):
    logged_in(alice)
    client = redis_server.client()
    try:
        ttl = client.pttl(get_store().index.users_key(str(alice.pk)))
    finally:
        client.close()
    age = settings.SESSION_COOKIE_AGE * 1000
    assert age < ttl <= age + INDEX_TTL_MARGIN_MS  # and a margin (see users.INDEX_TTL_MARGIN_MS)


def test_a_logout_removes_the_member_in_its_round_trip(alice, redis_server):
    client = logged_in(alice)
    client.post("/logout/")
    assert users_hash(redis_server, alice) == {}


def test_a_cycle_key_after_login_moves_the_member_in_the_index(alice, redis_server):
    request = RequestFactory().get("/")
    request.session = SessionStore()
    request.session["cart"] = ["tea"]
    request.session.save()
    anonymous_key = request.session.session_key
    login(request, alice, backend="django.contrib.auth.backends.ModelBackend")
    request.session.save()
    (record,) = django_memsession.user_sessions(alice)
    assert record.id == session_id(request.session.session_key)
    assert not SessionStore().exists(anonymous_key)
    request.session.cycle_key()
    assert list(users_hash(redis_server, alice)) == [request.session.session_key.encode()]


def test_a_save_after_a_logout_adds_nothing_to_the_index(alice, redis_server):
    client = logged_in(alice)
    stale = SessionStore(key_of(client))
    stale["seen"] = 1
    stale.load()
    client.post("/logout/")
    stale.modified = True
    with pytest.raises(UpdateError):
        stale.save()
    assert users_hash(redis_server, alice) == {}
    assert django_memsession.user_sessions(alice) == []


def test_a_save_after_an_ending_adds_nothing_to_the_index(alice, redis_server):
    client = logged_in(alice)
    stale = SessionStore(key_of(client))
    stale["seen"] = 1
    assert django_memsession.end_user_sessions(alice) == 1
    with pytest.raises(UpdateError):
        stale.save()
    assert users_hash(redis_server, alice) == {}


def test_a_session_gone_without_a_logout_is_cleaned_from_the_index_on_read(alice, redis_server):
    gone, kept = logged_in(alice), logged_in(alice)
    client = redis_server.client()
    try:
        gone_long_ago(client, key_of(gone), str(alice.pk))  # as an eviction would
    finally:
        client.close()
    assert [r.id for r in django_memsession.user_sessions(alice)] == [session_id(key_of(kept))]
    assert list(users_hash(redis_server, alice)) == [key_of(kept).encode()]


def test_a_session_no_longer_logged_in_leaves_the_index(alice, redis_server):
    client = logged_in(alice)
    session = SessionStore(key_of(client))
    del session["_auth_user_id"]
    session.save()
    assert users_hash(redis_server, alice) == {}


def test_a_load_refreshes_last_used_at_most_once_an_interval(alice, global_clock, redis_server):
    client = logged_in(alice)
    (before,) = django_memsession.user_sessions(alice)
    global_clock.advance(LAST_USED_INTERVAL - 1)
    calls = redis_server.calls()
    whoami(client)
    assert redis_server.calls() - calls == 1  # the load's GET alone
    global_clock.advance(1)
    writes = redis_server.calls("hset")
    whoami(client)
    assert redis_server.calls("hset") - writes == 1  # the use is noted
    (after,) = django_memsession.user_sessions(alice)
    assert after.last_used == before.last_used + LAST_USED_INTERVAL


def test_a_save_soon_after_the_last_indexed_one_leaves_the_index_alone(alice, redis_server):
    client = logged_in(alice)
    session = SessionStore(key_of(client))
    session["cart"] = ["tea"]
    writes = redis_server.calls("hset", "hdel", "pexpire")
    session.save()
    assert redis_server.calls("hset", "hdel", "pexpire") == writes
    assert list(users_hash(redis_server, alice)) == [key_of(client).encode()]


def test_an_evicted_session_saved_again_is_indexed_again(alice, redis_server):
    client = logged_in(alice)
    session = SessionStore(key_of(client))
    session["cart"] = ["tea"]
    raw = redis_server.client()
    try:
        raw.delete(get_store().key(key_of(client)))  # evicted by Redis
    finally:
        raw.close()
    get_store().index.prune_index()  # and its member cleaned
    session.save()
    assert list(users_hash(redis_server, alice)) == [key_of(client).encode()]


async def test_async_saves_and_loads_keep_the_index(alice, redis_server):
    # The engine's own async methods (Django 4.2 has no aget/aset/aflush).
    session = SessionStore()
    session["_auth_user_id"] = str(alice.pk)
    await session.asave()
    loaded = SessionStore(session.session_key)
    assert (await loaded.aload())["_auth_user_id"] == str(alice.pk)
    assert list(users_hash(redis_server, alice)) == [session.session_key.encode()]
    await loaded.adelete()
    assert users_hash(redis_server, alice) == {}


# -- limits ---------------------------------------------------------------------------------------


def test_most_recently_used_first(alice, global_clock):
    # A load counts as use to LAST_USED_INTERVAL (see users.LastUsed); a save at once.
    first = logged_in(alice)
    global_clock.advance(5)
    second = logged_in(alice)
    global_clock.advance(LAST_USED_INTERVAL)
    whoami(first)
    ids = [record.id for record in django_memsession.user_sessions(alice)]
    assert ids == [session_id(key_of(first)), session_id(key_of(second))]


@override_settings(MEMSESSION_MAX_SESSIONS_PER_USER=2)
def test_a_login_beyond_the_per_user_limit_ends_the_least_recently_used(
    alice, global_clock, ended_signals
):
    # "Least recently used" as the index knows it: to LAST_USED_INTERVAL for loads.
    first = logged_in(alice)
    global_clock.advance(1)
    second = logged_in(alice)
    global_clock.advance(LAST_USED_INTERVAL)
    whoami(first)  # second is now the least recently used
    third = logged_in(alice)
    assert [whoami(c) for c in (first, second, third)] == [str(alice.pk), None, str(alice.pk)]
    assert [(s["count"], s["reason"]) for s in ended_signals] == [(1, "limit")]


@override_settings(MEMSESSION_MAX_SESSIONS_PER_USER=1)
def test_logging_in_again_in_the_same_browser_ends_nothing(alice, ended_signals):
    client = logged_in(alice)
    response = client.post("/accounts/login/", {"username": "alice", "password": "old password 1"})
    assert response.status_code == 302
    assert whoami(client) == str(alice.pk)
    assert ended_signals == []


@override_settings(MEMSESSION_MAX_SESSIONS_PER_USER=1)
def test_the_limit_ending_is_logged_without_a_key(alice, caplog):
    first = logged_in(alice)
    with caplog.at_level(logging.INFO, logger="django_memsession"):
        second = logged_in(alice)
    keys = key_of(first), key_of(second)
    assert (whoami(first), whoami(second)) == (None, str(alice.pk))
    assert not any(key in caplog.text for key in keys)
    assert f"Ended 1 session(s) of user {alice.pk} (limit)" in caplog.text


@pytest.mark.django_db(transaction=True)  # the ending waits for the save's commit
def test_a_password_change_while_redis_is_down_is_logged_and_does_not_fail(alice, settings, caplog):
    from django_memsession.redis import store

    logged_in(alice)
    settings.MEMSESSION_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    store.reset()
    alice.set_password("set in the shell 3")
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        alice.save()
    assert "Redis could not be reached" in caplog.text


def test_records_on_redis_name_no_process(alice):
    logged_in(alice)
    (record,) = django_memsession.user_sessions(alice)
    assert record.pid == 0
