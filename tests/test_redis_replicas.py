"""A failover never undoes a logout: the Redis engine waits for replicas (``WAIT``) after a write
that ends a logged-in session or logs one in, on a real primary with a real replica.

Whether the engine waited shows in the primary's own counters (``INFO commandstats``'s
``cmdstat_wait``). A replica that cannot acknowledge is paused (SIGSTOP): it loses nothing (the
kernel keeps what the primary sent), but it does not acknowledge, so ``WAIT`` times out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import django
import pytest
from django.conf import settings as django_settings
from django.test import Client
from redis_server import DJANGOS_MIDDLEWARE, OUR_MIDDLEWARE, RedisServer, server_executable

from django_memsession.redis import SessionStore
from django_memsession.redis.exceptions import SessionBackendUnavailable
from django_memsession.redis.record import TOMBSTONE
from django_memsession.redis.replicas import in_sync
from django_memsession.redis.scripts import PARTS, source
from django_memsession.redis.store import get_store

AUTH = "_auth_user_id"

# A primary and a replica of this module's own: every test here reaches a Redis server.
pytestmark = pytest.mark.redis

needs_django5_async = pytest.mark.skipif(
    django.VERSION < (5, 0), reason="SessionBase's async API arrived in Django 5.0"
)


def _until(condition, what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.02)


def _replica_up(primary: RedisServer, replica: RedisServer) -> bool:
    client, other = primary.client(), replica.client()
    try:
        # In sync as the primary sees it (``state=online``): what the engine counts.
        return (
            in_sync(client.info("replication")) == 1
            and other.info("replication").get("master_link_status") == "up"
        )
    finally:
        client.close()
        other.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary, and a replica of it (``REPLICAOF``, sent once it runs)."""
    executable = server_executable()  # skips, or fails under MEMSESSION_REQUIRE_REDIS=1
    pytest.importorskip("redis")
    primary, replica = RedisServer(executable), RedisServer(executable)
    primary.start()
    replica.start()
    client = replica.client()
    client.execute_command("REPLICAOF", "127.0.0.1", primary.port)
    client.close()
    yield primary, replica
    replica.stop()
    primary.stop()


@pytest.fixture
def primary(servers, settings) -> Iterator[RedisServer]:
    """The engine on the primary, its replica connected and caught up, counters at zero."""
    from django_memsession.redis import store

    primary, replica = servers
    if replica.paused:
        replica.resume()
    _until(lambda: _replica_up(primary, replica), "the replica is connected")
    client = primary.client()
    client.flushall()
    for name in PARTS:  # loaded: no NOSCRIPT retry (with its own WAIT) in a count
        client.script_load(source(name))
    client.config_resetstat()
    client.close()
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = primary.url
    settings.MIDDLEWARE = [
        OUR_MIDDLEWARE if name == DJANGOS_MIDDLEWARE else name for name in settings.MIDDLEWARE
    ]
    store.reset()
    yield primary
    if replica.paused:
        replica.resume()
    store.reset()


@pytest.fixture
def replica(servers) -> RedisServer:
    return servers[1]


def waits(server: RedisServer) -> int:
    return server.calls("wait")


def logged_in(client: Client) -> str:
    client.get("/session/make/")
    client.get("/session/sign-in/?user=7")
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


def on_replica(replica: RedisServer, session_key: str) -> bytes | None:
    client = replica.client()
    try:
        return client.get(get_store().key(session_key))
    finally:
        client.close()


def test_a_logout_waits_for_the_replica(primary, replica):
    client = Client()
    key = logged_in(client)
    before = waits(primary)
    assert client.get("/session/sign-out/").status_code == 200
    assert waits(primary) == before + 1
    # Acknowledged: the replica has the tombstone when the logout returns.
    assert on_replica(replica, key) == TOMBSTONE


def test_a_login_waits_once(primary):
    client = Client()
    client.get("/session/make/")
    assert waits(primary) == 0
    client.get("/session/sign-in/?user=7")  # cycle_key (an anonymous ending) and the save
    assert waits(primary) == 1


