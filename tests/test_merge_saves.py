"""Concurrent requests lose no update (issue 24), on the memory engine: two stores load one
session, both change it, both save; the later save is merged onto the earlier one. The merge
itself is ``django_memsession/merge.py``, shared with the Redis engine."""

from __future__ import annotations

import asyncio
import pickle
import sys
import threading
from typing import Any

import pytest
from django.contrib.sessions.backends.base import UpdateError
from django.test import override_settings

from django_memsession import SessionStore
from django_memsession.merge import merge
from django_memsession.runtime import get_store, stats
from django_memsession.serializers import get_codec
from django_memsession.signals import session_conflict


class PickleSerializer:
    """Django's former PickleSerializer (removed in Django 5.0), as sites still write it."""

    def dumps(self, obj: dict[str, Any]) -> bytes:
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> dict[str, Any]:
        return pickle.loads(data)


SERIALIZERS = [
    "django.core.signing.JSONSerializer",
    f"{__name__}.PickleSerializer",
    "test_serializers.ReversingSerializer",
]


@pytest.fixture
def conflicts():
    """The ``session_conflict`` signals sent during the test: (sender, kwargs)."""
    sent: list[dict[str, Any]] = []

    def receive(sender: type, **kwargs: Any) -> None:
        sent.append({"sender": sender, **kwargs})

    session_conflict.connect(receive)
    yield sent
    session_conflict.disconnect(receive)


def saved_session(**values: Any) -> str:
    session = SessionStore()
    session.update(values)
    session.save()
    return session.session_key


def loaded(key: str) -> SessionStore:
    session = SessionStore(key)
    session.keys()  # the first access of a request loads it
    return session


def stored(key: str) -> dict[str, Any]:
    return SessionStore(key).load()


# -- two requests, one session ----------------------------------------------------------------


def test_different_keys_set_by_two_requests_are_both_kept():
    key = saved_session(a=0)
    first, second = loaded(key), loaded(key)
    first["cart"] = [1]
    first.save()
    second["messages"] = ["hello"]
    second.save()
    assert stored(key) == {"a": 0, "cart": [1], "messages": ["hello"]}


def test_a_save_without_conflict_is_not_counted_as_merged():
    key = saved_session(a=0)
    session = loaded(key)
    session["a"] = 1
    session.save()
    assert (stats()["merged"], stats()["conflicts"]) == (0, 0)


def test_a_merged_save_is_counted():
    key = saved_session(a=0)
    first, second = loaded(key), loaded(key)
    first["b"] = 1
    first.save()
    second["c"] = 1
    second.save()
    assert (stats()["merged"], stats()["conflicts"]) == (1, 0)


def test_the_same_key_set_by_both_keeps_the_later_value(conflicts):
    key = saved_session(a=0)
    first, second = loaded(key), loaded(key)
    first["a"] = 1
    first.save()
    second["a"] = 2
    second.save()
    assert stored(key) == {"a": 2}


def test_the_same_key_set_by_both_sends_the_conflict_signal_with_key_names_only(conflicts):
    key = saved_session(a=0, b=0, _auth_user_id="7")
    first, second = loaded(key), loaded(key)
    first["a"], first["b"] = "first", "first"
    first.save()
    second["b"], second["a"] = "second", "second"
    second.save()
    assert conflicts == [{"sender": SessionStore, "signal": session_conflict, "user": "7",
                          "keys": ("a", "b")}]  # fmt: skip
    assert key not in repr(conflicts)
    assert stats()["conflicts"] == 1


def test_the_same_value_set_by_both_is_no_conflict(conflicts):
    key = saved_session(a=0)
    first, second = loaded(key), loaded(key)
    first["a"] = 1
    first.save()
    second["a"] = 1
    second.save()
    assert (stored(key), conflicts) == ({"a": 1}, [])


def test_an_anonymous_conflict_names_no_user(conflicts):
    key = saved_session(a=0)
    first, second = loaded(key), loaded(key)
    first["a"] = 1
    first.save()
    second["a"] = 2
    second.save()
    assert conflicts[0]["user"] is None


def test_a_key_deleted_by_one_and_another_set_by_the_other_both_apply():
    key = saved_session(a=0, b=0)
    first, second = loaded(key), loaded(key)
    del first["a"]
    first.save()
    second["b"] = 1
    second.save()
    assert stored(key) == {"b": 1}


