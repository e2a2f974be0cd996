"""The memory engine's own behaviours: its session keys, eviction (which is not logout), and
expired sessions that stay until they are pruned. What every engine keeps (Django's
``SessionBase`` contract) is in ``test_contract_sessions.py``."""

from __future__ import annotations

import django
import pytest
from django.contrib.sessions.backends.base import CreateError
from django.test import override_settings

from django_memsession import SessionStore
from django_memsession.memory.engine import new_session_key
from django_memsession.runtime import get_store


@pytest.fixture
def session() -> SessionStore:
    return SessionStore()


# -- keys ---------------------------------------------------------------------------------------


def test_new_session_key_has_djangos_alphabet_and_length():
    key = new_session_key()
    assert len(key) == 32
    assert set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789")


def test_new_session_keys_use_every_character_of_the_alphabet():
    seen = set("".join(new_session_key() for _ in range(200)))
    assert seen == set("abcdefghijklmnopqrstuvwxyz0123456789")


# -- eviction is not logout -----------------------------------------------------------------------


def test_save_after_eviction_stores_the_session_again(session):
    with override_settings(MEMSESSION_MAX_SIZE="64K", MEMSESSION_MAX_SESSION_SIZE="4K"):
        session["a"] = 1
        session.save()
        in_flight = SessionStore(session.session_key)
        assert in_flight["a"] == 1
        for _ in range(1000):  # returning visitors, all more recent, until it is evicted
            other = SessionStore()
            other.save()
            SessionStore(other.session_key).load()
            if not session.exists(session.session_key):
                break
        assert not session.exists(session.session_key)
        in_flight["b"] = 2
        in_flight.save()  # no UpdateError: eviction is not logout
        assert SessionStore(session.session_key)["b"] == 2


# -- expired sessions until they are pruned -------------------------------------------------------


def test_clear_expired_removes_expired_sessions(global_clock):
    keep, drop = SessionStore(), SessionStore()
    keep.save()
    drop.set_expiry(5)
    drop.save()
    global_clock.advance(6)
    SessionStore.clear_expired()
    assert get_store().stats()["entries"] == 1
    assert keep.exists(keep.session_key)


@pytest.mark.skipif(django.VERSION < (5, 0), reason="SessionBase's async API arrived in Django 5.0")
async def test_async_expiry(global_clock):
    s = SessionStore()
    await s.aset_expiry(10)
    await s.asave()
    global_clock.advance(11)
    assert not await s.aexists(s.session_key)
    await SessionStore.aclear_expired()
    assert get_store().stats()["entries"] == 0


def test_save_must_create_over_an_expired_unpruned_session_raises_create_error(global_clock):
    """As with Django's db engine, whose expired row is still there until clearsessions."""
    old = SessionStore()
    old.set_expiry(10)
    old.save()
    global_clock.advance(11)
    again = SessionStore(old.session_key)
    again._session_cache = {"new": True}
    with pytest.raises(CreateError):
        again.save(must_create=True)
