"""The Redis user index under load and around it: 8 threads, logins in two processes against
the per-user limit, ``prunesessions`` and ``clearsessions``, imports, and the settings check."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import threading
from typing import Any

import pytest
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.core.management import call_command
from engines import cluster_as_server
from processes import TESTS_DIR, run_command
from redis_index import gone_long_ago
from redis_server import RedisServer

import django_memsession
from django_memsession.redis import SessionStore
from django_memsession.redis.checks import check_redis_settings
from django_memsession.redis.index import ImportedSession
from django_memsession.redis.store import get_store, unpack
from django_memsession.serializers import current_codec

pytestmark = pytest.mark.usefixtures("redis_url")

AUTH = "_auth_user_id"


@pytest.fixture(params=["server", pytest.param("cluster", marks=pytest.mark.redis)])
def redis_server(request: pytest.FixtureRequest, redis_server: RedisServer) -> Any:
    """Each test on one server, and again on the six-node cluster (its keys and its users'
    hashes in different slots, on different nodes)."""
    if request.param == "server":
        return redis_server
    return cluster_as_server(request)


def index_problems(server: RedisServer) -> list[str]:
    """Every disagreement between the index and the sessions in Redis (empty: none): each
    member's session is live and logged in as that user; each live logged-in session is a
    member of its user's hash."""
    store = get_store()
    client = server.client()
    problems = []
    try:
        now = store.clock()
        users_prefix = store.prefix + b"u:"
        indexed: set[tuple[str, str]] = set()
        for name in client.scan_iter(match=store.index.users_pattern()):
            user = name[len(users_prefix) :].decode()
            for field in client.hkeys(name):
                indexed.add((user, field.decode()))
                loaded = unpack(client.get(store.prefix + field), now)
                if loaded is None:
                    problems.append(f"an indexed session of user {user} is gone")
                elif str(current_codec().loads(loaded.payload).get(AUTH)) != user:
                    problems.append(f"a session indexed under user {user} is not theirs")
        for name in client.scan_iter(match=store.prefix + b"*"):
            if name.startswith(users_prefix):
                continue
            loaded = unpack(client.get(name), now)
            if loaded is None:
                continue
            user = current_codec().loads(loaded.payload).get(AUTH)
            key = name[len(store.prefix) :].decode()
            if user is not None and (str(user), key) not in indexed:
                problems.append(f"a logged-in session of user {user} is not indexed")
    finally:
        client.close()
    return problems


def logged_in_session(user: str) -> SessionStore:
    session = SessionStore()
    session[AUTH] = user
    session.save()
    return session


# -- threads --------------------------------------------------------------------------------------


