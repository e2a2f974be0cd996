"""MEMSESSION_REDIS_URL naming a node of a Redis Cluster without MEMSESSION_REDIS_CLUSTER = True:
every request is a 503 that says to set it (not a 500 on MOVED), and ``check --deploy`` says so.

A real cluster of two nodes on loopback (half the slots each), started for this module. Each new
connection asks ``INFO cluster`` once; where INFO is not allowed, the cluster's redirections are
503s with the same reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings
from redis.cluster import key_slot
from redis_server import REDIS_SERVER, RedisServer

from django_memsession import middleware
from django_memsession.redis import SessionBackendUnavailable, SessionStore
from django_memsession.redis import store as redis_store
from django_memsession.redis.checks import check_redis_deployment

pytestmark = pytest.mark.usefixtures("redis_server")  # skips (or fails in CI) without Redis

OUR_MIDDLEWARE = "django_memsession.middleware.SessionMiddleware"
DJANGOS_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
SLOTS = 16384


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[tuple[RedisServer, RedisServer]]:
    """Two cluster nodes, half the slots each, that know each other: a request for a key of the
    other half gets MOVED."""
    assert REDIS_SERVER is not None
    nodes = (RedisServer(REDIS_SERVER, cluster=True), RedisServer(REDIS_SERVER, cluster=True))
    try:
        for node in nodes:
            node.start()
        first, second = (node.client() for node in nodes)
        first.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, SLOTS // 2 - 1)
        second.execute_command("CLUSTER", "ADDSLOTSRANGE", SLOTS // 2, SLOTS - 1)
        first.execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[1].port)
        deadline = time.monotonic() + 20
        while not all(
            b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")
            for client in (first, second)
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the two cluster nodes did not join")
            time.sleep(0.05)
        first.close()
        second.close()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def on_a_cluster_node(two_nodes, settings) -> Iterator[RedisServer]:
    """The Redis engine, and this package's middleware, pointed at the cluster's first node."""
    node = two_nodes[0]
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = node.url
    settings.MIDDLEWARE = [
        OUR_MIDDLEWARE if name == DJANGOS_MIDDLEWARE else name for name in settings.MIDDLEWARE
    ]
    redis_store.reset()
    yield node
    redis_store.reset()


@pytest.fixture(autouse=True)
def fresh_outage_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(middleware, "outages", middleware.OutageLog())


def key_on_the_other_node() -> str:
    """A session key whose Redis key is in the second node's slots."""
    prefix = redis_store.get_store().prefix
    for number in range(1000):
        session_key = f"{number:032d}"
        if key_slot(prefix + session_key.encode()) >= SLOTS // 2:
            return session_key
    raise AssertionError("no key of the second half found")


def test_a_request_on_a_cluster_node_is_a_503_that_says_why(on_a_cluster_node, client, caplog):
    with caplog.at_level(logging.ERROR, logger="django_memsession"):
        response = client.get("/session/make/")
    assert response.status_code == 503
    assert django_settings.SESSION_COOKIE_NAME not in response.cookies
    [line] = [r.getMessage() for r in caplog.records if r.name == "django_memsession"]
    assert "node of a Redis Cluster" in line
    assert "set MEMSESSION_REDIS_CLUSTER = True" in line


@pytest.mark.usefixtures("on_a_cluster_node")
async def test_an_async_load_on_a_cluster_node_is_unavailable_and_says_why():
    with pytest.raises(SessionBackendUnavailable, match="node of a Redis Cluster"):
        await redis_store.get_store().aload("x" * 32)


@pytest.mark.usefixtures("on_a_cluster_node")
def test_the_deploy_check_says_the_url_names_a_cluster_node():
    (message,) = check_redis_deployment()
    assert message.id == "memsession.E110"
    assert "Redis Cluster" in message.msg
    assert "MEMSESSION_REDIS_CLUSTER = True" in message.hint


def test_a_redirection_is_a_503_where_info_is_not_allowed(on_a_cluster_node, settings):
    admin = on_a_cluster_node.client()
    admin.acl_setuser(
        "app", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all", "-info"]
    )
    settings.MEMSESSION_REDIS_URL = f"redis://app:s3cret@127.0.0.1:{on_a_cluster_node.port}/0"
    redis_store.reset()
    try:
        with pytest.raises(SessionBackendUnavailable, match=r"Redis Cluster.*\(MOVED\)"):
            SessionStore(key_on_the_other_node()).load()
    finally:
        admin.acl_deluser("app")
        admin.close()


def test_a_standalone_redis_is_asked_once_per_connection_not_per_request(redis_url, redis_server):
    session = SessionStore()
    session["a"] = 1
    session.save()
    for _ in range(50):
        assert SessionStore(session.session_key).load() == {"a": 1}
    assert redis_server.calls("info") == 1  # the pool's one connection
