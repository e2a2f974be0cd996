"""The session contract every engine keeps: ``SessionStore`` against Django's ``SessionBase``,
sync and async, run on each engine (the ``engine`` fixture of ``engines.py``).

Modelled on the behaviours Django's own ``SessionTestsMixin`` checks for every built-in engine.
What is one engine's own (the memory store's eviction and pruning, Redis's tombstones, probation
and TTLs) is in ``test_engine.py`` and ``test_redis_engine.py``.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import timedelta

import django
import pytest
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.test import override_settings
from django.utils import timezone

from django_memsession import SessionTooLarge

pytestmark = pytest.mark.engines("memory", "redis", "redis+near", "redis-cluster")


@pytest.fixture
def session(engine):
    return engine.SessionStore()


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cookie",
    ["short", "x" * 65, "ABCDEFGHIJKL", "abc/../../etc", "abcdefgh\x00ijk", "ключключключ", ""],
)
def test_invalid_key_is_no_session_and_creates_nothing(engine, cookie):
    s = engine.SessionStore(cookie)
    assert s.session_key is None
    assert s.get("anything") is None
    assert not s.exists(cookie)
    s.delete(cookie)
    assert engine.stored() == 0


def test_unknown_valid_looking_key_loads_empty_and_creates_nothing(engine):
    s = engine.SessionStore("a" * 32)
    assert s.load() == {}
    assert s.session_key is None
    assert engine.stored() == 0


def test_unknown_key_gets_a_fresh_key_on_save(engine):
    s = engine.SessionStore("a" * 32)
    s["x"] = 1
    s.save()
    assert s.session_key not in (None, "a" * 32)
    assert engine.SessionStore(s.session_key)["x"] == 1


# -- basic dict behaviour and persistence -------------------------------------------------------


def test_new_session_is_empty(session):
    assert not session.modified
    assert not session.accessed
    assert session.is_empty()


def test_values_round_trip_through_save_and_load(engine, session):
    session["cart"] = [{"sku": "A1", "qty": 2}]
    session["n"] = 3
    session.save()
    loaded = engine.SessionStore(session.session_key)
    assert loaded["cart"] == [{"sku": "A1", "qty": 2}]
    assert loaded["n"] == 3


def test_values_round_trip_like_json(engine, session):
    session["t"] = (1, 2)
    session["d"] = {1: "int key"}
    session.save()
    loaded = engine.SessionStore(session.session_key)
    assert loaded["t"] == [1, 2]
    assert loaded["d"] == {"1": "int key"}


VALUES = {
    "tuple": (1, 2),
    "int keys": {1: "int key"},
    "big int": 2**80,
    "unicode": "ключ \u2028 ☃",
    "nan": float("nan"),
    "nested": {"a": [{"b": [1.5, None, True]}]},
}


@pytest.mark.django_db
@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_values_round_trip_exactly_as_through_the_db_engine(engine, value):
    def round_trip(store_class: type) -> str:
        session = store_class()
        session["value"] = value
        session.save()
        return repr(store_class(session.session_key)["value"])

    assert round_trip(engine.SessionStore) == round_trip(DatabaseSessionStore)


class TaggingSerializer:
    """A custom SESSION_SERIALIZER that leaves a mark on what it loads."""

    def dumps(self, obj):
        return json.dumps(obj).encode()

    def loads(self, data):
        return {**json.loads(data), "loaded_by": "tagging"}


def test_a_changed_session_serializer_is_used_from_the_next_session_on(engine, session):
    session["a"] = 1
    session.save()
    with override_settings(SESSION_SERIALIZER=f"{__name__}.TaggingSerializer"):
        tagged = engine.SessionStore()
        tagged["b"] = 2
        tagged.save()
        assert engine.SessionStore(tagged.session_key)["loaded_by"] == "tagging"
    assert "loaded_by" not in engine.SessionStore(session.session_key)


def test_loaded_dict_is_not_shared_between_requests(engine, session):
    session["cart"] = ["a"]
    session.save()
    first = engine.SessionStore(session.session_key)
    first["cart"].append("b")  # not saved
    assert engine.SessionStore(session.session_key)["cart"] == ["a"]


@pytest.mark.django_db
def test_unserializable_value_raises_like_the_db_engine(engine):
    def failure(store_class: type) -> type[BaseException] | None:
        s = store_class()
        s["when"] = timezone.now()
        try:
            s.save()
        except Exception as exc:
            return type(exc)
        return None

    assert failure(engine.SessionStore) is failure(DatabaseSessionStore) is TypeError
    assert engine.stored() == 0


def test_setitem_marks_modified(session):
    session["a"] = 1
    assert session.modified


def test_pop_and_setdefault_and_update(session):
    session["a"] = 1
    assert session.pop("a") == 1
    assert session.pop("a", "gone") == "gone"
    assert session.setdefault("b", 2) == 2
    session.update({"c": 3})
    assert dict(session.items()) == {"b": 2, "c": 3}


def test_save_then_exists(session):
    session.save()
    assert session.exists(session.session_key)


def test_delete_removes_the_session(engine, session):
    session.save()
    key = session.session_key
    session.delete()
    assert not session.exists(key)
    assert engine.SessionStore(key).load() == {}


def test_delete_of_another_key(engine, session):
    other = engine.SessionStore()
    other.save()
    session.delete(other.session_key)
    assert not session.exists(other.session_key)


def test_flush_deletes_and_forgets_the_key(session):
    session["a"] = 1
    session.save()
    key = session.session_key
    session.flush()
    assert not session.exists(key)
    assert session.session_key is None
    assert session.modified
    assert session.accessed


def test_cycle_key_keeps_data_under_a_new_key(engine, session):
    session["a"] = 1
    session.save()
    old = session.session_key
    session.cycle_key()
    assert session.session_key != old
    assert not session.exists(old)
    assert engine.SessionStore(session.session_key)["a"] == 1


def test_cycle_key_of_an_empty_unsaved_session(session):
    session.cycle_key()
    assert session.exists(session.session_key)


def test_save_must_create_on_existing_key_raises_create_error(engine, session):
    session.save()
    twin = engine.SessionStore(session.session_key)
    with pytest.raises(CreateError):
        twin.save(must_create=True)


def test_save_after_deletion_in_another_request_raises_update_error(engine, session):
    session["a"] = 1
    session.save()
    other = engine.SessionStore(session.session_key)
    other["a"]  # loaded
    session.delete()
    other["b"] = 2
    with pytest.raises(UpdateError):
        other.save()


def test_save_of_a_key_that_no_longer_exists_without_loading_it_raises_update_error(engine):
    # SessionMiddleware loads before it saves; code that saves a stale key directly gets
    # UpdateError, as from Django's db and cache engines.
    with pytest.raises(UpdateError):
        engine.SessionStore("a" * 32).save()
    assert engine.stored() == 0


def test_clear_empties_without_loading(engine, session):
    session["a"] = 1
    session.save()
    s = engine.SessionStore(session.session_key)
    s.clear()
    assert list(s.keys()) == []
    assert s.modified


def test_test_cookie(session):
    session.set_test_cookie()
    assert session.test_cookie_worked()
    session.delete_test_cookie()
    assert not session.test_cookie_worked()


def test_instance_has_every_attribute_sessionbase_init_sets(engine):
    base = SessionBase()
    ours = engine.SessionStore()
    # serializer is a property (read when used, not imported on every request).
    assert set(vars(base)) - {"serializer"} <= set(vars(ours))
    assert ours.serializer is base.serializer


def test_session_too_large_is_a_bad_request_and_keeps_the_old_version(engine, session, caplog):
    session["a"] = "small"
    session.save()
    other = engine.SessionStore()
    other["b"] = 1
    other.save()
    with override_settings(MEMSESSION_MAX_SESSION_SIZE="2K"):
        session["a"] = "x" * 5000
        with (
            caplog.at_level(logging.ERROR, logger="django_memsession"),
            pytest.raises(SessionTooLarge) as excinfo,
        ):
            session.save()
    assert "MEMSESSION_MAX_SESSION_SIZE" in str(excinfo.value)
    assert engine.SessionStore(session.session_key)["a"] == "small"
    assert engine.SessionStore(other.session_key)["b"] == 1
    assert session.session_key not in caplog.text
    assert "over MEMSESSION_MAX_SESSION_SIZE" in caplog.text


# -- expiry -------------------------------------------------------------------------------------


def test_default_expiry_is_session_cookie_age(session, settings):
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE


@pytest.mark.parametrize("field", ["a", "_auth_user_id"], ids=["anonymous", "logged-in"])
def test_session_expires_after_cookie_age(engine, session, engine_clock, settings, field):
    session[field] = "1"
    session.save()
    engine_clock.advance(settings.SESSION_COOKIE_AGE - 1)
    assert engine.SessionStore(session.session_key).get(field) == "1"
    engine_clock.advance(2)
    assert engine.SessionStore(session.session_key).get(field) is None


def test_set_expiry_seconds(session, engine_clock):
    session.set_expiry(60)
    session.save()
    engine_clock.advance(61)
    assert not session.exists(session.session_key)


def test_set_expiry_timedelta(session, engine_clock):
    session.set_expiry(timedelta(seconds=90))
    assert 85 <= session.get_expiry_age() <= 90
    session.save()
    engine_clock.advance(91)
    assert not session.exists(session.session_key)


def test_set_expiry_datetime(session, engine_clock):
    session.set_expiry(timezone.now() + timedelta(seconds=30))
    session.save()
    engine_clock.advance(31)
    assert not session.exists(session.session_key)


def test_set_expiry_in_the_past_is_never_returned(engine, session):
    session["a"] = 1
    session.set_expiry(timezone.now() - timedelta(seconds=5))
    session.save()
    assert engine.SessionStore(session.session_key).get("a") is None


def test_set_expiry_in_the_past_of_a_saved_session_is_never_returned(engine, session):
    session["a"] = 1
    session.save()
    session.set_expiry(timezone.now() - timedelta(seconds=5))
    session.save()
    assert engine.SessionStore(session.session_key).get("a") is None


def test_set_expiry_zero_expires_at_browser_close_and_lives_cookie_age(session, settings):
    session.set_expiry(0)
    assert session.get_expire_at_browser_close()
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE


def test_set_expiry_none_restores_the_default(session, settings):
    session.set_expiry(60)
    session.set_expiry(None)
    assert session.get_expiry_age() == settings.SESSION_COOKIE_AGE


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("expiry", "error"),
    [
        (math.nan, ValueError),
        (math.inf, OverflowError),
        (1e20, OverflowError),
        (10**15, OverflowError),
    ],
    ids=["nan", "inf", "1e20", "huge"],
)
def test_an_expiry_the_db_engine_cannot_store_raises_what_it_raises(engine, expiry, error):
    def failure(store_class: type) -> type[BaseException] | None:
        s = store_class()
        s["n"] = 1
        s.set_expiry(expiry)
        try:
            s.save()
        except Exception as exc:
            return type(exc)
        return None

    assert failure(DatabaseSessionStore) is error
    assert failure(engine.SessionStore) is error
    assert engine.stored() == 0


def test_update_of_an_expired_session_raises_update_error(engine, session, engine_clock):
    session.set_expiry(10)
    session.save()
    loaded = engine.SessionStore(session.session_key)
    loaded["a"] = 1
    engine_clock.advance(11)
    # On Redis the key is still there (its TTL runs on real time); the web server's clock says
    # the session has expired, and that decides.
    with pytest.raises(UpdateError):
        loaded.save()


def test_clear_expired_keeps_live_sessions(engine, session):
    session.save()
    assert engine.SessionStore.clear_expired() is None
    assert session.exists(session.session_key)


def test_expiry_follows_time_frozen_and_moved_by_freezegun(engine):
    """Django's engines compute expiry from the current time; so does each engine, looked up
    when it is needed (a store that bound ``time.time`` at import would ignore freezegun)."""
    freezegun = pytest.importorskip("freezegun")
    with freezegun.freeze_time("2031-01-01 12:00:00") as frozen:
        session = engine.SessionStore()
        session["cart"] = [1]
        session.set_expiry(60)
        session.save()
        frozen.tick(59)
        assert engine.SessionStore(session.session_key).load() == {
            "cart": [1],
            "_session_expiry": 60,
        }
        frozen.tick(2)
        assert engine.SessionStore(session.session_key).load() == {}
        assert not session.exists(session.session_key)


# -- async twins --------------------------------------------------------------------------------

# SessionBase's own async API (aget, aset, aflush, ...) arrived in Django 5.0; the engines'
# methods (aload, asave, acreate, aexists, adelete, aclear_expired) exist on every version.
needs_django5_async = pytest.mark.skipif(
    django.VERSION < (5, 0), reason="SessionBase's async API arrived in Django 5.0"
)


async def test_async_engine_methods_round_trip(engine):
    s = engine.SessionStore()
    s["a"] = 1
    await s.asave()
    loaded = engine.SessionStore(s.session_key)
    assert await loaded.aload() == {"a": 1}
    await loaded.adelete()
    assert not await s.aexists(s.session_key)


@needs_django5_async
async def test_async_round_trip(engine):
    s = engine.SessionStore()
    await s.aset("a", 1)
    await s.asave()
    loaded = engine.SessionStore(s.session_key)
    assert await loaded.aget("a") == 1
    assert await loaded.aexists(s.session_key)


async def test_async_create_and_must_create_conflict(engine):
    s = engine.SessionStore()
    await s.acreate()
    twin = engine.SessionStore(s.session_key)
    with pytest.raises(CreateError):
        await twin.asave(must_create=True)


@needs_django5_async
async def test_async_update_after_delete_raises_update_error(engine):
    s = engine.SessionStore()
    await s.aset("a", 1)
    await s.asave()
    other = engine.SessionStore(s.session_key)
    await other.aget("a")
    await s.adelete()
    await other.aset("b", 2)
    with pytest.raises(UpdateError):
        await other.asave()


@needs_django5_async
async def test_async_flush_and_cycle_key(engine):
    s = engine.SessionStore()
    await s.aset("a", 1)
    await s.asave()
    old = s.session_key
    await s.acycle_key()
    assert s.session_key != old
    assert not await s.aexists(old)
    await s.aflush()
    assert s.session_key is None


async def test_async_unknown_key_loads_empty(engine):
    s = engine.SessionStore("b" * 32)
    assert await s.aload() == {}
    assert s.session_key is None


@needs_django5_async
async def test_async_expiry(engine, engine_clock):
    s = engine.SessionStore()
    await s.aset_expiry(10)
    await s.asave()
    engine_clock.advance(11)
    assert not await s.aexists(s.session_key)
    assert await engine.SessionStore.aclear_expired() is None
