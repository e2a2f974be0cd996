"""The near cache through real servers: two separate gunicorn instances (each with 2 worker
processes, so four L1s) on their own ports, one Redis. Users write on one instance and read on
the other, over HTTP, with logouts and ``cycle_key``; no read may ever show an older version
than the last write that returned. Then the same with the invalidation connections killed
(``CLIENT KILL`` by id) and Redis restarted mid-run.
"""

from __future__ import annotations

import random
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest
from redis_server import RedisServer
from test_gunicorn import gunicorn
from test_redis_gunicorn import call

pytestmark = [pytest.mark.heavy, pytest.mark.usefixtures("redis_url")]

CLIENTS = 6
INVALIDATION_NAME = "memsession-near-invalidation"


@dataclass
class User:
    """One browser: its session cookie, and what the last write that returned left there."""

    rng: random.Random
    key: str | None = None
    visits: int | None = None
    user: str | None = None
    stale: list[str] = field(default_factory=list)
    loads: int = 0  # requests that load the session: reads, and writes of an existing one
    phase: str = ""  # where in the run, for the failure message
    last: str = ""  # the last write, for the failure message

    def expect(self, base: str, key: str | None, visits: int | None, user: str | None) -> None:
        answer, _ = call(base, "/session/whoami/", key)
        self.loads += key is not None
        if (answer["visits"], answer["user"]) != (visits, user):
            self.stale.append(
                f"{base}: saw {answer['visits']}/{answer['user']}, expected {visits}/{user}"
            )

    def step(self, bases: list[str]) -> None:
        """One write on one instance, then reads on the other (and on the writer)."""
        writer, reader = self.rng.sample(bases, 2)
        roll = self.rng.random()
        self.last = (
            f"{'make' if roll < 0.8 else 'sign-in' if roll < 0.9 else 'sign-out'} on {writer}"
        )
        self.loads += self.key is not None and roll < 0.9
        if self.key is None or roll < 0.8:
            answer, cookie = call(writer, "/session/make/", self.key)
            self.key = cookie or self.key
            self.visits = answer["visits"]
        elif roll < 0.9:  # login: cycle_key; the old key must be gone everywhere
            old = self.key
            answer, cookie = call(writer, "/session/sign-in/?user=7", old)
            self.key, self.user = cookie, answer["user"]
            self.expect(reader, old, None, None)
        else:  # logout: flush; the cookie must not open the session anywhere
            old = self.key
            call(writer, "/session/sign-out/", old)
            self.expect(reader, old, None, None)
            self.expect(writer, old, None, None)
            self.key, self.visits, self.user = None, None, None
            return
        self.expect(reader, self.key, self.visits, self.user)
        self.expect(reader, self.key, self.visits, self.user)  # a copy to serve, or not
        self.expect(writer, self.key, self.visits, self.user)


def run_users(users: list[User], bases: list[str], steps_each: int) -> None:
    def drive(user: User) -> None:
        for _ in range(steps_each):
            user.step(bases)

    threads = [threading.Thread(target=drive, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def two_instances(stack: ExitStack, control_dir: str, redis_url: str) -> list[str]:
    env = {"MEMSESSION_TEST_REDIS_URL": redis_url, "MEMSESSION_TEST_REDIS_NEAR_CACHE": "4M"}
    return [
        stack.enter_context(gunicorn(control_dir, "--workers", "2", extra_env=env)).base
        for _ in range(2)
    ]


def gets(server: RedisServer) -> int:
    return server.calls("get")


def test_10000_interleaved_steps_across_two_instances_show_no_stale_read(
    redis_url, redis_server, control_dir
):
    users = [User(random.Random(seed)) for seed in range(CLIENTS)]
    with ExitStack() as stack:
        bases = two_instances(stack, control_dir, redis_url)
        before = gets(redis_server)
        run_users(users, bases, steps_each=10_000 // CLIENTS + 1)
        loads = sum(user.loads for user in users)
        redis_gets = gets(redis_server) - before
    assert [problem for user in users for problem in user.stale] == []
    assert redis_gets < loads  # the near caches answered some of the loads


def invalidation_ids(server: RedisServer) -> list[int]:
    client = server.client()
    try:
        return [
            int(c["id"]) for c in client.client_list() if c["name"].startswith(INVALIDATION_NAME)
        ]
    finally:
        client.close()


def test_killed_invalidation_connections_and_a_redis_restart_mid_run_show_no_stale_read(
    redis_url, redis_server, control_dir
):
    users = [User(random.Random(100 + seed)) for seed in range(CLIENTS)]
    with ExitStack() as stack:
        bases = two_instances(stack, control_dir, redis_url)
        run_users(users, bases, steps_each=100)
        for user in users:
            user.phase = "after CLIENT KILL"
        killed = invalidation_ids(redis_server)
        assert killed  # every worker that served has its own
        client = redis_server.client()
        for client_id in killed:
            client.execute_command("CLIENT", "KILL", "ID", client_id)
        client.close()
        run_users(users, bases, steps_each=100)  # no stale read while tracking comes back
        assert set(invalidation_ids(redis_server)).isdisjoint(killed)

        redis_server.restart()  # an empty Redis: every session is gone
        for user in users:
            user.phase = "after the restart"
            user.expect(bases[0], user.key, None, None)  # no L1 still serving a lost session
            user.key = user.visits = user.user = None
        run_users(users, bases, steps_each=100)

        # L1 in use again: a session read over and over costs fewer GETs than reads.
        _, key = call(bases[0], "/session/sign-in/?user=9", None)
        before = gets(redis_server)
        for _ in range(40):
            answer, _ = call(bases[1], "/session/whoami/", key)
            assert answer["user"] == "9"
        redis_gets = gets(redis_server) - before
    assert [problem for user in users for problem in user.stale] == []
    assert redis_gets < 20
