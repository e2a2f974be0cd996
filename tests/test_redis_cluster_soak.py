"""A Redis Cluster under load: a real gunicorn (2 workers) on the Redis engine with
``MEMSESSION_REDIS_CLUSTER`` on a six-node loopback cluster of this module's own
(tests/cluster_servers.py: it is resharded, failed over and killed here), visitors logging in,
changing their session and logging out continuously (tests/soak.py), and, one per test: slots
moved while they run, a planned ``CLUSTER FAILOVER`` of one shard, a ``kill -9`` of one primary
(revived after).

What a user may see: a 200, or the middleware's 503 only while a killed primary's slots have no
primary (the cluster's node timeout, then the replica's election) and a few seconds after; no
logout the site confirmed undone; no confirmed login lost. And "log out everywhere"
(``end_user_sessions``) for a user with 20 sessions on all three primaries ends all 20, also while
one of those shards fails over.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cluster_servers import RedisCluster, wait_for
from redis_server import RedisServer, server_executable
from soak import (
    Traffic,
    call,
    check_no_logout_undone_and_no_login_lost,
    stay,
    until_served_by_every_worker,
)
from test_gunicorn import Server, gunicorn

pytestmark = [pytest.mark.heavy, pytest.mark.redis]

WORKERS = 2
NODE_TIMEOUT = 2.0  # cluster_servers' --cluster-node-timeout, in seconds
# A killed primary: the other nodes mark it failed after the node timeout, its replica is elected
# (after 0.5-1 s; an election that gets no majority is tried again after twice the node timeout)
# and promoted, the workers learn the new slot map on their next redirect or refused connection.
# Measured on loopback: 3.4 to 5.5 s.
OUTAGE_BOUND = 2 * NODE_TIMEOUT + 5.0
MOVED_SLOTS = 2000
EVERYWHERE = 20  # sessions of the user logged out everywhere
NOTHING_UNSURE = (0.0, 0.0)  # no span in which a confirmed login may not be on a replica


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[RedisCluster]:
    """Six nodes of this module's own: its faults would disturb the suite's shared cluster."""
    pytest.importorskip("redis")
    servers = RedisCluster(server_executable())
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def site(own_cluster: RedisCluster, control_dir: str) -> Iterator[Server]:
    own_cluster.reset()
    env = {"MEMSESSION_TEST_REDIS_URL": own_cluster.url, "MEMSESSION_TEST_REDIS_CLUSTER": "1"}
    with gunicorn(control_dir, "--workers", str(WORKERS), extra_env=env) as server:
        yield server


def warmed_up(traffic: Traffic, base: str) -> tuple[set[int], dict[str, str]]:
    """Visitors under way on both workers; stayers logged in."""
    wait_for(lambda: len(traffic.logged_out) >= 10, 60, "ten logouts before the fault")
    return until_served_by_every_worker(traffic, 0, 60, WORKERS), stay(base, "before")


def served_after(traffic: Traffic, moment: float, count: int = 50) -> None:
    wait_for(
        lambda: len([a for a in traffic.answers if a.sent > moment and a.status == 200]) > count,
        60,
        f"{count} requests served after the fault",
    )


def summary(traffic: Traffic, since: float) -> str:
    """The run's figures, printed (pytest shows them with -s, or when the test fails)."""
    refusals = [a for a in traffic.answers if a.status == 503]
    window = (
        f"503s from {min(a.sent for a in refusals) - since:.2f} s to "
        f"{max(a.received for a in refusals) - since:.2f} s after the fault"
        if refusals
        else "no 503"
    )
    return (
        f"{len(traffic.answers)} requests, {len(refusals)} refused, {len(traffic.logins)} logins, "
        f"{len(traffic.logged_out)} logouts; {window}"
    )


def refused(traffic: Traffic, site: Server) -> str:
    """Every answer but a 200, and what the workers logged (empty: none)."""
    answers = [(a.path, a.status, round(a.sent, 2)) for a in traffic.answers if a.status != 200]
    return f"{answers}\n{site.log()[-3000:]}" if answers else ""