def test_a_key_deleted_by_the_later_save_is_deleted():
    key = saved_session(a=0, b=0)
    first, second = loaded(key), loaded(key)
    first["b"] = 1
    first.save()
    del second["a"]
    second.save()
    assert stored(key) == {"b": 1}


def test_a_key_set_by_one_and_deleted_by_the_later_is_deleted_as_a_conflict(conflicts):
    key = saved_session(a=0)
    first, second = loaded(key), loaded(key)
    first["a"] = 1
    first.save()
    del second["a"]
    second.save()
    assert (stored(key), conflicts[0]["keys"]) == ({}, ("a",))


def test_a_nested_value_mutated_in_place_is_applied():
    key = saved_session(cart=[1], messages=[])
    first, second = loaded(key), loaded(key)
    first["messages"].append("saved")
    first.modified = True
    first.save()
    second["cart"].append(2)
    second.modified = True
    second.save()
    assert stored(key) == {"cart": [1, 2], "messages": ["saved"]}


def test_a_request_that_changed_nothing_writes_no_stale_data():
    # SESSION_SAVE_EVERY_REQUEST: the idle request saves its unchanged copy.
    key = saved_session(cart=[1])
    busy, idle = loaded(key), loaded(key)
    busy["cart"] = [1, 2]
    busy.save()
    idle.save()
    assert stored(key) == {"cart": [1, 2]}


def test_a_request_that_changed_nothing_refreshes_the_expiry(global_clock):
    key = saved_session(cart=[1])
    busy, idle = loaded(key), loaded(key)
    busy["cart"] = [2]
    busy.save()
    global_clock.advance(1000)
    idle.save()
    global_clock.advance(idle.get_session_cookie_age() - 500)
    assert stored(key) == {"cart": [2]}


def test_set_expiry_is_merged_like_any_key():
    key = saved_session(a=0)
    first, second = loaded(key), loaded(key)
    first.set_expiry(60)
    first.save()
    second["b"] = 1
    second.save()
    merged = SessionStore(key)
    assert (merged["b"], merged.get_expiry_age()) == (1, 60)


def test_an_expiry_set_by_the_other_request_decides_when_the_merged_session_ends(global_clock):
    key = saved_session(a=0)
    first, second = loaded(key), loaded(key)
    first.set_expiry(60)
    first.save()
    second["b"] = 1
    second.save()
    global_clock.advance(61)
    assert not SessionStore().exists(key)


def test_a_flush_in_between_wins_over_a_late_save():
    key = saved_session(_auth_user_id="7", a=0)
    logout, late = loaded(key), loaded(key)
    logout.flush()
    late["b"] = 1
    with pytest.raises(UpdateError):
        late.save()
    assert not SessionStore().exists(key)


def test_a_cycle_key_in_between_leaves_the_old_key_unsaved():
    key = saved_session(a=0)
    cycling, late = loaded(key), loaded(key)
    cycling.cycle_key()
    late["b"] = 1
    with pytest.raises(UpdateError):
        late.save()
    assert (SessionStore().exists(key), stored(cycling.session_key)) == (False, {"a": 0})


def test_a_second_save_in_the_same_request_merges_from_the_first():
    key = saved_session(a=0)
    first, second = loaded(key), loaded(key)
    first["b"] = 1
    first.save()
    second["c"] = 1
    second.save()
    second["c"] = 2
    second.save()
    assert stored(key) == {"a": 0, "b": 1, "c": 2}


def test_after_a_merged_save_the_request_sees_the_merged_session():
    key = saved_session(a=0)
    first, second = loaded(key), loaded(key)
    first["b"] = 1
    first.save()
    second["c"] = 1
    second.save()
    assert dict(second.items()) == {"a": 0, "b": 1, "c": 1}


def test_a_save_after_cycle_key_in_the_same_request_needs_no_merge():
    key = saved_session(a=0)
    session = loaded(key)
    session["a"] = 1
    session.cycle_key()
    session["a"] = 0
    session.save()
    assert (stored(session.session_key), stats()["merged"]) == ({"a": 0}, 0)


def test_a_logged_in_session_stays_in_the_user_index_after_a_merge():
    key = saved_session(_auth_user_id="7", a=0)
    first, second = loaded(key), loaded(key)
    first["b"] = 1
    first.save()
    second["c"] = 1
    second.save()
    assert [session.key for session in get_store().user_sessions("7")] == [key]


