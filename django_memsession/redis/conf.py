"""The Redis engine's settings now live in ``django_memsession/conf/redis.py`` (with the memory
engine's beside it, and what both share in ``conf/base.py``); this module re-exports them, so
``from .conf import ...`` in this package and ``django_memsession.redis.conf`` keep working."""

from __future__ import annotations

from ..conf.base import DEFAULT_MAX_SESSION_SIZE, Problem, problems_text, raise_any
from ..conf.redis import (
    DEFAULT_OPTIONS,
    DEFAULT_PREFIX,
    DEFAULT_PROBATION_AGE,
    DIGITS,
    MIN_NEAR_CACHE_SIZE,
    NEAR_CACHE_LOW_WATER,
    NEAR_CACHE_SESSION_SHARE,
    URL_EXAMPLE,
    URL_SCHEMES,
    RedisSettings,
    StoreSettings,
    conf,
    max_session_bytes,
    pool_options,
    problems,
    redacted,
    sentinel_settings,
    store_settings,
    url_problem,
)

__all__ = [
    "DEFAULT_MAX_SESSION_SIZE",
    "DEFAULT_OPTIONS",
    "DEFAULT_PREFIX",
    "DEFAULT_PROBATION_AGE",
    "DIGITS",
    "MIN_NEAR_CACHE_SIZE",
    "NEAR_CACHE_LOW_WATER",
    "NEAR_CACHE_SESSION_SHARE",
    "URL_EXAMPLE",
    "URL_SCHEMES",
    "Problem",
    "RedisSettings",
    "StoreSettings",
    "conf",
    "max_session_bytes",
    "pool_options",
    "problems",
    "problems_text",
    "raise_any",
    "redacted",
    "sentinel_settings",
    "store_settings",
    "url_problem",
]
