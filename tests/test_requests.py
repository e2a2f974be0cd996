"""The engine through real requests: Django's test client and the whole middleware stack.

Eviction between load and save, logout in another request, sessions too large to store,
values the serializer refuses, and cookies that are not session keys.
"""

from __future__ import annotations

import logging
import random
import string
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.test import Client, override_settings
from testsite import views

from django_memsession import SessionStore, stats
from django_memsession.runtime import get_store


@pytest.fixture
def interfere() -> Iterator[None]:
    """Lets a test run code inside the ``step`` view, between its load and its save."""
    yield
    views.between_load_and_save = None


def evict_by_traffic(session_key: str) -> None:
    """Other visitors come and come back, until this session is the least recently used and
    has been evicted (the store's budget is small in these tests)."""
    for _ in range(5000):
        if not get_store().exists(session_key):
            return
        other = SessionStore()
        other["cart"] = ["tea"]
        other.save()
        SessionStore(other.session_key).load()
    raise AssertionError("the session was never evicted")


@override_settings(MEMSESSION_MAX_SIZE="64K", MEMSESSION_MAX_SESSION_SIZE="4K")
def test_a_session_evicted_during_a_request_is_stored_again_with_no_400(client, interfere):
    client.get("/session/make/")
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    views.between_load_and_save = evict_by_traffic

    response = client.get("/session/step/")

    assert response.status_code == 200
    assert response.cookies[settings.SESSION_COOKIE_NAME].value == key
    assert SessionStore(key)["visits"] == 2
    assert stats()["restored"] == 1


@pytest.mark.django_db
def test_a_session_logged_out_in_another_request_is_not_resurrected(client, interfere):
    user = User.objects.create_user("ann", password="pw")
    client.force_login(user)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    other_tab = Client()
    other_tab.cookies = client.cookies  # the same browser, another tab

    def log_out_in_the_other_tab(session_key: str) -> None:
        other_tab.post("/logout/")
        assert not SessionStore().exists(session_key)

    views.between_load_and_save = log_out_in_the_other_tab

    response = client.get("/session/step/")

    assert response.status_code == 400  # Django's SessionInterrupted, as with its own engines
    assert not SessionStore().exists(key)
    assert "_auth_user_id" not in SessionStore(key).load()


def test_a_session_too_large_to_store_is_a_logged_400_and_keeps_its_previous_version(
    client, caplog
):
    client.get("/session/make/")
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    bystander = Client()
    bystander.get("/session/make/")
    figures = stats()

    with caplog.at_level(logging.ERROR, logger="django_memsession"):
        response = client.get("/session/blob/", {"size": 2 * 1024 * 1024})

    assert response.status_code == 400
    assert any(
        record.name == "django_memsession" and "MEMSESSION_MAX_SESSION_SIZE" in record.message
        for record in caplog.records
    )
    assert dict(SessionStore(key).load()) == {"visits": 1, "cart": [{"sku": "tea", "qty": 1}]}
    assert bystander.get("/session/make/").json()["visits"] == 2
    assert (stats()["entries"], stats()["rejected"]) == (figures["entries"], 1)


def circular_list() -> list:
    value: list = []
    value.append(value)
    return value


UNSERIALIZABLE = {
    "datetime": datetime(2026, 1, 1),
    "decimal": Decimal("1.5"),
    "set": {1, 2},
    "bytes": b"raw",
    "object": object(),
    "circular": circular_list(),
}


@pytest.mark.django_db
@pytest.mark.parametrize("value", UNSERIALIZABLE.values(), ids=UNSERIALIZABLE.keys())
def test_a_value_the_serializer_refuses_fails_as_with_the_db_engine(value):
    def failure(store_class: type) -> type[BaseException] | None:
        session = store_class()
        session["value"] = value
        try:
            session.save()
        except Exception as exc:
            return type(exc)
        return None

    expected = failure(DatabaseSessionStore)
    assert expected is not None
    assert failure(SessionStore) is expected
    assert stats()["entries"] == 0


# -- cookies that are not session keys ------------------------------------------------------------

ALPHABET = string.ascii_lowercase + string.digits


def fuzzed_cookie(rng: random.Random) -> str:
    """One cookie value of a kind a scanner, a broken client or an attacker sends."""
    kind = rng.randrange(10)
    if kind == 0:  # overlong, in the right alphabet
        return "".join(rng.choices(ALPHABET, k=rng.randrange(65, 5000)))
    if kind == 1:  # non-ASCII, as a server hands it over: UTF-8 bytes read as latin-1
        text = "".join(chr(rng.randrange(0x80, 0x3000)) for _ in range(rng.randrange(1, 40)))
        return text.encode("utf-8", "surrogatepass").decode("latin-1")
    if kind == 2:  # NUL and control bytes inside a key-shaped value
        key = list(rng.choices(ALPHABET, k=32))
        key[rng.randrange(32)] = chr(rng.randrange(0, 32))
        return "".join(key)
    if kind == 3:  # separators and quoting
        return "".join(rng.choices(ALPHABET + ';,= "\\\t', k=rng.randrange(1, 64)))
    if kind == 4:  # path characters
        return rng.choice(["../../etc/passwd", "..%2f..%2f", "/tmp/x", "a/b", "C:\\x", "..", "."])
    if kind == 5:  # upper case: not a key this engine makes
        return "".join(rng.choices(string.ascii_uppercase + string.digits, k=32))
    if kind == 6:  # too short, or empty
        return "".join(rng.choices(ALPHABET, k=rng.randrange(0, 8)))
    if kind == 7:  # any printable ASCII
        return "".join(rng.choices(string.printable, k=rng.randrange(1, 100)))
    # valid-looking keys of sessions that do not exist (kinds 8 and 9: the commonest)
    return "".join(rng.choices(ALPHABET, k=rng.choice([8, 32, 40, 64])))


@pytest.mark.heavy
def test_ten_thousand_fuzzed_cookies_are_no_session_and_change_nothing(client):
    for _ in range(3):
        Client().get("/session/make/")  # a few real sessions, which must stay as they are
    before = stats()
    rng = random.Random(20261125)
    statuses = []
    for _ in range(10_000):
        cookie = fuzzed_cookie(rng)
        response = client.get(
            "/session/read/", HTTP_COOKIE=f"{settings.SESSION_COOKIE_NAME}={cookie}"
        )
        statuses.append(response.status_code)
        sent = response.cookies.get(settings.SESSION_COOKIE_NAME)
        assert sent is None or sent.value == ""  # at most Django's deletion of a bad cookie
    after = stats()
    assert set(statuses) == {200}
    assert (after["entries"], after["bytes"]) == (before["entries"], before["bytes"])
    assert after["hits"] == before["hits"]