@override_settings(MEMSESSION_MERGE_SAVES=False)
def test_with_merging_off_the_later_save_replaces_the_session(conflicts):
    key = saved_session(a=0)
    first, second = loaded(key), loaded(key)
    first["b"] = 1
    first.save()
    second["c"] = 1
    second.save()
    assert (stored(key), conflicts, stats()["merged"]) == ({"a": 0, "c": 1}, [], 0)


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_every_serializer_merges_different_keys(serializer):
    with override_settings(SESSION_SERIALIZER=serializer):
        key = saved_session(a=0, cart=[1])
        first, second = loaded(key), loaded(key)
        first["cart"].append(2)
        first.modified = True
        first.save()
        second["b"] = {"x": 1}
        second.save()
        assert (first.load()["cart"], first.load()["b"]) == ([1, 2], {"x": 1})


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_every_serializer_reports_the_same_key_changed_by_both(serializer, conflicts):
    with override_settings(SESSION_SERIALIZER=serializer):
        key = saved_session(a=0)
        first, second = loaded(key), loaded(key)
        first["a"] = 1
        first.save()
        second["a"] = 2
        second.save()
        assert conflicts[0]["keys"] == ("a",)


def test_async_saves_are_merged_too():
    key = saved_session(a=0)

    async def both() -> None:
        first, second = SessionStore(key), SessionStore(key)
        # Both loaded before either saves (as the first access of a request loads).
        first._session_cache = await first.aload()
        second._session_cache = await second.aload()
        first["b"] = 1
        await first.asave()
        second["c"] = 1
        await second.asave()

    asyncio.run(both())
    assert stored(key) == {"a": 0, "b": 1, "c": 1}


# -- the merge itself -------------------------------------------------------------------------


def test_the_merge_keeps_theirs_for_keys_ours_did_not_touch():
    codec = get_codec("django.core.signing.JSONSerializer")
    merged = merge(b'{"a":0,"b":0}', b'{"a":1,"b":0}', {"a": 0, "b": 2}, codec)
    assert (merged.data, merged.conflicts) == ({"a": 1, "b": 2}, ())


def test_the_merge_reads_an_unreadable_base_as_an_empty_session():
    codec = get_codec("django.core.signing.JSONSerializer")
    merged = merge(b"\x80not json", b'{"a":1,"b":0}', {"b": 2}, codec)
    assert merged.data == {"a": 1, "b": 2}


# -- the last try, under the lock -------------------------------------------------------------


def test_a_save_that_keeps_conflicting_is_merged_under_the_lock(monkeypatch):
    key = saved_session(a=0)
    store = get_store()
    session = loaded(key)
    session["mine"] = 1
    real_put = store.put
    others = iter(range(1, 100))
    rebased = []

    def put_after_another_save(*args: Any, merging: Any = None, **kwargs: Any):
        # Another request saves just before each of this one's tries, the last one too.
        other = loaded(key)
        other[f"other{next(others)}"] = 1
        monkeypatch.setattr(store, "put", real_put)
        other.save()
        monkeypatch.setattr(store, "put", put_after_another_save)
        if merging is not None and merging.rebase is not None:
            rebase = merging.rebase
            merging = merging._replace(rebase=lambda current: rebased.append(1) or rebase(current))
        return real_put(*args, merging=merging, **kwargs)

    monkeypatch.setattr(store, "put", put_after_another_save)
    session.save()
    monkeypatch.undo()
    tries = next(others) - 1
    assert rebased == [1]
    assert stored(key) == {"a": 0, "mine": 1, **{f"other{n}": 1 for n in range(1, tries + 1)}}


# -- threads ----------------------------------------------------------------------------------


@pytest.fixture
def fine_switching():
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def test_eight_threads_incrementing_their_own_keys_lose_no_increment(fine_switching):
    key = saved_session()
    threads, rounds = 8, 500
    failures: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for _ in range(rounds):
                session = SessionStore(key)
                session[name] = session.get(name, 0) + 1
                session.save()
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    assert stored(key) == {f"t{n}": rounds for n in range(threads)}
    assert stats()["merged"] > 0  # the threads did interleave


@override_settings(MEMSESSION_MERGE_SAVES=False)
def test_eight_threads_without_merging_lose_increments(fine_switching):
    # The test above is not vacuous: the same threads, last writer wins.
    key = saved_session()

    def work(name: str) -> None:
        for _ in range(500):
            session = SessionStore(key)
            session[name] = session.get(name, 0) + 1
            session.save()

    workers = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sum(stored(key).values()) < 8 * 500