def test_an_anonymous_save_does_not_wait(primary):
    client = Client()
    client.get("/session/make/")
    client.get("/session/make/")
    assert waits(primary) == 0


def test_a_save_of_a_logged_in_session_does_not_wait(primary):
    client = Client()
    logged_in(client)
    before = waits(primary)
    for _ in range(3):
        assert client.get("/session/make/").status_code == 200
    assert waits(primary) == before


def test_ending_a_users_sessions_waits(primary, replica):
    client = Client()
    key = logged_in(client)
    before = waits(primary)
    assert get_store().end_sessions("7", [key]) == 1
    assert waits(primary) == before + 1
    assert on_replica(replica, key) == TOMBSTONE


def test_a_logout_no_replica_acknowledges_is_a_503_and_the_tombstone_stays(primary, replica):
    client = Client()
    key = logged_in(client)
    replica.pause()
    response = client.get("/session/sign-out/")
    assert response.status_code == 503
    assert primary.client().get(get_store().key(key)) == TOMBSTONE
    # Pressing logout again once the replica is back works, and the session stays ended.
    replica.resume()
    assert Client().get("/session/whoami/").status_code == 200


def test_a_logout_no_replica_acknowledges_raises_unavailable(primary, replica, settings):
    # Longer than the 1 s socket timeout: the WAIT's reply is read with both, so the wait is
    # what runs out, not the socket.
    settings.MEMSESSION_REDIS_WAIT_TIMEOUT = 1.5
    session = SessionStore()
    session[AUTH] = "7"
    session.save()
    replica.pause()
    with pytest.raises(SessionBackendUnavailable, match="WAIT"):
        session.flush()


def test_a_login_no_replica_acknowledges_goes_on_and_is_logged_once(primary, replica, caplog):
    replica.pause()
    with caplog.at_level(logging.WARNING, logger="django_memsession.redis"):
        for _ in range(2):
            client = Client()
            client.get("/session/make/")
            assert client.get("/session/sign-in/?user=7").status_code == 200
            assert client.get("/session/whoami/").json()["user"] == "7"
    lines = [r for r in caplog.records if "login was written on the primary" in r.getMessage()]
    assert len(lines) == 1


def test_wait_replicas_zero_sends_no_wait(primary, settings):
    settings.MEMSESSION_REDIS_WAIT_REPLICAS = 0
    client = Client()
    logged_in(client)
    client.get("/session/sign-out/")
    assert waits(primary) == 0


def test_a_number_of_replicas_is_waited_for(primary, settings):
    settings.MEMSESSION_REDIS_WAIT_REPLICAS = 1
    client = Client()
    logged_in(client)
    client.get("/session/sign-out/")
    assert waits(primary) == 2


def test_no_replica_connected_sends_no_wait(redis_url, redis_server, settings):
    settings.MIDDLEWARE = [
        OUR_MIDDLEWARE if name == DJANGOS_MIDDLEWARE else name for name in settings.MIDDLEWARE
    ]
    client = Client()
    logged_in(client)
    assert client.get("/session/sign-out/").status_code == 200
    assert redis_server.calls("wait") == 0


def blocked_in_wait(server: RedisServer) -> bool:
    client = server.client()
    try:
        return any(
            entry.get("cmd") == "wait" and "b" in entry.get("flags", "")
            for entry in client.client_list()
        )
    finally:
        client.close()


