"""The Redis engine's own tests and Django's session suite, again, with the near cache on.

Every test of ``test_redis_engine.py`` runs here too (imported), and Django's
``SessionTestsMixin``/``SessionMiddlewareTests`` classes are built once more: the
``near_cache_on`` fixture turns on ``MEMSESSION_REDIS_NEAR_CACHE`` for each, so a load may be
answered by L1. The engine tests that count round trips of a load without a near cache are
replaced by what they become with one (in ``test_redis_near.py``).
"""

from __future__ import annotations

import pytest
from django_session_suite import django_session_test_cases

pytest.importorskip("redis")

from test_redis_engine import *  # noqa: F403 - the engine's tests, run again here

from django_memsession.redis.engine import SessionStore
from django_memsession.redis.store import get_store

# A load of a settled session is a GET without a near cache; with one, the session just saved
# is in L1 and the load makes no round trip (test_a_load_that_finds_a_valid_copy_makes_no_...).
del test_a_load_of_a_settled_session_is_one_plain_get  # noqa: F821


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
