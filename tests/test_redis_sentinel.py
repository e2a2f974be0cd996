"""Redis through Sentinel (``MEMSESSION_REDIS_SENTINELS``), on real servers: one primary, one
replica and three sentinels on loopback (``sentinel_servers.py``).

The settings' checks; everything the engine does on one server, through Sentinel (sync and
async, with and without the near cache, the user index, ``prunesessions``, ``clearsessions``,
``exportsessions``, the deploy check); a failover is an outage that ends by itself (503s, never a
500 nor a deleted cookie, then the new primary without a restart); and at a plain URL a
``READONLY`` reply (the server behind the name demoted) drops the pool and reconnects.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import Client
from processes import run_command
from redis_index import gone_long_ago
from redis_server import RedisServer, server_executable
from sentinel_servers import SERVICE, Forwarder, SentinelSet, wait_for

import django_memsession
from django_memsession import middleware
from django_memsession.redis import SessionStore
from django_memsession.redis import store as store_module
from django_memsession.redis.checks import check_redis_deployment, check_redis_settings
from django_memsession.redis.scripts import PARTS, source
from django_memsession.redis.store import get_store

# Every test here that starts servers uses them; the settings checks run with the rest.
pytestmark = pytest.mark.redis

AUTH = "_auth_user_id"
OUR_MIDDLEWARE = "django_memsession.middleware.SessionMiddleware"
DJANGOS_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
SERVICE_URL = f"redis://{SERVICE}/0"


def ids() -> list[str]:
    return [message.id for message in check_redis_settings()]


# -- the settings' checks (no server) ------------------------------------------------------------


@pytest.fixture
def sentinel_settings(settings) -> None:
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = SERVICE_URL
    settings.MEMSESSION_REDIS_SENTINELS = [("10.0.0.1", 26379), ["10.0.0.2", 26379]]


@pytest.mark.usefixtures("sentinel_settings")
def test_sentinels_as_tuples_or_lists_with_a_service_url_pass():
    assert ids() == []


@pytest.mark.usefixtures("sentinel_settings")
@pytest.mark.parametrize(
    "value", ["10.0.0.1:26379", [], [("10.0.0.1",)], [("10.0.0.1", 26379, 1)], {"a": 1}, 26379]
)
def test_sentinels_that_are_not_host_port_pairs_are_e111(value, settings):
    settings.MEMSESSION_REDIS_SENTINELS = value
    assert ids() == ["memsession.E111"]


@pytest.mark.usefixtures("sentinel_settings")
@pytest.mark.parametrize(
    "pair", [("10.0.0.1", 0), ("10.0.0.1", 65536), ("10.0.0.1", "26379"), ("", 26379), (1, 2)]
)
def test_a_sentinel_with_a_bad_port_or_host_is_e112(pair, settings):
    settings.MEMSESSION_REDIS_SENTINELS = [("10.0.0.9", 26379), pair]
    (message,) = check_redis_settings()
    assert message.id == "memsession.E112"
    assert repr(tuple(pair)) in message.msg


@pytest.mark.usefixtures("sentinel_settings")
@pytest.mark.parametrize("url", ["redis:///0", "unix:///tmp/redis.sock"])
def test_a_url_naming_no_service_under_sentinel_is_e113(url, settings):
    settings.MEMSESSION_REDIS_URL = url
    (message,) = check_redis_settings()
    assert message.id == "memsession.E113"
    assert "redis://mymaster/0" in message.hint


@pytest.mark.usefixtures("sentinel_settings")
@pytest.mark.parametrize(
    "options",
    [
        "password",
        {"pasword": "x"},
        {"socket_timeout": 0},
        {"socket_connect_timeout": None},
    ],
)
def test_bad_sentinel_options_are_e114(options, settings):
    settings.MEMSESSION_REDIS_SENTINEL_OPTIONS = options
    assert ids() == ["memsession.E114"]


@pytest.mark.usefixtures("sentinel_settings")
def test_sentinel_options_take_a_password_tls_and_timeouts(settings):
    settings.MEMSESSION_REDIS_SENTINEL_OPTIONS = {
        "password": "s3cret",
        "username": "sentinel-user",
        "ssl": True,
        "ssl_ca_certs": "/etc/ssl/ca.pem",
        "socket_timeout": 0.5,
    }
    assert ids() == []


def test_sentinel_options_are_not_checked_without_sentinels(settings):
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = "redis://127.0.0.1:6379/0"
    settings.MEMSESSION_REDIS_SENTINEL_OPTIONS = {"pasword": "x"}
    assert ids() == []


# -- real servers --------------------------------------------------------------------------------


def _executable() -> str:
    pytest.importorskip("redis")
    return server_executable()  # MEMSESSION_TEST_REDIS_SERVER's (Valkey), or redis-server


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelSet]:
    servers = SentinelSet(_executable())
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def through_sentinel(sentinels: SentinelSet, settings, monkeypatch) -> Iterator[SentinelSet]:
    """The engine on the service's primary through the sentinels, this package's middleware,
    an empty data set."""
    sentinels.wait_settled()
    client = sentinels.primary.client()
    try:
        client.flushall()
    finally:
        client.close()
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = SERVICE_URL
    settings.MEMSESSION_REDIS_SENTINELS = sentinels.addresses
    settings.MIDDLEWARE = [
        OUR_MIDDLEWARE if name == DJANGOS_MIDDLEWARE else name for name in settings.MIDDLEWARE
    ]
    monkeypatch.setattr(middleware, "outages", middleware.OutageLog())
    store_module.reset()
    yield sentinels
    store_module.reset()


@pytest.fixture
def near_cache(settings) -> None:
    settings.MEMSESSION_REDIS_NEAR_CACHE = "1M"


def visitor(client: Client) -> str:
    assert client.get("/session/make/").json()["visits"] == 1
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


def stored_on(server: RedisServer, session_key: str) -> bool:
    client = server.client()
    try:
        return client.exists(get_store().key(session_key)) == 1
    finally:
        client.close()


@pytest.mark.usefixtures("through_sentinel")
def test_a_session_is_saved_and_loaded_on_the_primary_through_sentinel(client, sentinels):
    key = visitor(client)
    assert client.get("/session/make/").json()["visits"] == 2
    assert stored_on(sentinels.primary, key)


@pytest.mark.usefixtures("through_sentinel")
async def test_async_a_session_is_saved_and_loaded_through_sentinel(sentinels):
    session = SessionStore()
    session["cart"] = ["tea"]
    await session.asave()
    assert await SessionStore(session.session_key).aload() == {"cart": ["tea"]}
    assert stored_on(sentinels.primary, session.session_key)


@pytest.mark.usefixtures("through_sentinel")
def test_a_login_and_a_logout_wait_for_the_replica_through_sentinel(client, sentinels):
    sentinels.wait_replicated()
    visitor(client)
    primary = sentinels.primary
    admin = primary.client()
    try:
        for name in PARTS:  # loaded: no NOSCRIPT retry (with its own WAIT) in the count
            admin.script_load(source(name))
    finally:
        admin.close()
    before = primary.calls("wait")
    assert client.get("/session/sign-in/?user=7").status_code == 200
    assert primary.calls("wait") == before + 1
    assert client.get("/session/sign-out/").status_code == 200
    assert primary.calls("wait") == before + 2


@pytest.mark.usefixtures("through_sentinel")
def test_a_logout_the_replica_cannot_acknowledge_is_a_503_through_sentinel(client, sentinels):
    sentinels.wait_replicated()
    visitor(client)
    assert client.get("/session/sign-in/?user=7").status_code == 200
    key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    replica = sentinels.replica
    replica.pause()  # shorter than the sentinels' down-after: no failover
    try:
        response = client.get("/session/sign-out/")
    finally:
        replica.resume()
    assert response.status_code == 503
    assert client.cookies[django_settings.SESSION_COOKIE_NAME].value == key
    # Pressed again, with the replica back: done.
    sentinels.wait_replicated()
    assert client.get("/session/sign-out/").status_code == 200
    assert client.get("/session/whoami/").json()["user"] is None


@pytest.mark.usefixtures("through_sentinel", "near_cache")
def test_the_near_cache_serves_loads_and_tracks_the_primary_through_sentinel(client, sentinels):
    key = visitor(client)
    client.get("/session/make/")  # promoted
    client.get("/session/make/")  # settled: its save is kept in the near cache
    before = get_store().near.stats()["l1_hits"]
    assert client.get("/session/whoami/").json()["visits"] == 3
    assert get_store().near.stats()["l1_hits"] == before + 1
    # A write by someone else on the primary reaches the near cache.
    primary = sentinels.primary.client()
    try:
        primary.delete(get_store().key(key))
    finally:
        primary.close()
    assert wait_for(lambda: SessionStore(key).load() == {}, 5, "the invalidation") is True


@pytest.mark.usefixtures("through_sentinel", "near_cache")
async def test_async_with_the_near_cache_through_sentinel():
    session = SessionStore()
    session["visits"] = 1
    await session.asave()
    assert await SessionStore(session.session_key).aload() == {"visits": 1}


@pytest.mark.usefixtures("through_sentinel")
def test_who_is_logged_in_works_through_sentinel():
    sessions = []
    for _ in range(2):
        session = SessionStore()
        session[AUTH] = "7"
        session.save()
        sessions.append(session.session_key)
    assert {row.key for row in get_store().index.user_sessions("7")} == set(sessions)
    assert len(django_memsession.user_sessions("7")) == 2
    assert django_memsession.end_user_sessions("7") == 2
    assert django_memsession.user_sessions("7") == []


@pytest.mark.django_db
@pytest.mark.usefixtures("through_sentinel", "control_dir")
def test_the_admin_page_shows_the_primarys_figures_through_sentinel(sentinels):
    from django.contrib.auth.models import User

    admin = Client()
    admin.force_login(User.objects.create_superuser("boss", password="pw"))
    SessionStore().save()
    response = admin.get("/admin/django_memsession/stats/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="memsession-redis"' in html
    assert 'class="sessions" data-value="2"' in html  # ours + the admin's own


def _a_member_without_its_session(sentinels: SentinelSet) -> None:
    session = SessionStore()
    session[AUTH] = "1"
    session.save()
    primary = sentinels.primary.client()
    try:
        gone_long_ago(primary, session.session_key, "1")
    finally:
        primary.close()


@pytest.mark.usefixtures("through_sentinel")
def test_clearsessions_cleans_the_index_through_sentinel(sentinels):
    _a_member_without_its_session(sentinels)
    call_command("clearsessions")
    assert get_store().index.prune_index(dry_run=True).removed == 0


@pytest.mark.usefixtures("through_sentinel")
def test_prunesessions_through_sentinel(sentinels, control_dir):
    _a_member_without_its_session(sentinels)
    result = run_command(
        "prunesessions",
        "--json",
        control_dir=control_dir,
        env={
            "MEMSESSION_TEST_REDIS_URL": SERVICE_URL,
            "MEMSESSION_TEST_REDIS_SENTINELS": json.dumps(sentinels.addresses),
        },
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["removed"] == 1


@pytest.mark.usefixtures("through_sentinel")
def test_exportsessions_writes_to_the_primary_through_sentinel(sentinels, settings, control_dir):
    from django_memsession.redis.importer import importer_for

    importer = importer_for(SERVICE_URL)
    try:
        assert importer.store.ping()
        assert importer.store.client.connection_pool.service_name == SERVICE
    finally:
        importer.store.close()


@pytest.mark.usefixtures("through_sentinel")
def test_the_deploy_check_says_which_primary_and_replicas_the_sentinels_name(sentinels):
    messages = check_redis_deployment()
    found = {message.id: message for message in messages}
    assert "memsession.I101" in found, messages
    text = found["memsession.I101"].msg
    assert f"127.0.0.1:{sentinels.primary.port}" in text
    assert f"127.0.0.1:{sentinels.replica.port}" in text
    assert "1 live replica(s)" in text
    assert not [m for m in messages if m.level >= 30 and m.id != "memsession.W101"], messages


@pytest.mark.usefixtures("through_sentinel")
def test_the_deploy_check_is_an_error_when_the_sentinels_know_no_such_service(settings):
    settings.MEMSESSION_REDIS_URL = "redis://no-such-service/0"
    (message,) = check_redis_deployment()
    assert message.id == "memsession.E115"
    assert "'no-such-service'" in message.msg


@pytest.mark.usefixtures("through_sentinel")
def test_the_deploy_check_warns_when_the_sentinels_know_no_replica(sentinels, monkeypatch):
    from django_memsession.redis import client as client_module

    primary = ("127.0.0.1", sentinels.primary.port)
    monkeypatch.setattr(client_module, "discover", lambda config: (primary, []))
    found = [message.id for message in check_redis_deployment()]
    assert found[:2] == ["memsession.I101", "memsession.W106"]


def test_unreachable_sentinels_are_a_503_never_a_500(client, settings, monkeypatch):
    _executable()
    with socket.socket() as probe:  # a port where no sentinel will ever answer
        probe.bind(("127.0.0.1", 0))
        nowhere = probe.getsockname()[1]
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = SERVICE_URL
    settings.MEMSESSION_REDIS_SENTINELS = [("127.0.0.1", nowhere)]
    settings.MIDDLEWARE = [
        OUR_MIDDLEWARE if name == DJANGOS_MIDDLEWARE else name for name in settings.MIDDLEWARE
    ]
    monkeypatch.setattr(middleware, "outages", middleware.OutageLog())
    store_module.reset()
    try:
        response = client.get("/session/make/")
    finally:
        store_module.reset()
    assert response.status_code == 503
    assert django_settings.SESSION_COOKIE_NAME not in response.cookies


def _requests_until_served(client: Client, timeout: float) -> list[int]:
    """Requests, one after another, until one is served; every status seen. Each refused one
    must be the middleware's 503 that keeps the cookie."""
    statuses: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/session/make/")
        statuses.append(response.status_code)
        if response.status_code == 200:
            return statuses
        assert response.status_code == 503, response.status_code
        assert django_settings.SESSION_COOKIE_NAME not in response.cookies
        assert time.monotonic() < deadline, statuses


