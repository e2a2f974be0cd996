"""The flood on Redis: 1,000 logged-in users, then 1,000,000 new anonymous sessions against a
Redis whose ``maxmemory`` holds a fraction of them, under ``volatile-ttl``: every logged-in user
still loads. The anonymous sessions are written exactly as the engine writes a new one (its
payload, expiry and probation TTL), pipelined in batches so the test takes seconds, not minutes.
"""

from __future__ import annotations

import pytest
from redis_server import RedisServer

from django_memsession.memory.engine import new_session_key
from django_memsession.redis import SessionStore
from django_memsession.redis.store import get_store

pytestmark = [pytest.mark.heavy, pytest.mark.usefixtures("redis_url")]

LOGGED_IN = 1_000
ANONYMOUS = 1_000_000
BATCH = 10_000
MAXMEMORY = 16 * 1024 * 1024  # room for the logged-in users and a few % of the flood


def test_a_million_anonymous_sessions_evict_each_other_and_no_logged_in_user(
    redis_server: RedisServer,
):
    redis_server.set_maxmemory(MAXMEMORY, "volatile-ttl")
    users = []
    for user_id in range(LOGGED_IN):
        session = SessionStore()
        session.update({"_auth_user_id": str(user_id), "cart": [{"sku": "tea", "qty": 1}] * 5})
        session.save()
        users.append(session.session_key)

    store = get_store()
    # What the engine decides for a new anonymous session: payload, expiry, probation TTL.
    payload, expires_at, ttl, full_ttl, _ = SessionStore()._write(
        store, {"cart": [{"sku": "biscuit", "qty": 1}]}
    )
    assert ttl < full_ttl  # on probation
    created = 0
    for _ in range(ANONYMOUS // BATCH):
        created += store.create_many(
            (new_session_key(), payload, expires_at, ttl, False) for _ in range(BATCH)
        )
    assert created == ANONYMOUS

    client = redis_server.client()
    info = client.info("memory") | client.info("stats")
    stored = client.dbsize()
    client.close()
    assert info["evicted_keys"] > ANONYMOUS // 2  # the flood did not fit
    assert stored < ANONYMOUS // 2
    missing = [key for key in users if SessionStore(key).get("_auth_user_id") is None]
    assert missing == []