def test_the_wait_does_not_hold_the_near_cache_writer(primary, replica, settings):
    settings.MEMSESSION_REDIS_NEAR_CACHE = "1M"
    # A wait long enough to save meanwhile (longer than the 1 s socket timeout: the WAIT's
    # reply is read with both).
    settings.MEMSESSION_REDIS_WAIT_TIMEOUT = 2.0
    client = Client()
    logged_in(client)
    store = get_store()
    assert store.near is not None and store.near.up
    anonymous = SessionStore()
    anonymous["visits"] = 1
    anonymous.save()
    anonymous = SessionStore(anonymous.session_key)
    anonymous.load()  # came back: its saves are settled, on the writer connection
    replica.pause()
    logout_done = threading.Event()
    outcome: list[int] = []

    def logout() -> None:
        outcome.append(client.get("/session/sign-out/").status_code)
        logout_done.set()

    thread = threading.Thread(target=logout)
    thread.start()
    # The logout is waiting on the paused replica once the primary holds a client blocked in
    # WAIT (CLIENT LIST: Valkey counts a blocked WAIT in its commandstats only when it returns) ...
    _until(lambda: blocked_in_wait(primary), "the logout's WAIT is sent")
    anonymous["visits"] = 2
    anonymous.save()  # ... and a save through the writer connection completes meanwhile
    assert not logout_done.is_set()
    thread.join(10)
    assert outcome == [503]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MEMSESSION_REDIS_WAIT_REPLICAS", "all", "memsession.E120"),
        ("MEMSESSION_REDIS_WAIT_REPLICAS", -1, "memsession.E120"),
        ("MEMSESSION_REDIS_WAIT_REPLICAS", True, "memsession.E120"),
        ("MEMSESSION_REDIS_WAIT_TIMEOUT", 0, "memsession.E121"),
        ("MEMSESSION_REDIS_WAIT_TIMEOUT", "1s", "memsession.E121"),
    ],
)
def test_each_bad_wait_setting_has_its_own_id_and_a_hint(name, value, expected, settings):
    from django_memsession.redis.checks import check_redis_settings

    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = "redis://127.0.0.1:6379/0"
    setattr(settings, name, value)
    (message,) = check_redis_settings()
    assert message.id == expected
    assert message.hint


# -- async: the same waits on redis.asyncio --------------------------------------------------


async def alogged_in() -> SessionStore:
    session = SessionStore()
    session["visits"] = 1
    await session.asave()
    session = SessionStore(session.session_key)
    await session.aload()
    await session.acycle_key()  # login(): the anonymous ending does not wait
    session[AUTH] = "7"
    await session.asave()  # the save that logs it in waits
    return session


@needs_django5_async
async def test_an_async_login_waits_once_and_an_async_logout_once(primary, replica):
    session = await alogged_in()
    assert waits(primary) == 1
    key = session.session_key
    await session.aflush()
    assert waits(primary) == 2
    assert on_replica(replica, key) == TOMBSTONE


@needs_django5_async
async def test_an_async_ending_waits(primary):
    session = await alogged_in()
    before = waits(primary)
    assert await get_store().index.aend_sessions("7", [session.session_key]) == 1
    assert waits(primary) == before + 1


@needs_django5_async
async def test_an_async_logout_no_replica_acknowledges_raises_unavailable(
    primary, replica, settings
):
    # Longer than the 1 s socket timeout: the WAIT's reply is read with both, so the wait is
    # what runs out, not the socket.
    settings.MEMSESSION_REDIS_WAIT_TIMEOUT = 1.5
    session = await alogged_in()
    key = session.session_key
    replica.pause()
    with pytest.raises(SessionBackendUnavailable, match="WAIT"):
        await session.aflush()
    assert primary.client().get(get_store().key(key)) == TOMBSTONE


@needs_django5_async
async def test_an_async_flush_of_a_session_never_loaded_waits(primary):
    session = await alogged_in()
    before = waits(primary)
    await SessionStore(session.session_key).adelete()
    assert waits(primary) == before + 1


def test_info_refused_waits_for_no_replica_and_says_so_once(primary, settings, caplog):
    from django_memsession.redis import store

    admin = primary.client()
    admin.acl_setuser(
        "noinfo", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-info"]
    )
    settings.MEMSESSION_REDIS_URL = f"redis://noinfo:pw@127.0.0.1:{primary.port}/0"
    store.reset()
    try:
        with caplog.at_level(logging.WARNING, logger="django_memsession.redis"):
            for _ in range(2):
                client = Client()
                logged_in(client)
                assert client.get("/session/sign-out/").status_code == 200
        assert waits(primary) == 0
        refused = [r for r in caplog.records if "INFO replication is refused" in r.message]
        assert len(refused) == 1
    finally:
        store.reset()
        admin.acl_deluser("noinfo")
        admin.close()