@pytest.mark.usefixtures("through_sentinel")
def test_after_a_planned_failover_requests_are_served_by_the_new_primary(client, sentinels):
    key = visitor(client)
    _, new = sentinels.failover()
    statuses = _requests_until_served(client, 15)
    assert set(statuses) <= {200, 503}
    assert client.cookies[django_settings.SESSION_COOKIE_NAME].value == key
    assert client.get("/session/whoami/").json()["visits"] == 2  # nothing lost, nothing doubled
    assert stored_on(sentinels.server(new), key)
    sentinels.wait_settled()


@pytest.mark.usefixtures("through_sentinel")
def test_a_process_moves_to_the_new_primary_when_the_sentinels_announce_it(client, sentinels):
    """With no failed write to tell it: the old primary stays a primary for seconds after a
    planned failover, and a save there would be lost when it is demoted."""
    key = visitor(client)  # a pooled connection to the old primary
    _, new = sentinels.failover()
    wait_for(
        lambda: get_store().client.connection_pool.master_address == ("127.0.0.1", new),
        10,
        "the process to hear of the new primary",
    )
    assert sentinels.role(sentinels.server(sentinels.primary_port())) == "master"
    assert client.get("/session/make/").json()["visits"] == 2
    assert stored_on(sentinels.server(new), key)
    sentinels.wait_settled()


