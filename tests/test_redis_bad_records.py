"""Values under a session key that are not records the Redis engine wrote: a header that is not
digits, data that is not a session (not JSON, or JSON but not an object), a key of another type.

Each is written with a plain client on the test server, as ``redis-cli`` would. A load finds no
session, logs it once (never with the key) and deletes it; no save fails on one; the near cache
never keeps one. Every format an earlier release wrote still loads. The export and the mirror
write over such a value as over nothing, and an export leaves out a memory value that is not
whole.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator

import django
import pytest
from django.conf import settings
from redis_server import RedisServer

from django_memsession.memory import export
from django_memsession.memory.index import FACTS
from django_memsession.memory.lru import AUTHENTICATED, RETURNING
from django_memsession.memory.store import HEADER
from django_memsession.redis import SessionStore
from django_memsession.redis.importer import Kind, Outcome, Write, importer_for
from django_memsession.redis.store import RedisStore, UpdateResult, get_store

pytestmark = pytest.mark.usefixtures("redis_url")

# A well-formed session key (a cookie the visitor sends), distinctive enough to find in a log.
KEY = "badrecordsessionkey0123456789xyz"
DAY_MS = 24 * 3600 * 1000

needs_django5_async = pytest.mark.skipif(
    django.VERSION < (5, 0), reason="SessionBase's async API arrived in Django 5.0"
)


def a_string(value: bytes) -> Callable[..., object]:
    return lambda client, key: client.set(key, value)


# What redis-cli could leave under a session key; none has a TTL. Values in no format of ours,
# which the store (and its scripts) tell from a record by the header or the type:
FOREIGN = {
    "header-not-digits": a_string(b"Sxxxxxxxxxxxxxx{}"),
    "probation-header-not-digits": a_string(b"P0000000000000x0{}"),
    "header-with-a-sign": a_string(b"S+99999999999999{}"),  # int() would read it
    "header-cut-short": a_string(b"S1234"),
    "an-empty-string": a_string(b""),
    "no-kind-of-ours": a_string(b"hello, world"),
    "a-tombstone-with-more": a_string(b"Tx"),
    "a-list": lambda client, key: client.rpush(key, "a", "b"),
    "a-hash": lambda client, key: client.hset(key, "field", "value"),
    "a-set": lambda client, key: client.sadd(key, "member"),
    "a-sorted-set": lambda client, key: client.zadd(key, {"member": 1}),
}
# And records whose data is not a session, which only the engine can tell (by reading it):
UNREADABLE = {
    "data-a-json-list": a_string(b"S009999999999999[1,2,3]"),
    "data-a-json-string": a_string(b'S009999999999999"abc"'),
    "data-not-json": a_string(b"S009999999999999abc"),
    "no-data": a_string(b"S009999999999999"),
    "probation-data-a-json-list": a_string(b"P009999999999999[1]"),
}
BAD = {**FOREIGN, **UNREADABLE}
bad_values = pytest.mark.parametrize("bad", BAD)
foreign_values = pytest.mark.parametrize("bad", FOREIGN)


def put(server: RedisServer, bad: str, session_key: str = KEY) -> None:
    """Write the bad value under the session's key (replacing whatever is there)."""
    client = server.client()
    try:
        client.delete(get_store().key(session_key))
        BAD[bad](client, get_store().key(session_key))
    finally:
        client.close()


def held(server: RedisServer, session_key: str = KEY) -> tuple[str, int]:
    """The key's type (``none``: no key) and its TTL in ms (-2: no key, -1: none)."""
    client = server.client()
    try:
        key = get_store().key(session_key)
        return client.type(key).decode(), client.pttl(key)
    finally:
        client.close()


@pytest.fixture
def warnings(caplog) -> Iterator[pytest.LogCaptureFixture]:
    """Captures the package's warnings during the test (read them with :func:`ours`)."""
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        yield caplog


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("django_memsession")]


# -- a load ---------------------------------------------------------------------------------------


@bad_values
def test_a_bad_value_loads_as_no_session(bad, redis_server):
    put(redis_server, bad)
    session = SessionStore(KEY)
    assert session.load() == {}
    assert session.session_key is None


@bad_values
async def test_a_bad_value_loads_as_no_session_async(bad, redis_server):
    put(redis_server, bad)
    session = SessionStore(KEY)
    assert await session.aload() == {}
    assert session.session_key is None


@bad_values
def test_the_load_that_finds_a_bad_value_deletes_it(bad, redis_server):
    put(redis_server, bad)
    SessionStore(KEY).load()
    assert held(redis_server) == ("none", -2)


@bad_values
async def test_the_async_load_that_finds_a_bad_value_deletes_it(bad, redis_server):
    put(redis_server, bad)
    await SessionStore(KEY).aload()
    assert held(redis_server) == ("none", -2)


