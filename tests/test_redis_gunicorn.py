"""A real gunicorn with 3 worker processes on the Redis engine: a user's requests land on every
worker and always see their session; a logout served by one worker holds on all the others."""

from __future__ import annotations

import json
import urllib.request
from http.cookies import SimpleCookie

import pytest
from test_gunicorn import gunicorn

pytestmark = [pytest.mark.heavy, pytest.mark.usefixtures("redis_url")]

WORKERS = 3
MAX_REQUESTS = 300  # to reach every worker at least once; far more than ever needed


def call(base: str, path: str, session_key: str | None) -> tuple[dict, str | None]:
    """One request on a new connection (so any worker may take it) with this session cookie;
    the JSON answer and the session cookie the response sets, if any."""
    request = urllib.request.Request(f"{base}{path}")
    if session_key is not None:
        request.add_header("Cookie", f"sessionid={session_key}")
    with urllib.request.urlopen(request, timeout=10) as response:
        cookies = SimpleCookie()
        for header in response.headers.get_all("Set-Cookie") or []:
            cookies.load(header)
        body = json.loads(response.read())
    morsel = cookies.get("sessionid")
    return body, (morsel.value if morsel is not None else None)


def test_a_user_sees_their_session_on_every_worker_and_a_logout_holds_on_all(
    redis_url, control_dir, monkeypatch
):
    monkeypatch.setenv("MEMSESSION_TEST_REDIS_URL", redis_url)
    with gunicorn(control_dir, "--workers", str(WORKERS)) as server:
        signed_in, key = call(server.base, "/session/sign-in/?user=7", None)
        assert signed_in["user"] == "7"
        assert key is not None

        served_by: set[int] = set()
        for visits in range(1, MAX_REQUESTS + 1):
            answer, _ = call(server.base, "/session/make/", key)
            assert answer["visits"] == visits  # every worker sees every earlier visit
            served_by.add(answer["pid"])
            if len(served_by) == WORKERS:
                break
        assert len(served_by) == WORKERS

        signed_out, _ = call(server.base, "/session/sign-out/", key)
        assert signed_out["pid"] in served_by

        # The old cookie, replayed (a stale tab): no worker knows the session any more.
        after_logout: set[int] = set()
        for _ in range(MAX_REQUESTS):
            answer, _ = call(server.base, "/session/whoami/", key)
            assert (answer["user"], answer["visits"]) == (None, None)
            after_logout.add(answer["pid"])
            if after_logout == served_by:
                break
        assert after_logout == served_by


def test_preload_workers_all_serve_and_none_warns_of_a_split(redis_url, control_dir, monkeypatch):
    """The app uses the store at import, so the Redis services start in gunicorn's master before
    it forks: every worker serves every session, and none warns that sessions are split between
    processes (they are all in Redis)."""
    monkeypatch.setenv("MEMSESSION_TEST_REDIS_URL", redis_url)
    with gunicorn(
        control_dir, "--workers", str(WORKERS), "--preload", app="testsite.wsgi_touching"
    ) as server:
        _, key = call(server.base, "/session/sign-in/?user=7", None)
        served_by: set[int] = set()
        for visits in range(1, MAX_REQUESTS + 1):
            answer, _ = call(server.base, "/session/make/", key)
            assert answer["visits"] == visits
            served_by.add(answer["pid"])
            if len(served_by) == WORKERS:
                break
        log = server.log()
    assert len(served_by) == WORKERS
    assert "hold a session store" not in log
    assert "Traceback" not in log