@pytest.mark.usefixtures("through_sentinel")
def test_the_failover_listener_stops_with_its_store(client):
    visitor(client)
    listener = get_store().switches
    assert listener is not None and listener._thread.is_alive()
    store_module.reset()
    listener._thread.join(5)
    assert not listener._thread.is_alive()


@pytest.mark.usefixtures("through_sentinel")
async def test_async_after_a_planned_failover_the_new_primary_answers(sentinels):
    session = SessionStore()
    session["n"] = 1
    await session.asave()
    sentinels.failover()

    async def served() -> bool:
        try:
            return await SessionStore(session.session_key).aload() == {"n": 1} and bool(
                await SessionStore().aexists("nope") is False
            )
        except django_memsession.redis.SessionBackendUnavailable:
            return False

    deadline = time.monotonic() + 15
    while not await served():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    probe = SessionStore(session.session_key)
    probe["n"] = 2
    await probe.asave()  # a write: on the new primary
    sentinels.wait_settled()


@pytest.mark.usefixtures("through_sentinel", "near_cache")
def test_the_near_cache_drops_its_copies_and_follows_the_new_primary(client, sentinels):
    key = visitor(client)
    client.get("/session/make/")
    client.get("/session/make/")
    near = get_store().near
    hits = near.stats()["l1_hits"]
    assert client.get("/session/whoami/").json()["visits"] == 3
    assert near.stats()["l1_hits"] == hits + 1  # from the near cache
    registrations = near.stats()["registrations"]
    _, new = sentinels.failover()
    _requests_until_served(client, 15)  # visits: 3
    wait_for(
        lambda: (
            client.get("/session/whoami/").status_code == 200
            and near.stats()["registrations"] > registrations
            and near.up
        ),
        15,
        "the near cache to register tracking again",
    )
    # A write made on the new primary is seen: the copy does not outlive it.
    primary = sentinels.server(new).client()
    try:
        assert primary.info("replication")["role"] == "master"
        primary.delete(get_store().key(key))
    finally:
        primary.close()
    assert wait_for(lambda: SessionStore(key).load() == {}, 5, "the invalidation") is True
    sentinels.wait_settled()


