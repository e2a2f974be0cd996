"""Shared fixtures. The ``memsession`` fixture comes from the package's own pytest plugin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from django_memsession.memory.store import Limits, MemoryStore
from django_memsession.runtime import get_store
from django_memsession.sizing import EntrySizer

if TYPE_CHECKING:
    from cluster_servers import RedisCluster

pytest_plugins = ["browser", "redis_server", "engines", "accounts"]


class FakeClock:
    """Seconds since the epoch that move only when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def sizer() -> EntrySizer:
    return EntrySizer()


@pytest.fixture
def make_store(clock: FakeClock, sizer: EntrySizer):
    """A private store (not the process-global one) with a fake clock and the given limits."""

    def make(max_bytes: int = 64 * 1024, max_session_bytes: int | None = None, low_water=0.75):
        limits = Limits(
            max_bytes=max_bytes,
            max_session_bytes=max_session_bytes or max_bytes // 4,
            low_water=low_water,
        )
        return MemoryStore(limits, clock=clock, sizer=sizer)

    return make


@pytest.fixture(autouse=True)
def _empty_global_store(memsession: MemoryStore) -> None:
    """Every test starts with an empty process-global store (the plugin's fixture)."""


@pytest.fixture
def global_clock(memsession: MemoryStore) -> Iterator[FakeClock]:
    """Move time for the process-global store that ``SessionStore`` uses."""
    store = get_store()
    fake = FakeClock()
    real = store.clock
    store.clock = fake
    yield fake
    store.clock = real


@pytest.fixture
def control_dir() -> Iterator[str]:
    """A private control directory with a short path (AF_UNIX paths are limited to ~100 bytes),
    set as ``MEMSESSION_CONTROL_DIR`` for the test."""
    import shutil
    import tempfile

    from django.test import override_settings

    path = tempfile.mkdtemp(prefix="ms-")
    with override_settings(MEMSESSION_CONTROL_DIR=path):
        yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of six nodes on loopback (tests/cluster_servers.py), for the whole run;
    skips, or fails under ``MEMSESSION_REQUIRE_REDIS=1``, without a server. A test that takes
    it is marked ``redis``. Tests that fail over, kill or reshard leave it ok and settled, not
    as it started: ask it for its primaries, and :meth:`RedisCluster.reset` it first."""
    from redis_server import server_executable

    executable = server_executable()
    pytest.importorskip("redis")
    from cluster_servers import RedisCluster

    servers = RedisCluster(executable)
    servers.start()
    yield servers
    servers.stop()