@pytest.mark.heavy
def test_the_index_stays_right_under_8_threads(redis_server):
    errors: list[BaseException] = []
    users = [str(n) for n in range(1, 6)]

    def work(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[SessionStore] = []
        try:
            for _ in range(150):
                action = rng.random()
                if action < 0.3 or not mine:
                    mine.append(logged_in_session(rng.choice(users)))
                elif action < 0.5:
                    session = SessionStore(rng.choice(mine).session_key)
                    session["n"] = rng.random()
                    # UpdateError: ended meanwhile by another thread (end_user_sessions).
                    with contextlib.suppress(UpdateError):
                        session.save()
                elif action < 0.6:
                    mine.pop(rng.randrange(len(mine))).flush()  # a logout
                elif action < 0.7:
                    session = SessionStore(rng.choice(mine).session_key)
                    if session.get(AUTH) is not None:
                        session.cycle_key()
                elif action < 0.75:
                    django_memsession.end_user_sessions(rng.choice(users))
                elif action < 0.85:
                    anonymous = SessionStore()
                    anonymous["cart"] = 1
                    anonymous.save()
                else:
                    django_memsession.user_sessions(rng.choice(users))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    get_store().index.prune_index()  # the members of sessions ended without their user known
    assert index_problems(redis_server) == []


# -- the per-user limit across processes ----------------------------------------------------------

LOGINS = """
import os, sys
import django
django.setup()
from django.conf import settings
settings.MEMSESSION_MAX_SESSIONS_PER_USER = 3
from django_memsession.redis import SessionStore
sys.stdin.readline()  # both processes start together
for _ in range(int(sys.argv[1])):
    session = SessionStore()
    session["_auth_user_id"] = "7"
    session.save()
print("done", flush=True)
"""


@pytest.mark.heavy
def test_the_per_user_limit_holds_against_concurrent_logins_in_two_processes(redis_server):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testsite.settings",
        "PYTHONPATH": str(TESTS_DIR),
        "MEMSESSION_TEST_REDIS_URL": redis_server.url,
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-c", LOGINS, "200"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for child in children:  # both are running: release them together
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = [child.communicate(timeout=120)[0] for child in children]
    assert outputs == ["done\n", "done\n"]
    store = get_store()
    client = redis_server.client()
    try:
        live = [
            key
            for key in client.scan_iter(match=store.prefix + b"*")
            if not key.startswith(store.prefix + b"u:")
            and unpack(client.get(key), store.clock()) is not None
        ]
    finally:
        client.close()
    assert len(live) == 3
    assert len(django_memsession.user_sessions("7")) == 3
    assert index_problems(redis_server) == []


# -- prunesessions and clearsessions --------------------------------------------------------------


def end_without_a_logout(server: RedisServer, session: SessionStore) -> None:
    """What an eviction or a delete by another object does, long after the member was written:
    the session goes, the member stays until it is cleaned."""
    client = server.client()
    try:
        gone_long_ago(client, session.session_key, session[AUTH])
    finally:
        client.close()


def test_a_member_whose_session_is_missing_is_kept_unlisted_while_it_may_be_a_login_in_flight(
    redis_server,
):
    """A login indexes its session before it writes the record: until PENDING_SECONDS after
    the member was written, a missing record may be that login's next step, not a session gone."""
    session = logged_in_session("1")
    client = redis_server.client()
    try:
        client.delete(get_store().key(session.session_key))
        assert get_store().user_sessions("1") == []
        assert get_store().index.prune_index().removed == 0
        assert client.hexists(get_store().index.users_key("1"), session.session_key)
    finally:
        client.close()


def test_prune_index_removes_members_of_gone_sessions_and_reports_them(redis_server):
    kept = logged_in_session("1")
    for user in ("1", "2"):
        end_without_a_logout(redis_server, logged_in_session(user))
    result = get_store().index.prune_index()
    assert (result.users, result.removed, result.sessions) == (2, 2, 1)
    assert [r.id for r in django_memsession.user_sessions("1")] != []
    assert index_problems(redis_server) == []
    assert kept.exists(kept.session_key)


def test_a_dry_run_removes_nothing(redis_server):
    end_without_a_logout(redis_server, logged_in_session("1"))
    first = get_store().index.prune_index(dry_run=True)
    second = get_store().index.prune_index(dry_run=True)
    assert (first.removed, second.removed) == (1, 1)


def test_prune_index_scans_in_bounded_batches(redis_server):
    """Every ``SCAN`` asks for ``COUNT 10``, and there are several. How many keys each returns is
    the server's choice (``COUNT`` is a hint: Valkey's hash table visits more keys per call than
    Redis's), so the server's slow log (every command, with its arguments) is what is read."""
    for user in range(60):
        end_without_a_logout(redis_server, logged_in_session(str(user)))
    admin = redis_server.client()
    admin.config_set("slowlog-max-len", 10_000)
    admin.config_set("slowlog-log-slower-than", 0)
    admin.slowlog_reset()
    try:
        result = get_store().index.prune_index(batch=10)
        logged = admin.slowlog_get(10_000)
    finally:
        admin.config_set("slowlog-log-slower-than", 10_000)
        admin.config_set("slowlog-max-len", 128)
        admin.close()
    assert result.removed == 60
    scans = [entry["command"].split() for entry in logged if entry["command"].startswith(b"SCAN ")]
    assert len(scans) >= 2  # 60 hashes: never in one call
    assert all(scan[-2:] == [b"COUNT", b"10"] for scan in scans), scans


def test_prune_index_keeps_other_prefixes_alone(redis_server, settings):
    from django_memsession.redis import store

    logged_in_session("1")
    settings.MEMSESSION_REDIS_PREFIX = "other[app]:"
    store.reset()
    end_without_a_logout(redis_server, logged_in_session("1"))
    assert get_store().index.prune_index().users == 1


def test_prunesessions_on_redis_prints_what_it_removed(redis_server, control_dir):
    logged_in_session("1")
    end_without_a_logout(redis_server, logged_in_session("1"))
    result = run_command(
        "prunesessions",
        control_dir=control_dir,
        env={"MEMSESSION_TEST_REDIS_URL": redis_server.url},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "redis: removed 1 ended or expired session(s) from the index of 1 user(s); "
        "1 logged-in session(s) indexed"
    )


def test_prunesessions_on_redis_json_and_dry_run(redis_server, control_dir):
    end_without_a_logout(redis_server, logged_in_session("1"))
    result = run_command(
        "prunesessions",
        "--json",
        "--dry-run",
        control_dir=control_dir,
        env={"MEMSESSION_TEST_REDIS_URL": redis_server.url},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "engine": "redis",
        "dry_run": True,
        "users": 1,
        "removed": 1,
        "sessions": 0,
        "errors": [],
    }


def test_prunesessions_exits_1_when_redis_cannot_be_reached(control_dir):
    result = run_command(
        "prunesessions",
        control_dir=control_dir,
        env={"MEMSESSION_TEST_REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.returncode == 1
    assert "Redis could not be reached" in result.stderr


def test_clearsessions_cleans_the_index(redis_server):
    end_without_a_logout(redis_server, logged_in_session("1"))
    call_command("clearsessions")
    assert get_store().index.prune_index(dry_run=True).removed == 0


async def test_aclear_expired_cleans_the_index(redis_server):
    end_without_a_logout(redis_server, logged_in_session("1"))
    await SessionStore.aclear_expired()
    assert get_store().index.prune_index(dry_run=True).removed == 0


async def test_the_async_reads_and_endings_of_the_store_keep_the_index(redis_server):
    kept, ended = logged_in_session("5"), logged_in_session("5")
    store = get_store()
    assert {row.key for row in await store.index.auser_sessions("5")} == {
        kept.session_key,
        ended.session_key,
    }
    assert await store.index.aend_sessions("5", [ended.session_key]) == 1
    assert [row.key for row in await store.index.auser_sessions("5")] == [kept.session_key]
    assert not SessionStore().exists(ended.session_key)


def test_ending_a_key_of_another_user_ends_nothing(redis_server):
    mine, theirs = logged_in_session("5"), logged_in_session("6")
    assert get_store().index.end_sessions("5", [theirs.session_key]) == 0
    assert SessionStore().exists(theirs.session_key)
    assert mine.exists(mine.session_key)


# -- imports --------------------------------------------------------------------------------------


def imported(key: str, user: str | None = None, **facts) -> ImportedSession:
    now = get_store().clock()
    payload = current_codec().dumps({AUTH: user} if user else {"cart": 1})
    return ImportedSession(key, payload, now + 3600, 3600 * 1000, user=user, **facts)


def test_import_sessions_writes_them_and_indexes_the_logged_in_ones_with_their_facts(
    redis_server,
):
    now = int(get_store().clock())
    written = get_store().import_sessions(
        [
            imported("a" * 32),
            imported("b" * 32, "5", created=now - 100, last_used=now - 10, client="1.2.3.4\nUA"),
        ]
    )
    assert written == 2
    (record,) = django_memsession.user_sessions("5")
    assert (record.created, record.last_used) == (now - 100, now - 10)
    assert (record.ip, record.user_agent) == ("1.2.3.4", "UA")
    assert SessionStore("a" * 32).load() == {"cart": 1}
    assert index_problems(redis_server) == []


def test_import_sessions_never_overwrites_a_session_or_a_tombstone(redis_server):
    live = logged_in_session("5")
    live["mine"] = True
    live.save()
    gone = logged_in_session("5")
    gone_key = gone.session_key
    gone.flush()
    before = get_store().index.user_sessions("5")
    written = get_store().import_sessions(
        [imported(live.session_key, "5"), imported(gone_key, "5")]
    )
    assert written == 0
    assert SessionStore(live.session_key).load()["mine"] is True
    assert get_store().index.user_sessions("5") == before
    assert not SessionStore().exists(gone_key)


def test_a_create_of_a_taken_key_is_refused_for_a_logged_in_session():
    first = logged_in_session("5")
    again = SessionStore(first.session_key)
    again[AUTH] = "5"
    with pytest.raises(CreateError):
        again.save(must_create=True)


# -- settings -------------------------------------------------------------------------------------


def test_max_sessions_on_redis_is_a_warning_with_a_hint(settings):
    settings.MEMSESSION_MAX_SESSIONS = 1000
    (message,) = check_redis_settings()
    assert message.id == "memsession.W105"
    assert "maxmemory" in message.hint


def test_a_bad_per_user_limit_stops_the_store_from_being_built(settings):
    from django.core.exceptions import ImproperlyConfigured

    from django_memsession.redis import store

    settings.MEMSESSION_MAX_SESSIONS_PER_USER = "3"
    store.reset()
    with pytest.raises(ImproperlyConfigured, match=r"memsession\.E014"):
        get_store()


def test_the_index_names_are_still_importable_from_redis_users():
    from django_memsession.redis import users

    assert users.ImportedSession is ImportedSession
