"""A real ``redis-server`` for the tests: started on a free loopback port, stopped afterwards.

The ``redis_server`` fixture is session-scoped (one server for the whole run); ``redis_url``
empties it before each test and points the engine at it. Faults are real: ``pause()`` is
SIGSTOP (a server that hangs silently), ``kill()`` and ``restart()`` stop and start the process
on the same port, ``client_kill()`` drops every connection but the fixture's own.

Which server: the executable ``MEMSESSION_TEST_REDIS_SERVER`` names (a path, e.g. Valkey's
``valkey-server``), else ``redis-server`` on PATH. Every server a test starts (``RedisServer``,
cluster nodes, sentinels with ``--sentinel``) is that one: take it from :func:`server_executable`
or :data:`REDIS_SERVER`. A server that the variable names and that is not there fails the tests;
without the variable and without ``redis-server`` on PATH they skip, unless
``MEMSESSION_REQUIRE_REDIS=1`` (CI), when they fail.

Every test that uses the ``redis_server`` fixture (directly or through ``redis_url``,
``redis_site``...) is marked ``redis`` at collection; one that reaches a server another way
carries the mark itself, or fails saying so (:func:`require_redis_mark`). So ``pytest -m redis``
is the Redis engine's whole suite (CI runs it against Valkey too), and cannot drift from it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

SERVER_VARIABLE = "MEMSESSION_TEST_REDIS_SERVER"
# What the variable named, if anything: then a server that is not there is a failure, not a skip.
NAMED_SERVER = os.environ.get(SERVER_VARIABLE) or None


def _find_server() -> str | None:
    if NAMED_SERVER is not None:
        return shutil.which(NAMED_SERVER)  # a path to an executable file, or None
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


# The server executable every test starts, or None when there is none (see server_executable()).
REDIS_SERVER = _find_server()


def server_executable() -> str:
    """The server executable to start, or fail or skip the calling test (or fixture) for want of
    one: fail when ``MEMSESSION_TEST_REDIS_SERVER`` names a missing or non-executable file, or when
    ``MEMSESSION_REQUIRE_REDIS=1``; skip otherwise."""
    if REDIS_SERVER is not None:
        return REDIS_SERVER
    if NAMED_SERVER is not None:
        pytest.fail(f"{SERVER_VARIABLE}={NAMED_SERVER!r} is not an executable file")
    if os.environ.get("MEMSESSION_REQUIRE_REDIS") == "1":
        pytest.fail("redis-server is not installed (MEMSESSION_REQUIRE_REDIS=1)")
    pytest.skip(f"redis-server is not installed (or set {SERVER_VARIABLE} to a server's path)")


def server_version(executable: str) -> str:
    """What ``<executable> --version`` says, e.g. ``Valkey server v=9.1.2 sha=...``."""
    try:
        found = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as error:
        return f"cannot run it: {error}"
    return found.stdout.strip() or found.stderr.strip()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "redis: uses a real Redis server (marked automatically where it takes redis_server)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    """Which server this run tests against, first thing in its log."""
    if REDIS_SERVER is None:
        named = f" ({SERVER_VARIABLE}={NAMED_SERVER!r})" if NAMED_SERVER else ""
        return f"redis server: none found{named}"
    return f"redis server: {REDIS_SERVER}: {server_version(REDIS_SERVER)}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``redis`` every test whose fixtures (however deep) include ``redis_server`` or
    ``cluster`` (tests/cluster_servers.py, six nodes in cluster mode). A test
    that reaches a server another way (``request.getfixturevalue``, a parametrized engine) carries
    the mark itself (``pytest.param(..., marks=pytest.mark.redis)``); :func:`require_redis_mark`
    fails it if it does not."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis)


# The fixtures that start servers: a test that takes one (however deep) is marked redis.
SERVER_FIXTURES = {"redis_server", "cluster"}


# The test being run (its setup, call and teardown), for require_redis_mark().
_running: pytest.Item | None = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    global _running
    _running = item
    try:
        return (yield)
    finally:
        _running = None


def require_redis_mark(item: pytest.Item | None = None) -> None:
    """Fail a test that uses a Redis server without the ``redis`` mark: ``-m redis`` (the suite
    CI runs against Valkey) would silently leave it out."""
    item = item or _running
    if item is not None and item.get_closest_marker("redis") is None:
        pytest.fail(
            f"{item.nodeid} uses a Redis server but is not marked redis: take the redis_server "
            "fixture, or mark it (pytest.mark.redis, or marks= on its parameter)"
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


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something true; its value. A bounded wait, never a
    sleep to make something happen. Errors of a server that is starting or failing over count
    as not yet."""
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (redis.RedisError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class RedisServer:
    """One server process (``redis-server``, or what ``MEMSESSION_TEST_REDIS_SERVER`` names) in a
    temp dir, with no persistence, and its faults.

    ``executable``: the server to run (default: :func:`server_executable`). ``cluster``: a Redis
    Cluster node (``cluster-enabled``, its ``nodes-<port>.conf`` in its dir) holding no slots yet.
    ``extra_args``: more command-line options, appended as given."""

    def __init__(
        self, executable: str | None = None, cluster: bool = False, extra_args: Sequence[str] = ()
    ) -> None:
        self.executable = executable or server_executable()
        self.cluster = cluster
        self.extra_args = list(extra_args)
        self.port = free_cluster_port() if cluster else _free_port()
        self.directory = tempfile.mkdtemp(prefix="memsession-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        require_redis_mark()
        args = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", self.directory]
        args += ["--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
            args += [
                "--cluster-config-file",
                os.path.join(self.directory, f"nodes-{self.port}.conf"),
            ]
        args += self.extra_args
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
                raise RuntimeError(f"{self.executable} did not start on port {self.port}")
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
    executable = server_executable()
    pytest.importorskip("redis")
    server = RedisServer(executable)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer, settings, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty server, and the Redis engine pointed at it (and at nothing else) for the test."""
    from django_memsession.redis import store

    require_redis_mark(request.node)
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
