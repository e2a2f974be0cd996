"""The Redis engine through real requests: Django's test client, this package's middleware.

Eviction between load and save, logout in another request, and cookies that are not session
keys (which must cost no Redis call and create nothing).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import Client
from redis_server import RedisServer
from test_requests import fuzzed_cookie
from testsite import views

from django_memsession.redis import SessionStore
from django_memsession.redis.store import get_store

pytestmark = pytest.mark.usefixtures("redis_site")


@pytest.fixture
def interfere() -> Iterator[None]:
    """Lets a test run code inside the ``step`` view, between its load and its save."""
    yield
    views.between_load_and_save = None


def test_a_session_evicted_during_a_request_is_stored_again_with_no_400(
    client, interfere, redis_server: RedisServer
):
    client.get("/session/make/")
    key = client.cookies[settings.SESSION_COOKIE_NAME].value

    def evicted_by_redis(session_key: str) -> None:
        redis = redis_server.client()
        assert redis.delete(get_store().key(session_key)) == 1
        redis.close()

    views.between_load_and_save = evicted_by_redis

    response = client.get("/session/step/")

    assert response.status_code == 200
    assert response.cookies[settings.SESSION_COOKIE_NAME].value == key
    assert SessionStore(key)["visits"] == 2


def test_a_session_logged_out_in_another_request_is_not_resurrected(client, interfere):
    client.get("/session/sign-in/")
    client.get("/session/make/")
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    other_tab = Client()
    other_tab.cookies = client.cookies  # the same browser, another tab

    def log_out_in_the_other_tab(session_key: str) -> None:
        other_tab.post("/session/sign-out/")
        assert not SessionStore().exists(session_key)

    views.between_load_and_save = log_out_in_the_other_tab

    response = client.get("/session/step/")

    assert response.status_code == 400  # Django's SessionInterrupted, as with its own engines
    assert not SessionStore().exists(key)
    assert SessionStore(key).load() == {}


def test_a_returning_visitor_keeps_one_session_across_requests(client):
    for visit in range(1, 6):
        assert client.get("/session/make/").json()["visits"] == visit
    assert len(get_store().client.keys("*")) == 1


@pytest.mark.parametrize("seed", range(3))
def test_fuzzed_cookies_cost_a_redis_call_only_if_well_formed_and_create_nothing(
    seed, redis_server
):
    rng = random.Random(seed)
    cookies = [fuzzed_cookie(rng) for _ in range(200)]
    well_formed = sum(1 for cookie in cookies if re.fullmatch(r"[a-z0-9]{8,64}", cookie))
    assert 0 < well_formed < len(cookies)
    before = redis_server.calls(), redis_server.calls("get")
    for cookie in cookies:
        client = Client()
        client.cookies[settings.SESSION_COOKIE_NAME] = cookie
        assert client.get("/session/read/").json() == {"visits": None}
    # One load (one GET) for each well-formed cookie, nothing else.
    assert redis_server.calls("get") - before[1] == well_formed
    assert redis_server.calls() - before[0] == well_formed
    assert get_store().client.dbsize() == 0


def test_well_formed_unknown_cookies_are_looked_up_once_and_create_nothing(redis_server):
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    cookies = ["".join(rng.choices(alphabet, k=rng.randrange(8, 65))) for _ in range(50)]
    before = redis_server.calls()
    for cookie in cookies:
        client = Client()
        client.cookies[settings.SESSION_COOKIE_NAME] = cookie
        response = client.get("/session/read/")
        assert response.json() == {"visits": None}
    assert redis_server.calls() - before == len(cookies)  # one load (one GET) each
    assert get_store().client.dbsize() == 0
