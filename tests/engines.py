"""The engines a contract test runs on: the ``engine`` fixture, and the ``engines`` mark.

A test that takes ``engine`` runs once per engine: ``memory`` (``SESSION_ENGINE =
"django_memsession"``), ``redis`` (``"django_memsession.redis"`` on a real ``redis-server``, from
``redis_server.py``) and ``redis+near`` (the same with ``MEMSESSION_REDIS_NEAR_CACHE`` on, so a
load may be answered by L1). ``@pytest.mark.engines("memory", "redis")`` (on a test or a module;
the closest wins) narrows the list. The Redis params skip without ``redis-server`` and fail under
``MEMSESSION_REQUIRE_REDIS=1``, as the ``redis_server`` fixture does. Another engine (Sentinel,
Cluster) is one more entry in ``ENGINES`` and one more branch in :func:`start_engine`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import FakeClock

ENGINES = ("memory", "redis", "redis+near", "redis-cluster")
# Without an engines mark: "redis-cluster" (the six-node cluster of cluster_servers.py, with
# MEMSESSION_REDIS_CLUSTER) runs where a module asks for it.
DEFAULT_ENGINES = ("memory", "redis", "redis+near")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engines(*names): the engines a test taking `engine` runs on (default: all)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("engines")
    names = marker.args if marker else DEFAULT_ENGINES
    unknown = set(names) - set(ENGINES)
    assert not unknown, f"no such engine: {sorted(unknown)}"
    # The Redis engines' params are marked redis: `-m redis` is the Redis engine's whole suite.
    params = [pytest.param(n, marks=pytest.mark.redis) if n != "memory" else n for n in names]
    metafunc.parametrize("engine", params, indirect=True)


@dataclass
class Engine:
    """The engine a test runs on: its name, its ``SessionStore`` class and its Redis server
    (``None`` on the memory engine)."""

    name: str
    SessionStore: type
    server: Any = None  # redis_server.RedisServer

    @property
    def redis(self) -> bool:
        return self.server is not None

    def stored(self) -> int:
        """How many entries the engine holds: the store's sessions, or every key in Redis."""
        if self.server is None:
            from django_memsession import stats

            return stats()["entries"]
        client = self.server.client()
        try:
            return client.dbsize()
        finally:
            client.close()


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> Engine:
    return start_engine(request.param, request)


def start_engine(name: str, request: pytest.FixtureRequest) -> Engine:
    """Point the test at engine ``name`` (for fixtures that know the name another way, such as
    a unittest class's attribute); the Redis engines on an empty server."""
    settings = request.getfixturevalue("settings")
    if name == "memory":
        from django_memsession import SessionStore

        settings.SESSION_ENGINE = "django_memsession"
        return Engine(name, SessionStore)
    if name == "redis-cluster":
        return Engine(name, *cluster_engine(request))
    server = request.getfixturevalue("redis_server")
    request.getfixturevalue("redis_url")  # an empty server, the engine pointed at it
    from django_memsession.redis import SessionStore
    from django_memsession.redis.store import get_store

    if name == "redis+near":
        settings.MEMSESSION_REDIS_NEAR_CACHE = "1M"
        near = get_store().near
        assert near is not None and near.connect()
    return Engine(name, SessionStore, server)


@pytest.fixture
def engine_clock(engine: Engine, monkeypatch) -> Iterator[FakeClock]:
    """Move the web server's clock for the engine's store. On Redis, Redis's own TTLs keep real
    time, and a store rebuilt by a settings change gets the fake clock too."""
    if not engine.redis:
        from django_memsession.runtime import get_store

        store = get_store()
        fake = FakeClock()
        real = store.clock
        store.clock = fake
        yield fake
        store.clock = real
        return
    from django_memsession.redis import store as store_module

    fake = FakeClock(time.time())
    build = store_module._build

    def build_with_fake_clock():
        store = build()
        store.clock = fake
        return store

    monkeypatch.setattr(store_module, "_build", build_with_fake_clock)
    monkeypatch.setattr(store_module.get_store(), "clock", fake)
    yield fake


def cluster_engine(request: pytest.FixtureRequest) -> tuple[type, Any]:
    """The Redis engine on the six-node cluster (``MEMSESSION_REDIS_CLUSTER``), emptied."""
    from redis_server import require_redis_mark

    require_redis_mark(request.node)
    cluster = request.getfixturevalue("cluster")
    settings = request.getfixturevalue("settings")
    from django_memsession.redis import SessionStore, store

    cluster.reset()
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = cluster.url
    settings.MEMSESSION_REDIS_CLUSTER = True
    store.reset()
    request.addfinalizer(store.reset)
    return SessionStore, ClusterServer(cluster)


class ClusterServer:
    """What the tests ask of a Redis server (``redis_server.RedisServer``), on the cluster: its
    URL (one node's), a client (redis-py's RedisCluster), emptied by ``reset()``."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.url = cluster.url

    def client(self) -> Any:
        return self.cluster.client()

    def reset(self) -> None:
        self.cluster.reset()
        self.url = self.cluster.url


def cluster_as_server(request: pytest.FixtureRequest) -> ClusterServer:
    """For a module whose tests take ``redis_server`` and ``redis_url``: the cluster in the
    server's place, the engine on it (``MEMSESSION_REDIS_CLUSTER``, here and in the processes
    the tests start, through the test site's settings)."""
    settings = request.getfixturevalue("settings")
    monkeypatch = request.getfixturevalue("monkeypatch")
    settings.MEMSESSION_REDIS_CLUSTER = True
    monkeypatch.setenv("MEMSESSION_TEST_REDIS_CLUSTER", "1")
    return ClusterServer(request.getfixturevalue("cluster"))


def site_middleware(engine: Engine, request: pytest.FixtureRequest) -> None:
    """On Redis, the test site with this package's SessionMiddleware in the place of Django's
    (the ``redis_site`` fixture; on the cluster, the same without a server of its own)."""
    if engine.name == "redis-cluster":
        from redis_server import DJANGOS_MIDDLEWARE, OUR_MIDDLEWARE

        settings = request.getfixturevalue("settings")
        settings.MIDDLEWARE = [
            OUR_MIDDLEWARE if name == DJANGOS_MIDDLEWARE else name for name in settings.MIDDLEWARE
        ]
    elif engine.redis:
        request.getfixturevalue("redis_site")
