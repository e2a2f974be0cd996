"""The figures of the admin page on the Redis engine, gathered from real gunicorn workers through
the control channel: every worker answers with its own, a --preload master that served nothing
does not, and no session key is in any answer."""

from __future__ import annotations

import json
import time
import urllib.request
from http.cookies import SimpleCookie

import pytest
from test_gunicorn import gunicorn

from django_memsession import runtime
from django_memsession.messages import to_json

pytestmark = [pytest.mark.heavy, pytest.mark.usefixtures("redis_url")]


def make_session(base: str) -> tuple[int, str]:
    """One request on a new connection (any worker may take it): its pid and the new key."""
    with urllib.request.urlopen(f"{base}/session/make/", timeout=10) as response:
        cookies = SimpleCookie()
        for header in response.headers.get_all("Set-Cookie") or []:
            cookies.load(header)
        body = json.loads(response.read())
    return body["pid"], cookies["sessionid"].value


def sessions_on_every_worker(base: str, workers: int) -> tuple[set[int], list[str]]:
    pids: set[int] = set()
    keys: list[str] = []
    deadline = time.monotonic() + 30
    while len(pids) < workers and time.monotonic() < deadline:
        pid, key = make_session(base)
        pids.add(pid)
        keys.append(key)
    assert len(pids) == workers, "a worker never took a request"
    return pids, keys


def test_every_worker_reports_its_own_redis_figures(redis_url, control_dir, monkeypatch):
    monkeypatch.setenv("MEMSESSION_TEST_REDIS_URL", redis_url)
    with gunicorn(control_dir, "--workers", "2") as server:
        pids, keys = sessions_on_every_worker(server.base, 2)

        gathered = runtime.gather("report", local=False)

    assert gathered.errors == []
    assert {report.pid for report in gathered.processes} == pids
    for report in gathered.processes:
        assert report.stats is None
        assert report.redis is not None
        assert report.redis.round_trips >= 1
        assert report.redis.latency_p99_ms is not None
    # Each new session is one SET NX: every one of them was timed by the worker that made it.
    assert sum(report.redis.round_trips for report in gathered.processes) >= len(keys)
    text = b"".join(to_json(report) for report in gathered.processes).decode()
    assert not any(key in text for key in keys)


def test_a_preload_master_that_only_read_stats_is_not_a_reporting_process(
    redis_url, control_dir, monkeypatch
):
    """The app calls stats() at import, so the master starts the Redis services before it
    forks; having sent no session's round trip, it stops listening at the fork."""
    monkeypatch.setenv("MEMSESSION_TEST_REDIS_URL", redis_url)
    with gunicorn(control_dir, "--workers", "1", "--preload", app="testsite.wsgi_touching") as (
        server
    ):
        worker, _ = make_session(server.base)

        gathered = runtime.gather("report", local=False)

    assert [report.pid for report in gathered.processes] == [worker]
    assert gathered.errors == []
