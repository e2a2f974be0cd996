"""Django's own session tests (``tests/sessions_tests`` of the installed Django) on each engine.

Reviewers hold the engines to Django's ``SessionTestsMixin`` and ``SessionMiddlewareTests``; this
runs them here, for whichever Django the environment has, once per engine of ``engines.py``:
``Memsession*`` (memory), ``Redis*`` and ``RedisNear*`` (a real ``redis-server``, the second with
the near cache on, so a load may be answered by L1), ``RedisCluster*`` (the six-node cluster of
``cluster_servers.py``). Django's suite is fetched once per version
(see ``django_session_suite``); without a network the module skips, or fails under
``MEMSESSION_REQUIRE_DJANGO_SUITE=1``. Each Redis test gets an empty server and the engine
pointed at it: Django's tests never see another test's sessions. Without ``redis-server`` the
Redis classes skip (fail under ``MEMSESSION_REQUIRE_REDIS=1``).
"""

from __future__ import annotations

import importlib.util

import pytest
from django_session_suite import django_session_test_cases
from engines import start_engine

from django_memsession.memory.engine import SessionStore

# Tests of Django's that cannot apply to an engine (skipped, with the reason): none. Every test
# of SessionTestsMixin and SessionMiddlewareTests runs; the two middleware tests that read the db
# engine's table run with that read going through the engine instead.
SKIP: dict[str, dict[str, str]] = {"memory": {}, "redis": {}, "redis+near": {}, "redis-cluster": {}}

# Known failures of an engine against Django's expectations, to be fixed in the engine; strict,
# so a fix shows up as XPASS(strict) until its line goes.
XFAIL: dict[str, dict[str, str]] = {
    "memory": {},
    "redis": {},
    "redis+near": {},
    "redis-cluster": {},
}

PREFIXES = {
    "memory": "Memsession",
    "redis": "Redis",
    "redis+near": "RedisNear",
    "redis-cluster": "RedisCluster",
}


@pytest.fixture(autouse=True)
def _engine(request: pytest.FixtureRequest) -> None:
    """Each test on its class's engine (a Redis one on an empty server)."""
    if request.cls is not None:
        start_engine(request.cls.engine_name, request)


def _cases(name: str, backend: type, engine: str) -> dict[str, type]:
    cases = django_session_test_cases(
        backend,
        prefix=PREFIXES[name],
        engine=engine,
        module=__name__,
        xfail=XFAIL[name],
        skip=SKIP[name],
    )
    for cls in cases.values():
        cls.engine_name = name
        if name != "memory":  # `-m redis` is the Redis engine's whole suite
            cls.pytestmark = [*getattr(cls, "pytestmark", []), pytest.mark.redis]
    return cases


globals().update(_cases("memory", SessionStore, "django_memsession"))

if importlib.util.find_spec("redis") is not None:
    from django_memsession.redis.engine import SessionStore as RedisSessionStore

    for _name in ("redis", "redis+near", "redis-cluster"):
        globals().update(_cases(_name, RedisSessionStore, "django_memsession.redis"))
else:

    def test_the_redis_engines_need_redis_py():
        pytest.importorskip("redis")
