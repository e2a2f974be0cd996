"""The order of the steps of an operation over a session and its user's hash (a Redis Cluster keeps
them in different slots, so no script or transaction holds both; see redis/steps.py).

A crash or a failover between two steps is simulated on one server: the steps are sent one after
another, as on a cluster, and the step under test fails as a dropped connection would (the steps
before it are applied, the ones after it are never sent). Whatever step fails: a logout is never
undone, and a live logged-in session is never missing from its user's hash (so "log out
everywhere" and the per-user limit always see it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import django
import pytest
import redis
from django.contrib.sessions.backends.base import UpdateError
from engines import ClusterServer, cluster_as_server
from redis.cluster import key_slot
from redis_server import RedisServer

import django_memsession
from django_memsession.logged_in import session_id
from django_memsession.redis import SessionBackendUnavailable, SessionStore, importer
from django_memsession.redis import steps as steps_module
from django_memsession.redis.steps import Eval
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


class Fault:
    """Sends the steps one after another (as on a cluster; on the cluster, as they go) and fails
    the first step holding a command ``failing`` picks, as a connection dropped before Redis got
    it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failing: Callable[[Any], bool] | None = None
        self.failed = 0
        monkeypatch.setattr(steps_module, "is_cluster", lambda client: True)
        for name in ("pipelined", "waited"):  # a step, or the step sent with WAIT
            monkeypatch.setattr(steps_module, name, self._failing(getattr(steps_module, name)))
        for name in ("apipelined", "awaited"):
            monkeypatch.setattr(steps_module, name, self._afailing(getattr(steps_module, name)))
        # exportsessions' writes, step after step on one server too
        monkeypatch.setattr(importer, "pipelined", self._failing(importer.pipelined))

    def _failing(self, send: Callable[[Any, Any], list[Any]]) -> Callable[[Any, Any], list[Any]]:
        def failing(through: Any, step: Any) -> list[Any]:
            if self.failing is not None and any(self.failing(command) for command in step):
                self.failing = None
                self.failed += 1
                raise redis.ConnectionError("the step is lost (simulated)")
            return send(through, step)

        return failing

    def _afailing(self, send: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        async def failing(through: Any, step: Any) -> list[Any]:
            if self.failing is not None and any(self.failing(command) for command in step):
                self.failing = None
                self.failed += 1
                raise redis.ConnectionError("the step is lost (simulated)")
            return await send(through, step)

        return failing

    def fail(self, name: str) -> None:
        """Fail the next step that runs the script ``name``, or the command ``name``."""

        def picks(command: Any) -> bool:
            if isinstance(command, Eval):
                return command.name == name
            return str(command[0]).upper() == name

        self.failing = picks


@pytest.fixture
def fault(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fault]:
    yield Fault(monkeypatch)


def members(server: RedisServer, user: str) -> set[str]:
    client = server.client()
    try:
        return {field.decode() for field in client.hkeys(get_store().index.users_key(user))}
    finally:
        client.close()


def logged_in_as(server: RedisServer, session_key: str) -> str | None:
    """The user the session's record in Redis is logged in as (None: anonymous or no session)."""
    client = server.client()
    try:
        loaded = unpack(client.get(get_store().key(session_key)), get_store().clock())
    finally:
        client.close()
    if loaded is None:
        return None
    user = current_codec().loads(loaded.payload).get(AUTH)
    return None if user is None else str(user)


def anonymous_session() -> SessionStore:
    session = SessionStore()
    session["cart"] = ["tea"]
    session.save()
    return SessionStore(session.session_key)


def logged_in_session(user: str) -> SessionStore:
    """A logged-in session, as a request loads it (then logout() flushes it)."""
    session = SessionStore()
    session[AUTH] = user
    session.save()
    loaded = SessionStore(session.session_key)
    assert loaded[AUTH] == user
    return loaded


def test_a_login_whose_record_step_is_lost_leaves_a_member_and_no_logged_in_session(
    redis_server, fault
):
    session = anonymous_session()
    session[AUTH] = "1"
    fault.fail("update")
    with pytest.raises(SessionBackendUnavailable):
        session.save()
    assert fault.failed == 1
    assert logged_in_as(redis_server, session.session_key) is None
    assert members(redis_server, "1") == {session.session_key}  # stale, repaired lazily
    assert django_memsession.user_sessions("1") == []  # not listed: not logged in


def test_a_login_whose_index_step_is_lost_writes_no_logged_in_record(redis_server, fault):
    session = anonymous_session()
    session[AUTH] = "1"
    fault.fail("index")
    with pytest.raises(SessionBackendUnavailable):
        session.save()
    assert logged_in_as(redis_server, session.session_key) is None
    assert members(redis_server, "1") == set()


def test_a_login_whose_record_step_is_lost_then_sent_again_is_indexed_once(redis_server, fault):
    session = anonymous_session()
    session[AUTH] = "1"
    fault.fail("update")
    with pytest.raises(SessionBackendUnavailable):
        session.save()
    session.save()
    assert logged_in_as(redis_server, session.session_key) == "1"
    assert [row.id for row in django_memsession.user_sessions("1")] == [
        session_id(session.session_key)
    ]


def test_log_out_everywhere_ends_a_login_between_its_steps(redis_server, fault):
    session = anonymous_session()
    session[AUTH] = "1"
    fault.fail("update")
    with pytest.raises(SessionBackendUnavailable):
        session.save()
    django_memsession.end_user_sessions("1")
    # The login's record step, sent again (a retry, or a request that was slow), is refused.
    with pytest.raises(UpdateError):
        session.save()
    assert logged_in_as(redis_server, session.session_key) is None


def test_a_logout_whose_member_step_is_lost_is_still_a_logout(redis_server, fault):
    session = logged_in_session("1")
    key = session.session_key
    fault.fail("drop")
    with pytest.raises(SessionBackendUnavailable):
        session.flush()
    assert logged_in_as(redis_server, key) is None
    assert SessionStore(key).load() == {}
    assert members(redis_server, "1") == {key}  # a tombstone's member: removed when read
    assert django_memsession.user_sessions("1") == []
    assert members(redis_server, "1") == set()


def test_a_logout_whose_tombstone_step_is_lost_keeps_the_session_indexed(redis_server, fault):
    session = logged_in_session("1")
    key = session.session_key
    fault.fail("SET")
    with pytest.raises(SessionBackendUnavailable):
        session.flush()
    assert logged_in_as(redis_server, key) == "1"  # not logged out: the user sees the 503
    assert members(redis_server, "1") == {key}


def test_a_change_of_user_whose_last_step_is_lost_leaves_the_session_with_its_new_user(
    redis_server, fault
):
    session = logged_in_session("1")
    key = session.session_key
    session[AUTH] = "2"
    fault.fail("drop")
    with pytest.raises(SessionBackendUnavailable):
        session.save()
    assert logged_in_as(redis_server, key) == "2"
    assert members(redis_server, "2") == {key}
    # The old user's member is stale: never listed, never ended by the old user's "log out
    # everywhere" (the session is another user's now).
    assert django_memsession.user_sessions("1") == []
    assert django_memsession.end_user_sessions("1") == 0
    assert logged_in_as(redis_server, key) == "2"


def test_a_change_of_user_whose_record_step_is_lost_stays_with_the_old_user(redis_server, fault):
    session = logged_in_session("1")
    key = session.session_key
    session[AUTH] = "2"
    fault.fail("update")
    with pytest.raises(SessionBackendUnavailable):
        session.save()
    assert logged_in_as(redis_server, key) == "1"
    assert key in members(redis_server, "1")
    assert [row.key for row in get_store().user_sessions("1")] == [key]


def test_ending_sessions_whose_member_step_is_lost_still_ends_them(redis_server, fault):
    keys = [logged_in_session("1").session_key for _ in range(3)]
    fault.fail("drop")
    with pytest.raises(SessionBackendUnavailable):
        django_memsession.end_user_sessions("1")
    assert [logged_in_as(redis_server, key) for key in keys] == [None] * 3
    assert django_memsession.user_sessions("1") == []


def test_ending_sessions_whose_tombstone_step_is_lost_keeps_them_indexed(redis_server, fault):
    keys = [logged_in_session("1").session_key for _ in range(3)]
    fault.fail("ending")
    with pytest.raises(SessionBackendUnavailable):
        django_memsession.end_user_sessions("1")
    assert [logged_in_as(redis_server, key) for key in keys] == ["1"] * 3
    assert members(redis_server, "1") == set(keys)
    assert django_memsession.end_user_sessions("1") == 3


def test_the_per_user_limit_ends_a_session_whose_member_step_is_lost(redis_server, fault, settings):
    settings.MEMSESSION_MAX_SESSIONS_PER_USER = 1
    first = logged_in_session("1").session_key
    fault.fail("drop")
    with pytest.raises(SessionBackendUnavailable):
        logged_in_session("1")
    assert logged_in_as(redis_server, first) is None  # ended: its tombstone came first
    assert len(django_memsession.user_sessions("1")) == 1


def waits_per_node(cluster: Any) -> dict[int, int]:
    """How many WAITs each primary ran (its own counters)."""
    counts = {}
    for primary in cluster.primaries():
        client = primary.client()
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        counts[primary.port] = int(stats.get("cmdstat_wait", {}).get("calls", 0))
    return counts


def test_on_the_cluster_a_logout_waits_on_its_sessions_node_only(redis_server):
    """WAIT goes with the tombstone, on the session's node (not RedisCluster.wait(), which
    asks every node)."""
    if not isinstance(redis_server, ClusterServer):
        pytest.skip("one server has one node")
    cluster = redis_server.cluster
    session = logged_in_session("1")
    key = session.session_key
    before = waits_per_node(cluster)
    session.flush()
    after = waits_per_node(cluster)
    node = cluster.node_for(get_store().key(key))
    assert {port: after[port] - before[port] for port in after} == {
        port: 1 if port == node.port else 0 for port in after
    }


def flush_scripts(server: Any) -> None:
    client = server.client()
    try:
        client.script_flush()
    finally:
        client.close()


def test_a_login_and_a_logout_after_redis_lost_its_scripts_are_whole(redis_server):
    """On one server the last step's scripts go as EVALSHA in the transaction: one Redis lost
    (a restart, SCRIPT FLUSH) is sent again, and no step is left out."""
    session = anonymous_session()
    session[AUTH] = "1"
    flush_scripts(redis_server)
    session.save()
    assert logged_in_as(redis_server, session.session_key) == "1"
    assert members(redis_server, "1") == {session.session_key}
    loaded = SessionStore(session.session_key)
    assert loaded[AUTH] == "1"
    flush_scripts(redis_server)
    loaded.flush()
    assert logged_in_as(redis_server, session.session_key) is None
    assert members(redis_server, "1") == set()


@pytest.mark.skipif(django.VERSION < (5, 0), reason="Django 5.0's async SessionBase")
def test_an_async_login_whose_record_step_is_lost_leaves_a_member_and_no_logged_in_session(
    redis_server, fault
):
    session = anonymous_session()
    session[AUTH] = "1"
    fault.fail("update")
    with pytest.raises(SessionBackendUnavailable):
        asyncio.run(session.asave())
    assert fault.failed == 1
    assert logged_in_as(redis_server, session.session_key) is None
    assert members(redis_server, "1") == {session.session_key}


@pytest.mark.skipif(django.VERSION < (5, 0), reason="Django 5.0's async SessionBase")
def test_an_async_logout_whose_member_step_is_lost_is_still_a_logout(redis_server, fault):
    session = logged_in_session("1")
    key = session.session_key
    fault.fail("drop")
    with pytest.raises(SessionBackendUnavailable):
        asyncio.run(session.aflush())
    assert fault.failed == 1
    assert logged_in_as(redis_server, key) is None
    assert django_memsession.user_sessions("1") == []


def test_an_exported_logged_in_session_is_indexed_before_it_is_written(redis_server, fault):
    from django_memsession.redis.importer import Importer, Kind, Outcome, Write

    writer = Importer(get_store())
    payload = current_codec().dumps({AUTH: "1"})
    expires_at = get_store().clock() + 3600
    fault.fail("export")
    with pytest.raises(SessionBackendUnavailable):
        writer.write([Write(Kind.EXPORT, "a" * 32, payload, expires_at)])
    assert members(redis_server, "1") == {"a" * 32}  # indexed; its session not written
    assert logged_in_as(redis_server, "a" * 32) is None
    assert writer.write([Write(Kind.EXPORT, "a" * 32, payload, expires_at)]) == [Outcome.WRITTEN]
    assert [row.key for row in get_store().user_sessions("1")] == ["a" * 32]


def cluster_of(redis_server: Any) -> Any:
    if not isinstance(redis_server, ClusterServer):
        pytest.skip("a fault of the cluster")
    return redis_server.cluster


@pytest.mark.heavy
def test_after_a_planned_failover_of_its_shard_a_logout_waits_on_the_new_primary(redis_server):
    """The engine's slot map names the old primary (now a replica): the WAIT step gets MOVED,
    learns the new map and goes to the new primary; the logout is whole, never a 500."""
    cluster = cluster_of(redis_server)
    session = logged_in_session("1")
    key = session.session_key
    _old, new = cluster.failover(cluster.node_for(get_store().key(key)))
    assert cluster.node_for(get_store().key(key)) is new
    session.flush()
    assert logged_in_as(redis_server, key) is None
    assert django_memsession.user_sessions("1") == []


@pytest.mark.heavy
def test_after_its_slot_moved_a_login_and_a_logout_are_whole(redis_server):
    cluster = cluster_of(redis_server)
    session = anonymous_session()
    key = session.session_key
    node = cluster.node_for(get_store().key(key))
    slot = key_slot(get_store().key(key))
    target = next(p for p in cluster.primaries() if p is not node)
    cluster._move([slot], node, target, None)
    cluster.wait_ok()
    session[AUTH] = "1"
    session.save()
    assert logged_in_as(redis_server, key) == "1"
    assert [row.key for row in get_store().user_sessions("1")] == [key]
    loaded = SessionStore(key)
    assert loaded[AUTH] == "1"
    cluster._move([slot], target, node, None)
    cluster.wait_ok()
    loaded.flush()
    assert logged_in_as(redis_server, key) is None
    assert members(redis_server, "1") == set()


@pytest.mark.heavy
@pytest.mark.skipif(django.VERSION < (5, 0), reason="Django 5.0's async SessionBase")
def test_after_a_planned_failover_of_its_shard_an_async_logout_is_whole(redis_server):
    cluster = cluster_of(redis_server)
    session = logged_in_session("1")
    key = session.session_key

    async def load_then_flush() -> None:
        await session.aload()  # the event loop's client learns the slots before the failover
        cluster.failover(cluster.node_for(get_store().key(key)))
        await session.aflush()

    asyncio.run(load_then_flush())
    assert logged_in_as(redis_server, key) is None
    assert django_memsession.user_sessions("1") == []
