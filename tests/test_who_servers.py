"""Who is logged in across a real gunicorn's workers (``--preload``, two workers): a user's
sessions are listed from both, and ended in both, from another process. Which worker serves a
request is gunicorn's choice, so what each worker holds is read through the control channel."""

from __future__ import annotations

import time

import pytest
from test_gunicorn import gunicorn
from test_snapshot_servers import Browser

import django_memsession

pytestmark = pytest.mark.heavy


def test_a_users_sessions_in_two_workers_are_listed_and_ended_from_outside(control_dir):
    with gunicorn(control_dir, "--workers", "2", "--preload") as server:
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
        assert {record.pid for record in found} == pids
        assert len(found) == len(browsers)
        assert not any(b.cookie in str(found) for b in browsers)

        ended = django_memsession.end_user_sessions(42)
        assert ended == len(browsers)
        # Whichever worker a request reaches, none of these sessions is there any more.
        assert all(b.get(server, "/session/whoami/")["user"] is None for b in browsers)
        assert django_memsession.user_sessions("42") == []
        assert len(django_memsession.user_sessions("43")) == 1  # another user's: untouched