@bad_values
def test_a_bad_value_is_logged_once_and_never_with_its_key(bad, redis_server, warnings):
    put(redis_server, bad)
    for _ in range(3):
        SessionStore(KEY).load()
    [logged] = ours(warnings)
    assert KEY not in logged.getMessage()
    assert KEY not in repr(logged.args)


@foreign_values
def test_exists_is_false_for_a_value_not_ours(bad, redis_server):
    put(redis_server, bad)
    assert not SessionStore().exists(KEY)


@foreign_values
async def test_exists_is_false_for_a_value_not_ours_async(bad, redis_server):
    put(redis_server, bad)
    assert not await SessionStore().aexists(KEY)


def test_a_bad_value_written_again_after_its_load_is_left_to_that_writer(redis_server):
    """The delete is of the value the load found: a write since (by anyone) is left alone."""
    put(redis_server, "data-a-json-list")
    loaded = get_store().load(KEY)
    assert loaded is not None  # a record's header: the engine is the one to find it unreadable
    client = redis_server.client()
    newer = b"S%015d{}" % int((time.time() + 60) * 1000)
    client.set(get_store().key(KEY), newer, px=60_000)
    get_store().discard(KEY, loaded)
    assert client.get(get_store().key(KEY)) == newer
    client.close()


def test_a_logout_after_the_load_of_an_unreadable_record_stays_a_logout(redis_server):
    put(redis_server, "no-data")
    loaded = get_store().load(KEY)
    assert loaded is not None
    get_store().delete(KEY)  # another request logs out meanwhile
    get_store().discard(KEY, loaded)
    assert held(redis_server)[0] == "string"
    assert get_store().update(KEY, b"{}", time.time() + 60, 60_000, 60_000, True) is (
        UpdateResult.DELETED
    )


# -- a save ---------------------------------------------------------------------------------------


@bad_values
def test_a_save_after_loading_a_bad_value_stores_a_fresh_session(bad, redis_server):
    put(redis_server, bad)
    session = SessionStore(KEY)
    session["cart"] = ["tea"]
    session.save()
    assert session.session_key not in (None, KEY)
    assert SessionStore(session.session_key)["cart"] == ["tea"]


@needs_django5_async
@bad_values
async def test_an_async_save_after_loading_a_bad_value_stores_a_fresh_session(bad, redis_server):
    put(redis_server, bad)
    session = SessionStore(KEY)
    await session.aset("cart", ["tea"])
    await session.asave()
    assert session.session_key not in (None, KEY)
    assert await SessionStore(session.session_key).aget("cart") == ["tea"]


def saved(**data) -> str:
    session = SessionStore()
    session.update(data)
    session.save()
    return session.session_key


@bad_values
def test_a_save_over_a_value_gone_bad_since_the_load_stores_the_session(bad, redis_server):
    session_key = saved(n=1)
    session = SessionStore(session_key)
    assert session["n"] == 1
    put(redis_server, bad, session_key)
    session["n"] = 2
    session.save()
    assert SessionStore(session_key)["n"] == 2


@bad_values
def test_a_login_over_a_value_gone_bad_since_the_load_stores_the_session(bad, redis_server):
    """The user index's save script (a logged-in save) treats it as the update script does."""
    session_key = saved(n=1)
    session = SessionStore(session_key)
    assert session["n"] == 1
    put(redis_server, bad, session_key)
    session["_auth_user_id"] = "7"
    session.save()
    assert SessionStore(session_key)["_auth_user_id"] == "7"
    assert [s.key for s in get_store().index.user_sessions("7")] == [session_key]


@needs_django5_async
@bad_values
async def test_an_async_save_over_a_value_gone_bad_since_the_load_stores_the_session(
    bad, redis_server
):
    session_key = saved(n=1)
    session = SessionStore(session_key)
    assert await session.aget("n") == 1
    put(redis_server, bad, session_key)
    await session.aset("n", 2)
    await session.asave()
    assert await SessionStore(session_key).aget("n") == 2


@foreign_values
def test_an_update_that_may_not_store_the_session_again_deletes_a_value_not_ours(bad, redis_server):
    put(redis_server, bad)
    expires_at = time.time() + 60
    result = get_store().update(KEY, b"{}", expires_at, 60_000, 60_000, may_restore=False)
    assert result is UpdateResult.GONE
    assert held(redis_server) == ("none", -2)


@foreign_values
def test_a_promotion_of_a_value_gone_bad_changes_nothing(bad, redis_server):
    put(redis_server, bad)
    before = held(redis_server)
    store = get_store()
    assert store._evalsha(store._promote, store.key(KEY), DAY_MS) == 0
    assert held(redis_server) == before


