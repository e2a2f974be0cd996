"""A real ``redis-server`` for the tests: started on a free loopback port, stopped afterwards.

The ``redis_server`` fixture is session-scoped (one server for the whole run); ``redis_url``
empties it before each test and points the engine at it. Faults are real: ``pause()`` is
SIGSTOP (a server that hangs silently), ``kill()`` and ``restart()`` stop and start the process
on the same port, ``client_kill()`` drops every connection but the fixture's own.

Without ``redis-server`` on PATH these tests skip, unless ``MEMSESSION_REQUIRE_REDIS=1`` (CI),
when they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_cluster_port() -> int:
    """A free loopback port below 55536 whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = _free_port()
        if port >= 55536:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port below 55536 with a free bus port")


class RedisServer:
    """One ``redis-server`` process in a temp dir, with no persistence, and its faults.

    ``cluster``: a Redis Cluster node (``cluster-enabled``) holding no slots yet."""

    def __init__(self, executable: str, cluster: bool = False) -> None:
        self.executable = executable
        self.cluster = cluster
        self.port = free_cluster_port() if cluster else _free_port()
        self.directory = tempfile.mkdtemp(prefix="memsession-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", self.directory]
        args += ["--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
            args += ["--cluster-config-file", os.path.join(self.directory, "nodes.conf")]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.directory
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.client().ping():
                    return
            except OSError:
                pass
            except Exception:  # redis.ConnectionError while it starts
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def client(self):  # -> redis.Redis: a fresh, plain client, separate from the engine's pool
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a silent hang)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL, then wait: connections are refused until :meth:`restart`."""
        if self.process is None:
            return
        if self.paused:
            self.resume()
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Kill it (if running) and start an empty server on the same port."""
        self.kill()
        self.start()

    def client_kill(self) -> int:
        """Drop every client connection but the one that asks; how many were dropped."""
        client = self.client()
        try:
            return int(client.client_kill_filter(skipme=True, _type="normal"))
        finally:
            client.close()

    def calls(self, *commands: str) -> int:
        """How many times the server ran these commands (all but the fixture's own when none is
        named), from its own counters: the engine is neither watched nor mocked. Commands a
        script runs count too."""
        client = self.client()
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        own = ("info", "config", "client", "hello", "flushall", "replicaof", "ping")
        counted = 0
        for name, figures in stats.items():
            command = name.removeprefix("cmdstat_").split("|")[0]
            if command in commands or (not commands and command not in own):
                counted += figures["calls"]
        return counted

    def set_maxmemory(self, size: str | int, policy: str) -> None:
        client = self.client()
        try:
            client.config_set("maxmemory", size)
            client.config_set("maxmemory-policy", policy)
        finally:
            client.close()

    def reset(self) -> None:
        """An empty, healthy server with the defaults, before each test."""
        if self.process is None:
            self.start()
        elif self.paused:
            self.resume()
        client = self.client()
        try:
            client.execute_command("REPLICAOF", "NO", "ONE")
            client.config_set("maxmemory", 0)
            client.config_set("maxmemory-policy", "noeviction")
            client.flushall()
            client.config_resetstat()
        finally:
            client.close()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        if os.environ.get("MEMSESSION_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed (MEMSESSION_REQUIRE_REDIS=1)")
        pytest.skip("redis-server is not installed")
    pytest.importorskip("redis")
    server = RedisServer(REDIS_SERVER)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer, settings) -> Iterator[str]:
    """An empty server, and the Redis engine pointed at it (and at nothing else) for the test."""
    from django_memsession.redis import store

    redis_server.reset()
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = redis_server.url
    store.reset()
    yield redis_server.url
    store.reset()


OUR_MIDDLEWARE = "django_memsession.middleware.SessionMiddleware"
DJANGOS_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"


@pytest.fixture
def redis_site(redis_url: str, settings) -> str:
    """The test site on the Redis engine, with this package's SessionMiddleware in the place of
    Django's."""
    settings.MIDDLEWARE = [
        OUR_MIDDLEWARE if name == DJANGOS_MIDDLEWARE else name for name in settings.MIDDLEWARE
    ]
    return redis_url