def test_slots_moved_under_load_refuse_nothing(own_cluster, site):
    with Traffic(site.base) as traffic:
        before, stayers = warmed_up(traffic, site.base)
        started = time.monotonic()
        moved = own_cluster.move_slots(MOVED_SLOTS)
        done = time.monotonic()
        served_after(traffic, done)
        after = until_served_by_every_worker(traffic, done, 30, WORKERS)
        stayers |= stay(site.base, "after")
    print(summary(traffic, started))
    assert len(moved) == MOVED_SLOTS
    during = [a for a in traffic.answers if started <= a.sent <= done]
    assert len(during) > 50, "too few requests while the slots moved: the run proves nothing"
    assert not refused(traffic, site), refused(traffic, site)
    assert after == before
    check_no_logout_undone_and_no_login_lost(site, traffic, stayers, NOTHING_UNSURE)


@pytest.mark.xfail(
    os.environ.get("MEMSESSION_TEST_REDIS_SERVER", "").endswith("valkey-server"),
    reason="Valkey: a replica resyncing after the switch is counted before it can acknowledge, "
    "so a logout may get a 503 (known, open: issue 23/22 follow-up)",
    strict=False,
)
def test_a_planned_failover_of_one_shard_refuses_nothing(own_cluster, site):
    with Traffic(site.base) as traffic:
        before, stayers = warmed_up(traffic, site.base)
        started = time.monotonic()
        own_cluster.failover()
        settled = time.monotonic()
        served_after(traffic, settled)
        after = until_served_by_every_worker(traffic, settled, 30, WORKERS)
        stayers |= stay(site.base, "after")
    print(summary(traffic, started))
    assert not refused(traffic, site), refused(traffic, site)
    assert after == before
    check_no_logout_undone_and_no_login_lost(site, traffic, stayers, (started, settled))


def kill_primary(cluster: RedisCluster) -> tuple[RedisServer, float]:
    """``cluster.kill_primary()`` of the first primary; the killed node and when the kill itself
    happened (kill_primary first waits for the replicas to be in sync, which under load takes a
    few seconds)."""
    primary = cluster.primaries()[0]
    moments = []

    def kill() -> None:
        moments.append(time.monotonic())
        type(primary).kill(primary)

    primary.kill = kill
    try:
        cluster.kill_primary(primary)
    finally:
        del primary.kill
    return primary, moments[0]


def test_a_killed_primary_is_a_bounded_503_window_and_undoes_no_logout(own_cluster, site):
    with Traffic(site.base) as traffic:
        before, stayers = warmed_up(traffic, site.base)
        killed, killed_at = kill_primary(own_cluster)
        promoted = time.monotonic()
        served_after(traffic, promoted)
        after = until_served_by_every_worker(traffic, promoted, 30, WORKERS)
        stayers |= stay(site.base, "after")
        own_cluster.revive(killed)
        revived = time.monotonic()
        served_after(traffic, revived)
    print(summary(traffic, killed_at))
    statuses = {answer.status for answer in traffic.answers}
    assert statuses <= {200, 503}, statuses
    assert not [a for a in traffic.answers if a.status == 503 and a.received < killed_at]
    late = [a for a in traffic.answers if a.status == 503 and a.received > killed_at + OUTAGE_BOUND]
    assert not late, [(a.path, round(a.received - killed_at, 2)) for a in late]
    assert after == before
    check_no_logout_undone_and_no_login_lost(site, traffic, stayers, (killed_at, promoted))


# -- log out everywhere ----------------------------------------------------------------------


@pytest.fixture
def in_process(own_cluster: RedisCluster, site: Server, settings) -> Iterator[RedisCluster]:
    """This process's store on the same cluster as the site."""
    from django_memsession.redis import store as redis_store

    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = own_cluster.url
    settings.MEMSESSION_REDIS_CLUSTER = True
    redis_store.reset()
    yield own_cluster
    redis_store.reset()


