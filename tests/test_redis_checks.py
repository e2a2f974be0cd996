"""The Redis engine's system checks: each bad setting is an error saying what to write; ``check
--deploy`` pings Redis and reads its eviction policy. Nothing imports redis for the memory engine.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from processes import TESTS_DIR
from redis_server import RedisServer

from django_memsession.redis import store
from django_memsession.redis.checks import check_redis_deployment, check_redis_settings


def ids() -> list[str]:
    return [message.id for message in check_redis_settings()]


def deploy_ids() -> list[str]:
    return [message.id for message in check_redis_deployment()]


@pytest.fixture
def redis_engine(settings) -> None:
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = "redis://127.0.0.1:6379/0"


def test_silent_for_the_memory_engine(settings):
    settings.MEMSESSION_REDIS_URL = 42
    assert check_redis_settings() == []
    assert check_redis_deployment() == []


@pytest.mark.usefixtures("redis_engine")
def test_default_settings_pass():
    assert ids() == []


@pytest.mark.usefixtures("redis_engine")
@pytest.mark.parametrize("url", [None, 42, "http://127.0.0.1/", "127.0.0.1:6379", ""])
def test_a_missing_or_wrong_url_is_e101(url, settings):
    settings.MEMSESSION_REDIS_URL = url
    assert ids() == ["memsession.E101"]


@pytest.mark.usefixtures("redis_engine")
@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://cache.example:6380/1", "unix:///run/r.sock"]
)
def test_redis_rediss_and_unix_urls_are_accepted(url, settings):
    settings.MEMSESSION_REDIS_URL = url
    assert ids() == []


@pytest.mark.usefixtures("redis_engine")
@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redis://127.0.0.1:notaport/0", "its port is not a number from 1 to 65535"),
        ("redis://127.0.0.1:0/0", "its port is not a number from 1 to 65535"),
        ("redis://127.0.0.1:65536/0", "its port is not a number from 1 to 65535"),
        ("redis:///0", "it names no host"),
        ("redis://127.0.0.1/zero", "its database number (the path) is not a whole number"),
        ("redis://127.0.0.1/-1", "its database number (the path) is not a whole number"),
        ("redis://127.0.0.1?db=one", "its ?db= is not a whole number"),
        ("unix://", "it names no socket"),
        (
            "redis://127.0.0.1/0?cluster=yes",
            "'cluster' (for a Redis Cluster, set MEMSESSION_REDIS_CLUSTER = True)",
        ),
        ("redis://127.0.0.1/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
    ],
)
def test_a_url_redis_py_cannot_use_is_e101_saying_what_is_wrong(url, said, settings):
    settings.MEMSESSION_REDIS_URL = url
    (message,) = check_redis_settings()
    assert message.id == "memsession.E101"
    assert said in message.msg
    assert "redis://127.0.0.1:6379/0" in message.hint


@pytest.mark.usefixtures("redis_engine")
def test_manage_py_check_fails_on_a_url_whose_port_is_not_a_number(settings):
    settings.MEMSESSION_REDIS_URL = "redis://127.0.0.1:notaport/0"
    with pytest.raises(SystemCheckError, match=r"memsession\.E101"):
        call_command("check")


@pytest.mark.usefixtures("redis_engine")
def test_a_password_in_a_wrong_url_is_never_shown(settings):
    settings.MEMSESSION_REDIS_URL = "http://user:s3cret@host/"
    (message,) = check_redis_settings()
    assert "s3cret" not in message.msg


@pytest.mark.usefixtures("redis_engine")
@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MEMSESSION_REDIS_PREFIX", b"bytes:", "memsession.E102"),
        ("MEMSESSION_REDIS_OPTIONS", [("max_connections", 5)], "memsession.E103"),
        ("MEMSESSION_REDIS_OPTIONS", {"socket_timeout": None}, "memsession.E104"),
        ("MEMSESSION_REDIS_OPTIONS", {"socket_connect_timeout": 0}, "memsession.E104"),
        ("MEMSESSION_REDIS_PROBATION_AGE", 0, "memsession.E105"),
        ("MEMSESSION_REDIS_PROBATION_AGE", "1h", "memsession.E105"),
        ("MEMSESSION_MAX_SESSION_SIZE", "lots", "memsession.E106"),
    ],
)
def test_each_bad_setting_has_its_own_id_and_a_hint(name, value, expected, settings):
    setattr(settings, name, value)
    (message,) = check_redis_settings()
    assert message.id == expected
    assert message.hint


# -- option names: what redis-py takes, read from its own signatures ----------------------------


@pytest.mark.usefixtures("redis_engine")
def test_an_unknown_option_is_e109_listing_the_accepted_names(settings):
    settings.MEMSESSION_REDIS_OPTIONS = {"cluster": True}
    (message,) = check_redis_settings()
    assert message.id == "memsession.E109"
    assert "'cluster' (for a Redis Cluster, set MEMSESSION_REDIS_CLUSTER = True)" in message.msg
    assert "max_connections, " in message.hint
    assert "socket_timeout, " in message.hint


@pytest.mark.usefixtures("redis_engine")
def test_a_misspelt_option_is_e109_with_its_close_match(settings):
    settings.MEMSESSION_REDIS_OPTIONS = {"max_conections": 50}
    (message,) = check_redis_settings()
    assert message.id == "memsession.E109"
    assert "'max_conections' (did you mean 'max_connections'?)" in message.msg


@pytest.mark.usefixtures("redis_engine")
def test_an_option_the_engine_sets_itself_is_e109_saying_why(settings):
    settings.MEMSESSION_REDIS_OPTIONS = {"decode_responses": True, "db": 2}
    (message,) = check_redis_settings()
    assert "'decode_responses' (the engine reads and writes bytes)" in message.msg
    assert "'db' (the URL gives it)" in message.msg


@pytest.mark.usefixtures("redis_engine")
def test_a_tls_option_needs_a_rediss_url(settings):
    settings.MEMSESSION_REDIS_OPTIONS = {"ssl_ca_certs": "/etc/ssl/ca.pem"}
    (message,) = check_redis_settings()
    assert "'ssl_ca_certs' (only with a rediss:// URL)" in message.msg
    settings.MEMSESSION_REDIS_URL = "rediss://cache.example:6380/0"
    assert ids() == []


@pytest.mark.usefixtures("redis_engine")
def test_with_no_url_yet_an_option_some_scheme_takes_is_not_refused(settings):
    """As before exportsessions: MEMSESSION_REDIS_OPTIONS set, MEMSESSION_REDIS_URL not yet."""
    settings.MEMSESSION_REDIS_URL = None
    settings.MEMSESSION_REDIS_OPTIONS = {"ssl_ca_certs": "/etc/ssl/ca.pem", "cluster": True}
    assert ids() == ["memsession.E101", "memsession.E109"]
    (message,) = [m for m in check_redis_settings() if m.id == "memsession.E109"]
    assert "'cluster'" in message.msg
    assert "ssl_ca_certs" not in message.msg


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # lib_name, lib_version
@pytest.mark.parametrize("scheme", ["redis", "rediss", "unix"])
def test_every_accepted_option_is_taken_by_the_sync_and_the_async_connection(scheme):
    import redis.asyncio.connection
    import redis.connection

    from django_memsession.redis.client import accepted_options

    url = {"unix": "unix:///run/r.sock"}.get(scheme, f"{scheme}://127.0.0.1:6379/0")
    pools = (redis.connection.ConnectionPool, redis.asyncio.connection.ConnectionPool)
    for name in sorted(accepted_options(scheme)):
        for pool_class in pools:
            # None is each one's "not given" for most; the point is the name: an unknown one is
            # a TypeError when the pool makes a connection.
            pool = pool_class.from_url(url, **{name: default_of(name, pool_class)})
            pool.make_connection()


def default_of(name: str, pool_class: type) -> object:
    """The default redis-py gives ``name`` in the pool's or a connection class's signature."""
    import inspect

    import redis.asyncio.connection
    import redis.connection

    module = redis.asyncio.connection if "asyncio" in pool_class.__module__ else redis.connection
    for cls in (pool_class, module.SSLConnection, module.UnixDomainSocketConnection):
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            parameter = inspect.signature(init).parameters.get(name)
            if parameter is not None and parameter.default is not parameter.empty:
                return parameter.default
    return None


@pytest.mark.usefixtures("redis_engine")
def test_the_store_is_not_built_with_an_unknown_option(settings):
    settings.MEMSESSION_REDIS_OPTIONS = {"cluster": True}
    store.reset()
    with pytest.raises(ImproperlyConfigured, match=r"'cluster'.*memsession\.E109"):
        store.get_store()


@pytest.mark.usefixtures("redis_engine")
def test_the_store_is_not_built_on_bad_settings_with_the_checks_text(settings):
    settings.MEMSESSION_REDIS_URL = None
    store.reset()
    with pytest.raises(ImproperlyConfigured, match=r"MEMSESSION_REDIS_URL.*memsession\.E101"):
        store.get_store()


@pytest.mark.usefixtures("redis_engine")
def test_manage_py_check_fails_on_a_bad_setting(settings):
    settings.MEMSESSION_REDIS_PROBATION_AGE = -1
    with pytest.raises(SystemCheckError, match=r"memsession\.E105"):
        call_command("check")


# -- check --deploy, against a real Redis ----------------------------------------------------------


@pytest.mark.usefixtures("redis_url")
@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("volatile-ttl", []),
        ("noeviction", ["memsession.W101"]),
        ("allkeys-lru", ["memsession.W102"]),
        ("allkeys-random", ["memsession.W102"]),
        ("volatile-lru", ["memsession.W103"]),
    ],
)
def test_deploy_check_reads_the_eviction_policy(policy, expected, redis_server: RedisServer):
    redis_server.set_maxmemory("100mb", policy)
    assert deploy_ids() == expected


@pytest.mark.usefixtures("redis_url")
def test_deploy_check_says_when_it_cannot_tell_the_policy(redis_server: RedisServer, settings):
    admin = redis_server.client()
    admin.acl_setuser(
        "app", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all", "-config"]
    )
    admin.close()
    settings.MEMSESSION_REDIS_URL = f"redis://app:s3cret@127.0.0.1:{redis_server.port}/0"
    try:
        (message,) = check_redis_deployment()
    finally:
        admin = redis_server.client()
        admin.acl_deluser("app")
        admin.close()
    assert message.id == "memsession.W104"
    assert "could not tell" in message.msg.lower()


def test_deploy_check_errors_when_redis_does_not_answer(redis_engine, settings):
    settings.MEMSESSION_REDIS_URL = f"redis://:pw@127.0.0.1:{free_port()}/0"
    (message,) = check_redis_deployment()
    assert message.id == "memsession.E107"
    assert ":pw@" not in message.msg


@pytest.mark.usefixtures("redis_url")
def test_check_deploy_runs_the_redis_check(redis_server: RedisServer):
    redis_server.set_maxmemory("100mb", "allkeys-lru")
    with pytest.raises(SystemCheckError, match=r"memsession\.W102"):
        call_command("check", "--deploy", "--fail-level", "WARNING")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the memory engine never imports redis ---------------------------------------------------------


def test_the_memory_engine_never_imports_redis():
    code = (
        "import sys, django; django.setup()\n"
        "import django_memsession, django_memsession.middleware, django_memsession.redis\n"
        "from django.core.management import call_command\n"
        "call_command('check', '--deploy')\n"
        "from django.test import Client\n"
        "Client().get('/session/make/')\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "testsite.settings"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *sys.path])
    env.pop("MEMSESSION_TEST_REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
