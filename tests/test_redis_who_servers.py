"""Who is logged in across a real gunicorn's two workers on the Redis engine: sessions signed in
on either worker are listed and ended from another process, through the shared index (no control
channel), and a session signed out on one worker leaves the index at once."""

from __future__ import annotations

import time

import pytest
from test_gunicorn import gunicorn
from test_snapshot_servers import Browser

import django_memsession
from django_memsession.redis.store import get_store

pytestmark = [pytest.mark.heavy, pytest.mark.usefixtures("redis_url")]


def test_sessions_signed_in_on_two_workers_are_listed_and_ended_from_outside(
    redis_url, control_dir
):
    env = {"MEMSESSION_TEST_REDIS_URL": redis_url}
    with gunicorn(control_dir, "--workers", "2", "--preload", extra_env=env) as server:
        browsers: list[Browser] = []
        pids: set[int] = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            browser = Browser()
            pids.add(browser.get(server, "/session/sign-in/?user=42")["pid"])
            browsers.append(browser)
        assert len(pids) == 2, "the second worker never took a request"
        stranger = Browser()
        stranger.get(server, "/session/sign-in/?user=43")

        found = django_memsession.user_sessions("42")
        assert len(found) == len(browsers)
        assert not any(b.cookie in str(found) for b in browsers)

        leaving = browsers.pop()
        leaving.get(server, "/session/sign-out/")
        assert len(django_memsession.user_sessions("42")) == len(browsers)
        assert len(get_store().client.hkeys(get_store().index.users_key("42"))) == len(browsers)

        assert django_memsession.end_user_sessions(42) == len(browsers)
        # Whichever worker a request reaches, none of these sessions is there any more.
        assert all(b.get(server, "/session/whoami/")["user"] is None for b in browsers)
        assert django_memsession.user_sessions("42") == []
        assert len(django_memsession.user_sessions("43")) == 1  # another user's: untouched
