"""Concurrent requests lose no update (issue 24), over real HTTP on the memory engine: gunicorn,
two clients sharing one session cookie, one adding cart items, the other posting Django messages
(kept in the session), at the same time: in each round both requests load the session before
either saves (they meet in the view), so one of the two saves is always merged.

One worker with threads: the memory engine keeps sessions in the memory of one process (several
workers do not share them, see README "Deployment" and memsession.W001), so the concurrent
requests are threads of one process, as in production.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from http.cookies import SimpleCookie

import pytest
from test_gunicorn import get_json, gunicorn

pytestmark = pytest.mark.heavy

ROUNDS = 60


def open_session(base: str) -> str:
    """A new session's cookie header value."""
    with urllib.request.urlopen(f"{base}/session/make/", timeout=10) as response:
        cookie = SimpleCookie(response.headers["Set-Cookie"])
    return f"sessionid={cookie['sessionid'].value}"


def get_with(cookie: str, url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def test_cart_items_and_messages_posted_at_once_are_all_kept(control_dir):
    with gunicorn(
        control_dir, "--workers", "1", extra_env={"MEMSESSION_TEST_SESSION_MESSAGES": "1"}
    ) as server:
        cookie = open_session(server.base)
        failures: list[BaseException] = []

        def client(path: str, name: str) -> None:
            try:
                for n in range(ROUNDS):
                    get_with(cookie, f"{server.base}{path}{name}-{n}&meet=1")
            except BaseException as exc:
                failures.append(exc)

        clients = [
            threading.Thread(target=client, args=("/session/cart/?item=", "item")),
            threading.Thread(target=client, args=("/session/message/?text=", "message")),
        ]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        found = json.loads(get_with(cookie, f"{server.base}/session/cart-and-messages/"))
        merged = get_json(f"{server.base}/session/stats/")["merged"]
    assert failures == []
    assert found["cart"] == [{"sku": "tea", "qty": 1}] + [f"item-{n}" for n in range(ROUNDS)]
    assert found["messages"] == [f"message-{n}" for n in range(ROUNDS)]
    assert merged >= ROUNDS  # each round, both requests loaded before either saved