@pytest.mark.heavy
@pytest.mark.usefixtures("through_sentinel")
def test_a_killed_primary_is_503s_then_the_new_primary_without_a_restart(client, sentinels):
    key = visitor(client)
    sentinels.wait_replicated()
    old = sentinels.primary
    old.kill()
    try:
        statuses = _requests_until_served(client, 60)
    finally:
        old.start()  # back as a replica: the sentinels reconfigure it
    assert 503 in statuses
    assert client.cookies[django_settings.SESSION_COOKIE_NAME].value == key
    assert client.get("/session/whoami/").json()["visits"] == 2
    sentinels.wait_settled(60)
    sentinels.wait_replicated(30)


# -- READONLY at a plain URL: a failover behind one name -----------------------------------------


@pytest.fixture
def behind_one_name(settings, monkeypatch) -> Iterator[tuple[Forwarder, RedisServer, RedisServer]]:
    """Two servers, the second a replica of the first, and the engine at a URL whose new
    connections go to whichever the test says (what a managed service's DNS name does)."""
    servers = [RedisServer(_executable()), RedisServer(_executable())]
    for server in servers:
        server.start()
    first, second = servers
    second_client = second.client()
    second_client.execute_command("REPLICAOF", "127.0.0.1", str(first.port))
    second_client.close()
    forwarder = Forwarder(first.port)
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = f"redis://127.0.0.1:{forwarder.port}/0"
    settings.MIDDLEWARE = [
        OUR_MIDDLEWARE if name == DJANGOS_MIDDLEWARE else name for name in settings.MIDDLEWARE
    ]
    monkeypatch.setattr(middleware, "outages", middleware.OutageLog())
    store_module.reset()
    yield forwarder, first, second
    store_module.reset()
    forwarder.close()
    for server in servers:
        server.stop()