def sessions_on_every_primary(cluster: RedisCluster, base: str, user: str) -> list[str]:
    """``EVERYWHERE`` logins of ``user`` through the site, their keys on all three primaries."""
    from django_memsession.redis.conf import store_settings

    prefix = store_settings().prefix
    keys = []
    for _ in range(EVERYWHERE):
        answer = call(base, f"/session/sign-in/?user={user}", None)
        assert answer.status == 200, answer.status
        keys.append(answer.session_key)
    primaries = {cluster.node_for(prefix + key).port for key in keys}
    if len(primaries) < 3:  # 20 random keys on two shards of three: (2/3)**20 * 3, ~0.0009
        pytest.skip("the 20 sessions landed on fewer than three primaries")
    return keys


def end_everywhere(user: str) -> int:
    """``end_user_sessions``, pressed again while the cluster answers with the 503's error."""
    from django_memsession import end_user_sessions
    from django_memsession.redis.exceptions import SessionBackendUnavailable

    deadline = time.monotonic() + OUTAGE_BOUND + 10
    while True:
        try:
            return end_user_sessions(user)
        except SessionBackendUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def assert_all_ended(base: str, keys: list[str], user: str) -> None:
    from django_memsession import user_sessions

    for key in keys:
        answer = call(base, "/session/whoami/", key)
        assert answer.status == 200, answer.status
        assert answer.body["user"] is None, "a session survived log out everywhere"
    assert user_sessions(user) == []


def test_log_out_everywhere_ends_20_sessions_on_three_primaries(in_process, site):
    keys = sessions_on_every_primary(in_process, site.base, "everywhere")
    assert end_everywhere("everywhere") == EVERYWHERE
    assert_all_ended(site.base, keys, "everywhere")


@pytest.mark.parametrize("fault", ["failover", "kill"])
def test_log_out_everywhere_ends_them_all_while_a_shard_fails_over(in_process, site, fault):
    from django_memsession.redis.conf import store_settings

    keys = sessions_on_every_primary(in_process, site.base, "everywhere")
    shard = in_process.node_for(store_settings().prefix + keys[0])
    act = in_process.failover if fault == "failover" else in_process.kill_primary
    outcome: list[tuple] = []
    fault_thread = threading.Thread(target=lambda: outcome.append(act(shard)), daemon=True)
    fault_thread.start()
    try:
        end_everywhere("everywhere")
    finally:
        fault_thread.join(60)
    assert outcome, "the fault did not complete"
    assert_all_ended(site.base, keys, "everywhere")
    if fault == "kill":
        in_process.revive(outcome[0][0])


# -- a logout while its slot moves (found by the soak above) -----------------------------------


@contextmanager
def migrated_out_of_a_moving_slot(cluster: RedisCluster, key: str) -> Iterator[None]:
    """The session's key migrated to another primary while its slot is still being moved (the
    source MIGRATING, the target IMPORTING: the source answers ``ASK`` for it); the move
    finished afterwards."""
    from cluster_servers import ask
    from redis.cluster import key_slot

    from django_memsession.redis.conf import store_settings

    name = (store_settings().prefix + key).encode()
    slot = key_slot(name)
    source = cluster.node_for(name)
    target = next(p for p in cluster.primaries() if p is not source)
    source_id, target_id = cluster.id_of(source), cluster.id_of(target)
    ask(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    ask(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    try:
        ask(source, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", name)
        yield
    finally:
        for primary in cluster.primaries():
            ask(primary, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        cluster.wait_ok()


def test_a_logout_whose_key_was_migrated_out_of_a_moving_slot_is_served(in_process):
    """The logout is a write sent with ``WAIT`` on its key's node; that node answers ``ASK``:
    before the fix, the 503 (the soak: ~1 in 8000 requests while 2000 slots move)."""
    from django_memsession.redis.engine import SessionStore

    session = SessionStore()
    session["_auth_user_id"] = "7"
    session.save()
    key = session.session_key
    with migrated_out_of_a_moving_slot(in_process, key):
        session.flush()
    assert SessionStore(session_key=key).load() == {}


async def test_an_async_logout_whose_key_was_migrated_out_of_a_moving_slot_is_served(in_process):
    from django_memsession.redis.engine import SessionStore

    session = SessionStore()
    session["_auth_user_id"] = "7"
    await session.asave()
    key = session.session_key
    with migrated_out_of_a_moving_slot(in_process, key):
        await session.aflush()
    assert await SessionStore(session_key=key).aload() == {}
