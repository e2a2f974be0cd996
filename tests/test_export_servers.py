"""The move from the memory engine to Redis through real servers: sessions made on a memory
gunicorn are exported, changed and logged out in the window before the switch, and after the
restart on the Redis engine with 3 workers every one is as the user left it."""

from __future__ import annotations

import json
import time

import pytest
from processes import run_command
from test_gunicorn import gunicorn
from test_redis_gunicorn import call

pytestmark = pytest.mark.heavy

WORKERS = 3
MAX_REQUESTS = 300  # to reach every worker; far more than ever needed


def export(url: str, control_dir: str, *extra: str) -> dict:
    result = run_command("exportsessions", url, "--json", *extra, control_dir=control_dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def on_every_worker(base: str, key: str) -> tuple[set[int], list[dict]]:
    """Ask ``whoami`` with this session on new connections until every worker has answered."""
    pids: set[int] = set()
    answers = []
    for _ in range(MAX_REQUESTS):
        answer, _ = call(base, "/session/whoami/", key)
        answers.append(answer)
        pids.add(answer["pid"])
        if len(pids) == WORKERS:
            break
    return pids, answers


def in_redis(redis_server, key: str, timeout: float = 10.0) -> bytes | None:
    """The record under this session in Redis, once the mirror has sent it (None if never)."""
    client = redis_server.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = client.get(f"memsession:{key}")
        if value is not None:
            return value
        time.sleep(0.05)
    return None


def test_the_move_to_redis_keeps_sessions_logins_changes_and_logouts(redis_server, control_dir):
    redis_server.reset()
    url = redis_server.url
    with gunicorn(control_dir, "--workers", "1") as memory:
        visitors = [call(memory.base, "/session/make/", None)[1] for _ in range(5)]
        users = {u: call(memory.base, f"/session/sign-in/?user={u}", None)[1] for u in "123"}
        exported = export(url, control_dir)
        assert (exported["total"]["written"], exported["total"]["logged_in"]) == (8, 3)
        # Between the export and the switch: a change, a logout, a new login.
        assert call(memory.base, "/session/make/", visitors[0])[0]["visits"] == 2
        call(memory.base, "/session/sign-out/", users["3"])
        late_login = call(memory.base, "/session/sign-in/?user=4", None)[1]
    # The memory server has stopped (its mirror sent its queue as it exited): the switch.
    with gunicorn(
        control_dir, "--workers", str(WORKERS), extra_env={"MEMSESSION_TEST_REDIS_URL": url}
    ) as on_redis:
        expected = {key: (None, 1) for key in visitors}
        expected[visitors[0]] = (None, 2)
        expected |= {users["1"]: ("1", None), users["2"]: ("2", None), late_login: ("4", None)}
        expected[users["3"]] = (None, None)
        for key, (user, visits) in expected.items():
            pids, answers = on_every_worker(on_redis.base, key)
            assert len(pids) == WORKERS
            assert {(a["user"], a["visits"]) for a in answers} == {(user, visits)}


def test_an_export_larger_than_one_control_frame_is_paged(redis_server, control_dir):
    redis_server.reset()
    with gunicorn(control_dir, "--workers", "1") as memory:
        # 48 sessions of 400 kB: 19 MB, over the channel's 16 MiB frame.
        keys = [call(memory.base, "/session/blob/?size=400000", None)[1] for _ in range(48)]
        exported = export(redis_server.url, control_dir)
    assert exported["total"]["written"] == 48
    client = redis_server.client()
    assert all(client.strlen(f"memsession:{key}") > 400_000 for key in keys)


def test_a_worker_started_after_the_export_mirrors_too(redis_server, control_dir):
    redis_server.reset()
    with gunicorn(control_dir, "--workers", "1", "--max-requests", "3") as memory:
        first_pid = call(memory.base, "/session/whoami/", None)[0]["pid"]
        export(redis_server.url, control_dir)
        for _ in range(MAX_REQUESTS):
            answer, key = call(memory.base, "/session/make/", None)
            if answer["pid"] != first_pid:
                break
        assert answer["pid"] != first_pid  # served by the respawned worker
        record = in_redis(redis_server, key)
    assert record is not None and record.startswith(b"S")


def test_a_dry_run_writes_nothing_and_redis_down_is_a_clear_error(redis_server, control_dir):
    redis_server.reset()
    with gunicorn(control_dir, "--workers", "1") as memory:
        call(memory.base, "/session/make/", None)
        dry = export(redis_server.url, control_dir, "--dry-run")
        assert dry["total"]["sessions"] == 1 and redis_server.client().dbsize() == 0
        down = run_command("exportsessions", "redis://127.0.0.1:9/0", control_dir=control_dir)
    assert down.returncode == 3
    assert "cannot be reached" in down.stderr and down.stdout == ""


def test_preloaded_workers_forked_while_mirroring_each_mirror_on_their_own(
    redis_server, control_dir
):
    """The marker is there when gunicorn starts; the app touches the store at import, so the
    master starts a mirror before it forks: each worker must build its own (its connection, its
    thread), and the master, which serves nothing, must not count as a process."""
    redis_server.reset()
    with gunicorn(control_dir, "--workers", "1") as memory:
        call(memory.base, "/session/make/", None)
        export(redis_server.url, control_dir)
    with gunicorn(
        control_dir, "--workers", "2", "--preload", app="testsite.wsgi_touching"
    ) as preloaded:
        made: dict[int, str] = {}
        for _ in range(MAX_REQUESTS):
            answer, key = call(preloaded.base, "/session/make/", None)
            made.setdefault(answer["pid"], key)
            if len(made) == 2:
                break
        assert len(made) == 2
        status = run_command("exportsessions", "--status", "--json", control_dir=control_dir)
        records = {pid: in_redis(redis_server, key) for pid, key in made.items()}
    assert status.returncode == 0, status.stderr
    assert {p["pid"] for p in json.loads(status.stdout)["processes"]} == set(made)
    assert all(json.loads(status.stdout)["processes"][i]["mirroring"] for i in range(2))
    assert all(record is not None and record.startswith(b"S") for record in records.values())