def _swap(first: RedisServer, second: RedisServer) -> None:
    """The replica is promoted, the old primary demoted to its replica."""
    client = first.client()
    try:
        client.execute_command("WAIT", 1, 2000)
    finally:
        client.close()
    client = second.client()
    try:
        client.execute_command("REPLICAOF", "NO", "ONE")
    finally:
        client.close()
    client = first.client()
    try:
        client.execute_command("REPLICAOF", "127.0.0.1", str(second.port))
    finally:
        client.close()


def test_a_readonly_reply_at_a_plain_url_drops_the_pool_and_reconnects(client, behind_one_name):
    forwarder, first, second = behind_one_name
    key = visitor(client)
    before = first.client()
    try:
        ours = {c["id"] for c in before.client_list() if c.get("cmd") != "client|list"}
    finally:
        before.close()
    _swap(first, second)
    forwarder.target = second.port  # the name now leads to the new primary
    # The pooled connection still leads to the old one: READONLY, then a fresh connection.
    assert client.get("/session/make/").json()["visits"] == 2
    assert client.cookies[django_settings.SESSION_COOKIE_NAME].value == key
    assert stored_on(second, key)
    left = first.client()
    try:
        still = {c["id"] for c in left.client_list()} & ours
    finally:
        left.close()
    assert still == set()  # its connections to the demoted server were dropped


async def test_async_a_readonly_reply_at_a_plain_url_reconnects(behind_one_name):
    forwarder, first, second = behind_one_name
    session = SessionStore()
    session["n"] = 1
    await session.asave()
    _swap(first, second)
    forwarder.target = second.port
    session["n"] = 2
    await session.asave()
    assert await SessionStore(session.session_key).aload() == {"n": 2}
