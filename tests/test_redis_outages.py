"""Outages, with real faults on a real Redis: a hang (SIGSTOP), a kill, a restart, dropped
connections, a full Redis, a read-only replica.

An outage is a 503 with Retry-After through this package's middleware, within 3 s even when
Redis hangs; never a logout (no Set-Cookie), never an empty session; one log line per outage;
and everything works again, without a restart, when Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import Client
from redis_server import RedisServer
from testsite import views

from django_memsession import middleware
from django_memsession.redis import SessionBackendUnavailable, SessionStore
from django_memsession.redis.store import get_store

# The bound for a 503 when Redis hangs silently; the defaults (1 s socket timeouts, no
# retry after a timeout) answer in about 1 s.
HANG_BOUND = 3.0


@pytest.fixture(autouse=True)
def fresh_outage_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(middleware, "outages", middleware.OutageLog())


@pytest.fixture
def interfere() -> Iterator[None]:
    yield
    views.between_load_and_save = None


def visitor(client: Client) -> str:
    """A visitor with a session (one visit, a cart); their session key."""
    assert client.get("/session/make/").json()["visits"] == 1
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def assert_unavailable(response) -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == str(middleware.SessionMiddleware.retry_after)
    # No Set-Cookie at all: neither a deletion nor a new session.
    assert settings.SESSION_COOKIE_NAME not in response.cookies


def stored_visits(server: RedisServer, session_key: str) -> int | None:
    store = get_store()
    client = server.client()
    try:
        record = client.get(store.key(session_key))
    finally:
        client.close()
    return None if record is None else SessionStore(session_key).get("visits")


# -- through this package's middleware ------------------------------------------------------------


@pytest.mark.usefixtures("redis_site")
def test_a_hanging_redis_is_a_503_within_3_seconds_and_keeps_the_session(client, redis_server):
    visitor(client)
    redis_server.pause()
    try:
        started = time.monotonic()
        response = client.get("/session/make/")
        elapsed = time.monotonic() - started
    finally:
        redis_server.resume()
    assert_unavailable(response)
    assert elapsed < HANG_BOUND
    assert client.get("/session/whoami/").json()["visits"] == 1


@pytest.mark.usefixtures("redis_site")
def test_redis_hanging_between_load_and_save_is_a_503_within_3_seconds(
    client, redis_server, interfere
):
    key = visitor(client)
    views.between_load_and_save = lambda session_key: redis_server.pause()
    try:
        started = time.monotonic()
        response = client.get("/session/step/")
        elapsed = time.monotonic() - started
    finally:
        redis_server.resume()
    assert_unavailable(response)
    assert elapsed < HANG_BOUND
    assert SessionStore(key)["cart"] == [{"sku": "tea", "qty": 1}]


@pytest.mark.usefixtures("redis_site")
def test_a_timed_out_conditional_write_is_sent_once_never_retried(client, redis_server, interfere):
    visitor(client)
    loads_and_saves = redis_server.calls("evalsha")
    views.between_load_and_save = lambda session_key: redis_server.pause()
    try:
        assert_unavailable(client.get("/session/step/"))
    finally:
        redis_server.resume()
    # The load, and the save that timed out: Redis may still run what it had received, once.
    deadline = time.monotonic() + 5
    while redis_server.calls("evalsha") < loads_and_saves + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_server.calls("evalsha") == loads_and_saves + 2


@pytest.mark.usefixtures("redis_site")
def test_a_stopped_redis_is_a_503_and_a_restarted_one_serves_again(client, redis_server):
    visitor(client)
    redis_server.kill()
    try:
        assert_unavailable(client.get("/session/make/"))
        assert_unavailable(Client().get("/session/make/"))  # a new visitor too
    finally:
        redis_server.restart()  # an empty Redis: this test server keeps nothing on disk
    newcomer = Client()
    assert newcomer.get("/session/make/").json()["visits"] == 1
    assert newcomer.get("/session/make/").json()["visits"] == 2


@pytest.mark.usefixtures("redis_site")
def test_dropped_idle_connections_are_retried_on_a_fresh_one(client, redis_server):
    visitor(client)
    assert redis_server.client_kill() >= 1  # the engine's pooled connection
    response = client.get("/session/make/")
    assert response.status_code == 200
    assert response.json()["visits"] == 2


@pytest.mark.usefixtures("redis_site")
def test_a_full_redis_that_evicts_nothing_is_a_503_on_create_with_a_clear_log_line(
    client, redis_server, caplog
):
    key = visitor(client)
    redis_server.set_maxmemory(1, "noeviction")
    with caplog.at_level(logging.ERROR, logger="django_memsession"):
        assert_unavailable(Client().get("/session/make/"))
    assert client.get("/session/whoami/").json()["visits"] == 1  # reads still work
    [line] = [r.getMessage() for r in caplog.records if r.name == "django_memsession"]
    assert "out of memory" in line
    assert "volatile-ttl" in line
    assert key not in caplog.text


@pytest.mark.usefixtures("redis_site")
def test_a_read_only_replica_is_a_503_on_save_and_still_serves_reads(client, redis_server):
    visitor(client)
    returning = Client()
    visitor(returning)
    with socket.socket() as probe:  # a port where no master will ever answer
        probe.bind(("127.0.0.1", 0))
        nowhere = probe.getsockname()[1]
    replica = redis_server.client()
    replica.execute_command("REPLICAOF", "127.0.0.1", str(nowhere))
    replica.close()
    assert client.get("/session/whoami/").json()["visits"] == 1
    assert returning.get("/session/whoami/").json()["visits"] == 1
    assert_unavailable(client.get("/session/make/"))


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.usefixtures("redis_site")
def test_an_outage_is_logged_once_not_once_per_request(client, redis_server, caplog, monkeypatch):
    clock = FakeMonotonic()
    monkeypatch.setattr(middleware, "outages", middleware.OutageLog(interval=60, clock=clock))
    key = visitor(client)
    with caplog.at_level(logging.INFO):
        redis_server.kill()
        try:
            for _ in range(5):
                assert_unavailable(client.get("/session/make/"))
                clock.now += 1
            clock.now += 60  # a minute without failures: the next one is a new outage
            assert_unavailable(client.get("/session/make/"))
        finally:
            redis_server.restart()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 2
    assert all("Session store unavailable, answering 503" in line for line in lines)
    assert key not in caplog.text


def test_reminders_while_an_outage_lasts_are_rate_limited(caplog):
    clock = FakeMonotonic()
    log = middleware.OutageLog(interval=60, clock=clock)
    exc = SessionBackendUnavailable("ConnectionError: refused")
    with caplog.at_level(logging.ERROR, logger="django_memsession"):
        for _ in range(150):
            log.failed(exc, 5)
            clock.now += 1
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3  # after 0 s, 60 s and 120 s of failures
    assert "60 requests answered 503 since the last message" in messages[1]


# -- without this package's middleware -----------------------------------------------------------


@pytest.mark.usefixtures("redis_url")
def test_with_djangos_middleware_an_outage_is_an_error_and_never_a_logout(redis_server):
    client = Client(raise_request_exception=False)
    key = visitor(client)
    redis_server.kill()
    try:
        response = client.get("/session/make/")
    finally:
        redis_server.restart()
    assert response.status_code == 500
    assert settings.SESSION_COOKIE_NAME not in response.cookies  # the cookie is not deleted
    assert client.cookies[settings.SESSION_COOKIE_NAME].value == key


@pytest.mark.usefixtures("redis_url")
def test_the_engine_raises_its_exception_and_never_loads_an_empty_session(redis_server):
    session = SessionStore()
    session["a"] = 1
    session.save()
    loaded = SessionStore(session.session_key)
    redis_server.kill()
    try:
        with pytest.raises(SessionBackendUnavailable) as excinfo:
            loaded["a"]
    finally:
        redis_server.restart()
    assert loaded.outage is excinfo.value
    assert loaded.session_key == session.session_key  # kept: not mistaken for a logout
    assert not loaded.is_empty()
    assert session.session_key not in str(excinfo.value)


@pytest.mark.usefixtures("redis_url")
async def test_async_methods_raise_within_the_bound_and_never_block_the_loop(redis_server):
    session = SessionStore()
    session["a"] = 1
    await session.asave()
    events: list[str] = []

    async def meanwhile() -> None:
        await asyncio.sleep(0.05)
        events.append("the loop ran another task")

    async def load() -> None:
        try:
            await SessionStore(session.session_key).aload()
        except SessionBackendUnavailable:
            events.append("unavailable")

    redis_server.pause()
    try:
        started = time.monotonic()
        await asyncio.gather(load(), meanwhile())
        elapsed = time.monotonic() - started
    finally:
        redis_server.resume()
    assert events == ["the loop ran another task", "unavailable"]
    assert elapsed < HANG_BOUND
    assert await SessionStore(session.session_key).aload() == {"a": 1}


@pytest.mark.usefixtures("redis_url")
async def test_async_dropped_connections_are_retried_and_a_restart_is_survived(redis_server):
    session = SessionStore()
    session["a"] = 1
    await session.asave()
    assert redis_server.client_kill() >= 1
    assert await SessionStore(session.session_key).aload() == {"a": 1}
    redis_server.kill()
    try:
        with pytest.raises(SessionBackendUnavailable):
            await SessionStore(session.session_key).aload()
    finally:
        redis_server.restart()
    fresh = SessionStore()
    fresh["b"] = 2
    await fresh.asave()
    assert await SessionStore(fresh.session_key).aload() == {"b": 2}


@pytest.mark.usefixtures("redis_url")
@pytest.mark.parametrize(
    ("error", "attempts"),
    [("ConnectionError", 2), ("TimeoutError", 1)],
    ids=["dropped connection: retried once", "timeout: never retried"],
)
def test_the_engines_retry_policy(error, attempts):
    """A hung Redis may have received the write: after a timeout nothing is re-sent. (A real
    SIGSTOP cannot show the difference: a retry never gets past the new connection's
    handshake.)"""
    import redis

    retry = get_store().client.connection_pool.connection_kwargs["retry"]
    calls = []

    def attempt() -> None:
        calls.append(1)
        raise getattr(redis, error)("fault")

    with pytest.raises(getattr(redis, error)):
        retry.call_with_retry(attempt, lambda exc: None)
    assert len(calls) == attempts
