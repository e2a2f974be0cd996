"""Django's session suite, again, on the Redis engine with the near cache on.

Django's ``SessionTestsMixin``/``SessionMiddlewareTests`` classes are built once more: the
``near_cache_on`` fixture turns on ``MEMSESSION_REDIS_NEAR_CACHE`` for each, so a load may be
answered by L1. (The engine's own tests run with the near cache on through the ``engine``
fixture's ``redis+near``: ``test_contract_sessions.py``, ``test_redis_engine.py``.)
"""

from __future__ import annotations

import pytest
from django_session_suite import django_session_test_cases

pytest.importorskip("redis")

from django_memsession.redis.engine import SessionStore  # after importorskip: needs redis
from django_memsession.redis.store import get_store


@pytest.fixture(autouse=True)
def near_cache_on(redis_url: str, settings) -> str:
    """Each test on an empty Redis, with a 1 MiB near cache and tracking registered."""
    settings.MEMSESSION_REDIS_NEAR_CACHE = "1M"
    near = get_store().near
    assert near is not None and near.connect()
    return redis_url


globals().update(
    django_session_test_cases(
        SessionStore,
        prefix="RedisNear",
        engine="django_memsession.redis",
        xfail={},
        skip={},
    )
)