@foreign_values
def test_a_create_on_a_key_holding_a_value_not_ours_is_refused_as_on_a_taken_key(bad, redis_server):
    """Django then tries another key."""
    put(redis_server, bad)
    assert not get_store().create(KEY, b"{}", time.time() + 60, 60_000, settled=True)


# -- the user index -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["header-not-digits", "a-list"])
def test_a_users_session_gone_bad_is_not_listed_and_leaves_the_index(bad, redis_server):
    session_key = saved(_auth_user_id="7")
    put(redis_server, bad, session_key)
    assert get_store().index.user_sessions("7") == []
    client = redis_server.client()
    assert client.hlen(get_store().index.users_key("7")) == 0
    client.close()


# What redis-cli could leave at a user's hash of the index: a key of another type.
FOREIGN_HASHES = ["a-string", "a-list", "a-set"]


def spoil_users_hash(server: RedisServer, bad: str, user: str = "7") -> None:
    client = server.client()
    users = get_store().index.users_key(user)
    try:
        client.delete(users)
        {
            "a-string": lambda: client.set(users, b"junk"),
            "a-list": lambda: client.rpush(users, "a"),
            "a-set": lambda: client.sadd(users, "a"),
        }[bad]()
    finally:
        client.close()


@pytest.mark.parametrize("bad", FOREIGN_HASHES)
def test_a_login_over_a_users_hash_of_another_type_is_stored_and_indexed(bad, redis_server):
    spoil_users_hash(redis_server, bad)
    session_key = saved(_auth_user_id="7")
    assert SessionStore(session_key)["_auth_user_id"] == "7"
    assert [s.key for s in get_store().index.user_sessions("7")] == [session_key]


@pytest.mark.parametrize("bad", FOREIGN_HASHES)
def test_listing_and_pruning_over_a_users_hash_of_another_type_find_nothing(bad, redis_server):
    spoil_users_hash(redis_server, bad)
    assert get_store().index.user_sessions("7") == []
    spoil_users_hash(redis_server, bad)
    assert get_store().index.prune_index().sessions == 0
    client = redis_server.client()
    assert client.exists(get_store().index.users_key("7")) == 0  # not ours: deleted
    client.close()


@pytest.mark.parametrize("bad", FOREIGN_HASHES)
def test_a_logout_over_a_users_hash_gone_bad_since_the_login_logs_out(bad, redis_server):
    session_key = saved(_auth_user_id="7")
    session = SessionStore(session_key)
    assert session["_auth_user_id"] == "7"
    spoil_users_hash(redis_server, bad)
    session.flush()
    assert SessionStore(session_key).load() == {}
    client = redis_server.client()
    assert client.get(get_store().key(session_key)) == b"T"  # the tombstone: a logout kept
    assert client.type(get_store().index.users_key("7")) in (b"none", b"hash")
    client.close()


@needs_django5_async
async def test_an_async_logout_over_a_users_hash_gone_bad_since_the_login_logs_out(redis_server):
    session_key = saved(_auth_user_id="7")
    session = SessionStore(session_key)
    assert await session.aget("_auth_user_id") == "7"
    spoil_users_hash(redis_server, "a-list")
    await session.aflush()
    client = redis_server.client()
    assert client.get(get_store().key(session_key)) == b"T"
    assert client.exists(get_store().index.users_key("7")) == 0
    client.close()


@pytest.mark.parametrize("bad", ["header-not-digits", "a-list"])
def test_a_login_under_the_per_user_limit_passes_over_a_session_gone_bad(
    bad, redis_server, settings
):
    settings.MEMSESSION_MAX_SESSIONS_PER_USER = 1
    gone_bad = saved(_auth_user_id="7")
    put(redis_server, bad, gone_bad)
    fresh = saved(_auth_user_id="7")
    assert [s.key for s in get_store().index.user_sessions("7")] == [fresh]


# -- through a request ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["header-not-digits", "data-a-json-list", "a-hash"])
def test_a_request_with_a_bad_values_cookie_gets_a_fresh_session(
    bad, client, redis_site, redis_server
):
    put(redis_server, bad)
    client.cookies[settings.SESSION_COOKIE_NAME] = KEY  # as the visitor's browser sends it
    response = client.get("/session/make/")
    assert response.status_code == 200
    assert response.json()["visits"] == 1
    fresh = response.cookies[settings.SESSION_COOKIE_NAME].value
    assert fresh != KEY
    assert SessionStore(fresh)["visits"] == 1
    assert held(redis_server) == ("none", -2)


# -- the near cache -------------------------------------------------------------------------------


@pytest.fixture
def near_cache(redis_url: str, settings) -> RedisStore:
    settings.MEMSESSION_REDIS_NEAR_CACHE = "1M"
    store = get_store()
    assert store.near is not None and store.near.connect()
    return store