def test_a_save_that_drops_the_user_waits(primary):
    session = SessionStore()
    session[AUTH] = "7"
    session.save()
    session = SessionStore(session.session_key)
    session.load()
    before = waits(primary)
    del session[AUTH]  # a logout without flush(): the session goes on, anonymous
    session.save()
    assert waits(primary) == before + 1


# -- the count: in sync only; lowered at once on a new primary, slowly on the same one -----------


class FakeInfo:
    """``INFO replication`` as redis-py parses it, as the test sets it (the rules about the
    count, without a failover to stage)."""

    def __init__(self) -> None:
        self.replicas: list[str] = []
        self.replid = "a" * 40

    def info(self, section: str) -> dict:
        assert section == "replication"
        found: dict = {"role": "master", "master_replid": self.replid}
        found["connected_slaves"] = len(self.replicas)
        for number, state in enumerate(self.replicas):
            found[f"slave{number}"] = {"ip": "127.0.0.1", "port": 7000 + number, "state": state}
        return found


def counting(info: FakeInfo, now: list[float]):
    from django_memsession.redis.replicas import Replicas

    replicas = Replicas(info, "connected", 0.5, clock=lambda: now[0])
    replicas._read_soon = replicas._read  # the background read, on the test's thread
    return replicas


def test_a_replica_still_loading_its_first_copy_is_not_waited_for():
    info, now = FakeInfo(), [100.0]
    info.replicas = ["online", "wait_bgsave", "send_bulk"]
    assert counting(info, now).needed() == 1


def test_a_replica_gone_from_the_same_primary_is_believed_only_after_the_refresh_interval():
    from django_memsession.redis.replicas import REFRESH

    info, now = FakeInfo(), [100.0]
    info.replicas = ["online"]
    replicas = counting(info, now)
    assert replicas.needed() == 1
    info.replicas = []  # perhaps promoted away: this primary's writes may be lost
    now[0] += REFRESH
    assert replicas.needed() == 1
    now[0] += REFRESH
    assert replicas.needed() == 0


def test_a_new_primary_is_counted_at_once():
    from django_memsession.redis.replicas import REFRESH

    info, now = FakeInfo(), [100.0]
    info.replicas = ["online"]
    replicas = counting(info, now)
    assert replicas.needed() == 1
    info.replicas, info.replid = [], "b" * 40  # a failover: another primary, no replica yet
    now[0] += REFRESH
    assert replicas.needed() == 0


def test_a_new_replica_is_counted_at_once():
    from django_memsession.redis.replicas import REFRESH

    info, now = FakeInfo(), [100.0]
    replicas = counting(info, now)
    assert replicas.needed() == 0
    info.replicas = ["online"]
    now[0] += REFRESH
    assert replicas.needed() == 1


def test_a_wait_that_comes_back_short_drops_the_pools_connections(primary, replica):
    """So the next writes connect again (through Sentinel: to whichever primary the sentinels
    name now, not to an old primary whose replica was promoted away)."""
    admin = primary.client()
    try:
        earlier = {c["id"] for c in admin.client_list(_type="normal")}  # other tests' leftovers
        client = Client()
        logged_in(client)
        ours = {c["id"] for c in admin.client_list(_type="normal")} - earlier
        replica.pause()
        assert client.get("/session/sign-out/").status_code == 503
        left = {c["id"] for c in admin.client_list(_type="normal")}
    finally:
        admin.close()
    assert ours and not (ours & left)


def test_a_wait_on_a_node_demoted_to_a_replica_is_recognised(primary, replica):
    """A failover between a write and its WAIT: the WAIT is refused as sent to a replica; the
    cluster runner learns the slot map again and sends the step to the new primary."""
    from django_memsession.redis.replicas import WaitingRun, demoted

    on_replica = replica.client()
    try:
        replies = WaitingRun(on_replica, 1, 100).replies([("PING",)])
    finally:
        on_replica.close()
    assert demoted(replies)
    on_primary = primary.client()
    try:
        assert not demoted(WaitingRun(on_primary, 1, 100).replies([("PING",)]))
    finally:
        on_primary.close()
