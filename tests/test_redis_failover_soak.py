"""Failovers under load: a real gunicorn (2 workers) on the Redis engine through Sentinel (a
primary, a replica, three sentinels on loopback), visitors logging in, changing their session
and logging out continuously, and the primary killed (``kill -9``) or switched over
(``SENTINEL FAILOVER``) mid-run.

What a user may see: a 200 or the middleware's 503, never anything else; a 503 window no longer
than the sentinels take to notice and promote; no logout the site confirmed (a 200) undone by the
failover; no confirmed login lost; both workers serving again without a restart.

The kill comes right after logouts made while the replica could not acknowledge them (held by
SIGSTOP, what ``DEBUG SLEEP`` does, without the debug command Redis 7 turns off): those logouts
must be refused with the 503, since nothing says the replica that is about to be promoted has
them. A refused logout may or may not hold afterwards; the visitor presses logout again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
from redis_server import server_executable
from sentinel_servers import DOWN_AFTER_MS, SERVICE, SentinelSet, wait_for
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
# The sentinels notice a dead primary after DOWN_AFTER_MS, agree, elect a leader and promote the
# replica; the workers then find it on their next connection. "A few seconds" on top.
OUTAGE_BOUND = DOWN_AFTER_MS / 1000 + 5.0
# A planned switch-over: how long after the sentinels announce the new primary a request may still
# be refused (a logout sent to the old primary, whose replica has left it, is a 503 until the
# workers reconnect).
SWITCH_BOUND = 1.0
HELD_LOGOUTS = 2


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    """Servers of this test's own: it kills one."""
    pytest.importorskip("redis")
    servers = SentinelSet(server_executable())
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def site(sentinels: SentinelSet, control_dir: str) -> Iterator[Server]:
    env = {
        "MEMSESSION_TEST_REDIS_URL": f"redis://{SERVICE}/0",
        "MEMSESSION_TEST_REDIS_SENTINELS": json.dumps(sentinels.addresses),
    }
    with gunicorn(control_dir, "--workers", str(WORKERS), extra_env=env) as server:
        yield server


def test_a_killed_primary_is_a_bounded_503_window_and_undoes_no_logout(sentinels, site):
    with Traffic(site.base) as traffic:
        wait_for(lambda: len(traffic.logged_out) >= 10, 60, "ten logouts before the kill")
        before = until_served_by_every_worker(traffic, 0, 60, WORKERS)
        stayers = stay(site.base, "before")
        # Logins left logged in, to log out while the replica cannot acknowledge.
        held_keys = []
        for number in range(HELD_LOGOUTS):
            answer = call(site.base, f"/session/sign-in/?user=held-{number}", None)
            assert answer.status == 200
            held_keys.append(answer.session_key)
        traffic.pause()
        sentinels.wait_replicated()
        old_primary, replica = sentinels.primary, sentinels.replica
        replica.pause()
        held_from = time.monotonic()
        try:
            refused = [call(site.base, "/session/sign-out/", key) for key in held_keys]
            old_primary.kill()
            killed = time.monotonic()
        finally:
            replica.resume()
        assert [answer.status for answer in refused] == [503] * HELD_LOGOUTS
        assert all(answer.session_key is None for answer in refused)  # the cookie kept
        traffic.resume()
        after = until_served_by_every_worker(traffic, killed, OUTAGE_BOUND + 30, WORKERS)
        wait_for(
            lambda: len([a for a in traffic.answers if a.sent > killed and a.status == 200]) > 50,
            60,
            "fifty requests served after the failover",
        )
        stayers |= stay(site.base, "after")
    statuses = {answer.status for answer in traffic.answers}
    assert statuses <= {200, 503}, statuses
    refused_after_kill = [a for a in traffic.answers if a.status == 503 and a.sent >= killed]
    assert refused_after_kill, "the kill was not noticed: the run proves nothing"
    window = max(a.received for a in refused_after_kill) - killed
    assert window <= OUTAGE_BOUND, f"503s for {window:.1f} s after the kill"
    assert after == before  # the same two workers: none restarted
    check_no_logout_undone_and_no_login_lost(site, traffic, stayers, (held_from, killed))
    # The held logouts: pressed again, they hold.
    for key in held_keys:
        assert call(site.base, "/session/sign-out/", key).status == 200
        assert call(site.base, "/session/whoami/", key).body["user"] is None


@pytest.mark.xfail(
    os.environ.get("MEMSESSION_TEST_REDIS_SERVER", "").endswith("valkey-server"),
    reason="Valkey: a replica resyncing after the switch is counted before it can acknowledge, "
    "so a logout may get a 503 (known, open: issue 23/22 follow-up)",
    strict=False,
)
def test_a_planned_switch_over_errs_for_at_most_a_second(sentinels, site):
    with Traffic(site.base) as traffic:
        wait_for(lambda: len(traffic.logged_out) >= 10, 60, "ten logouts before the switch")
        before = until_served_by_every_worker(traffic, 0, 60, WORKERS)
        stayers = stay(site.base, "before")
        started = time.monotonic()
        _, new = sentinels.failover()
        # Announced: every sentinel names the new primary (a worker asks whichever answers).
        wait_for(
            lambda: all(sentinels.primary_port(one) == new for one in sentinels.sentinels),
            30,
            "every sentinel to name the new primary",
        )
        switched = time.monotonic()
        # Until the old primary is a replica of the new one, a write it took may be lost.
        sentinels.wait_settled()
        settled = time.monotonic()
        after = until_served_by_every_worker(traffic, switched, 30, WORKERS)
        wait_for(
            lambda: len([a for a in traffic.answers if a.sent > switched and a.status == 200]) > 50,
            60,
            "fifty requests served after the switch",
        )
        stayers |= stay(site.base, "after")
    statuses = {answer.status for answer in traffic.answers}
    assert statuses <= {200, 503}, statuses
    late = [a for a in traffic.answers if a.status != 200 and a.received > switched + SWITCH_BOUND]
    assert not late, [
        (a.path, a.status, round(a.sent - switched, 2), round(a.received - switched, 2))
        for a in late
    ]
    assert after == before
    check_no_logout_undone_and_no_login_lost(site, traffic, stayers, (started, settled))