@bad_values
def test_the_near_cache_never_keeps_a_bad_value(bad, near_cache, redis_server):
    put(redis_server, bad)
    assert SessionStore(KEY).load() == {}
    assert not near_cache.near.l1.exists(KEY)  # type: ignore[union-attr]
    assert held(redis_server) == ("none", -2)


@bad_values
async def test_the_near_cache_never_keeps_a_bad_value_loaded_async(bad, near_cache, redis_server):
    put(redis_server, bad)
    assert await SessionStore(KEY).aload() == {}
    assert not near_cache.near.l1.exists(KEY)  # type: ignore[union-attr]
    assert held(redis_server) == ("none", -2)


# -- what earlier releases wrote ------------------------------------------------------------------


@pytest.mark.parametrize("kind", [b"S", b"P"])  # S since the first release, P since probation
def test_every_record_format_an_earlier_release_wrote_still_loads(kind, redis_server, warnings):
    record = kind + b"%015d" % int((time.time() + 600) * 1000) + b'{"cart":["tea"]}'
    client = redis_server.client()
    client.set(get_store().key(KEY), record, px=600_000)
    client.close()
    assert SessionStore(KEY)["cart"] == ["tea"]
    assert ours(warnings) == []


def test_a_tombstone_loads_as_no_session_and_stays_a_logout(redis_server, warnings):
    client = redis_server.client()
    client.set(get_store().key(KEY), b"T", px=60_000)
    client.close()
    assert SessionStore(KEY).load() == {}
    assert held(redis_server)[0] == "string"
    result = get_store().update(KEY, b"{}", time.time() + 60, 60_000, 60_000, may_restore=True)
    assert result is UpdateResult.DELETED
    assert ours(warnings) == []


# -- the export and the mirror into Redis ---------------------------------------------------------


@pytest.fixture
def importer(redis_url):
    made = importer_for(redis_url)
    yield made
    made.close()


@pytest.mark.parametrize("kind", [Kind.EXPORT, Kind.MIRROR])
@foreign_values
def test_an_export_or_a_mirror_writes_over_a_value_not_ours(kind, bad, importer, redis_server):
    put(redis_server, bad)
    write = Write(kind, KEY, b'{"_auth_user_id":"7","v":1}', time.time() + 600)
    assert importer.write([write]) == [Outcome.WRITTEN]
    assert SessionStore(KEY)["v"] == 1


# -- what an export reads from a memory store -----------------------------------------------------


NOW = 1_800_000_000.0


def facts(expires_at: float, user: bytes, client: bytes, payload: bytes, lengths=None) -> bytes:
    user_length, client_length = lengths or (len(user), len(client))
    return FACTS.pack(expires_at, 0, 0, 0, user_length, client_length) + user + client + payload


WHOLE = {
    "anonymous": (RETURNING, HEADER.pack(NOW + 60, 0) + b"{}"),
    "logged-in": (AUTHENTICATED, facts(NOW + 60, b"7", b"", b'{"_auth_user_id":"7"}')),
}
NOT_WHOLE = {
    "cut-short": (RETURNING, HEADER.pack(NOW + 60, 0)[:5]),
    "facts-cut-short": (AUTHENTICATED, facts(NOW + 60, b"", b"", b"")[:10]),
    "lengths-past-the-end": (AUTHENTICATED, facts(NOW + 60, b"7", b"", b"{}", (200, 0))),
    "expiry-not-a-number": (RETURNING, HEADER.pack(math.nan, 0) + b"{}"),
    "expiry-infinite": (RETURNING, HEADER.pack(math.inf, 0) + b"{}"),
}


@pytest.mark.parametrize("name", NOT_WHOLE)
def test_a_memory_value_that_is_not_whole_has_no_expiry_and_no_session(name):
    segment, value = NOT_WHOLE[name]
    assert export.expiry_of(segment, value) is None
    with pytest.raises(ValueError, match="not a whole session value"):
        export.session_of(segment, value)


class Copied:
    """What an export reads of a memory store: its copy of the sessions, and its clock."""

    def __init__(self, records: list[tuple[int, str, bytes]]) -> None:
        self.records = records

    def copy_chunks(self) -> Iterator[list[tuple[int, str, bytes]]]:
        yield self.records

    def clock(self) -> float:
        return NOW


def test_an_export_leaves_out_memory_values_that_are_not_whole_and_logs_no_key(warnings):
    records = [(segment, f"whole{name}", value) for name, (segment, value) in WHOLE.items()]
    records += [(segment, f"broken{n}", value) for n, (segment, value) in NOT_WHOLE.items()]
    run = export.ExportRun("run", Copied(records))  # type: ignore[arg-type]
    assert sorted(session.key for session in run.page(0)) == sorted(
        f"whole{name}" for name in WHOLE
    )
    [logged] = ours(warnings)
    assert "broken" not in logged.getMessage()
