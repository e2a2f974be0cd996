"""Django's own session tests (``tests/sessions_tests`` of the installed Django) on the Redis
engine, against a real ``redis-server``.

The same classes as ``test_django_suite.py`` runs on the memory engine (Django's
``SessionTestsMixin`` and ``SessionMiddlewareTests``, sync and async), built for
``django_memsession.redis``. Each test gets an empty server and the engine pointed at it (the
``redis_url`` fixture, autouse here): Django's tests never see another test's sessions. Without
``redis-server`` the module skips (fails under ``MEMSESSION_REQUIRE_REDIS=1``); without Django's
suite it skips (fails under ``MEMSESSION_REQUIRE_DJANGO_SUITE=1``).
"""

from __future__ import annotations

import pytest
from django_session_suite import django_session_test_cases

pytest.importorskip("redis")

from django_memsession.redis.engine import SessionStore  # after importorskip: needs redis

# Tests of Django's that cannot apply to the Redis engine (skipped, with the reason): none.
SKIP: dict[str, str] = {}

# Known failures against Django's expectations, to be fixed in the engine; strict, so a fix
# shows up as XPASS(strict) until its line goes.
XFAIL: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _redis_engine(redis_url: str) -> str:
    """Every test of this module on an empty Redis, with the engine pointed at it."""
    return redis_url


globals().update(
    django_session_test_cases(
        SessionStore,
        prefix="Redis",
        engine="django_memsession.redis",
        xfail=XFAIL,
        skip=SKIP,
    )
)
