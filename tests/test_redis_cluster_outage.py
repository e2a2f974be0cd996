"""A Redis Cluster none of whose nodes answers any more is an outage like a lost server: the
package middleware's 503 (the cookie kept), never a 500. redis-py raises
``RedisClusterUnreachableError`` for it, which is not a ``RedisError``.

A cluster of one node holding every slot, of this module's own: the test kills it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import django
import pytest
from django.conf import settings as django_settings
from django.test import Client
from redis_server import DJANGOS_MIDDLEWARE, OUR_MIDDLEWARE, RedisServer, server_executable

from django_memsession import middleware
from django_memsession.redis import SessionBackendUnavailable, SessionStore
from django_memsession.redis import store as redis_store

pytestmark = pytest.mark.redis

SLOTS = 16384


@pytest.fixture
def lone_node(settings, monkeypatch) -> Iterator[RedisServer]:
    """One cluster node with all the slots, and the engine on it as a cluster."""
    node = RedisServer(server_executable(), cluster=True)
    node.start()
    client = node.client()
    try:
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, SLOTS - 1)
        deadline = time.monotonic() + 20
        while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "the node did not take its slots"
            time.sleep(0.05)
    finally:
        client.close()
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = node.url
    settings.MEMSESSION_REDIS_CLUSTER = True
    settings.MIDDLEWARE = [
        OUR_MIDDLEWARE if name == DJANGOS_MIDDLEWARE else name for name in settings.MIDDLEWARE
    ]
    monkeypatch.setattr(middleware, "outages", middleware.OutageLog())
    redis_store.reset()
    yield node
    redis_store.reset()
    node.stop()


def test_a_cluster_that_stops_answering_is_a_503_that_keeps_the_cookie(lone_node):
    client = Client()
    assert client.get("/session/make/").status_code == 200
    key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    lone_node.kill()
    for _ in range(3):  # the first failure, then the client's map of the slots given up
        response = client.get("/session/make/")
        assert response.status_code == 503
        assert django_settings.SESSION_COOKIE_NAME not in response.cookies
    assert client.cookies[django_settings.SESSION_COOKIE_NAME].value == key


@pytest.mark.skipif(django.VERSION < (5, 0), reason="SessionBase's async API arrived in Django 5.0")
async def test_an_async_client_first_used_when_no_node_answers_is_unavailable(lone_node):
    """redis.asyncio's cluster client learns the slots on its first command: with no node
    answering, that raises RedisClusterUnreachableError, which must be the 503's error."""
    redis_store.get_store()  # built while the node answers
    lone_node.kill()
    session = SessionStore()
    session["cart"] = ["tea"]
    with pytest.raises(SessionBackendUnavailable):
        await session.asave()


@pytest.mark.skipif(django.VERSION < (5, 0), reason="SessionBase's async API arrived in Django 5.0")
async def test_an_async_login_first_sent_when_no_node_answers_is_unavailable(lone_node):
    """The same for a write that waits for replicas: it asks for the slots itself first."""
    redis_store.get_store()
    lone_node.kill()
    session = SessionStore()
    session["_auth_user_id"] = "7"
    with pytest.raises(SessionBackendUnavailable):
        await session.asave()
