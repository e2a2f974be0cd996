"""What the failover soaks share: visitors on threads (:class:`Traffic`) logging in, changing
their session and logging out against a real gunicorn, pressing again after a 503, everything
they were told kept (:class:`Answer`); visitors who stay logged in (:func:`stay`); and the checks
that no confirmed logout was undone and no confirmed login lost. Used by the Sentinel soak
(test_redis_failover_soak.py) and the Redis Cluster soak (test_redis_cluster_soak.py).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

from cluster_servers import wait_for
from test_gunicorn import Server

VISITORS = 4
RETRY_PAUSE = 0.05  # between a visitor's tries of a refused step (a user pressing again)
STAYERS = 5  # logins made before and after a fault, never logged out


def stay(base: str, label: str) -> dict[str, str]:
    """Log in ``STAYERS`` visitors who stay; their keys and users."""
    stayers = {}
    for number in range(STAYERS):
        user = f"{label}-{number}"
        answer = call(base, f"/session/sign-in/?user={user}", None)
        assert answer.status == 200, answer.status
        stayers[answer.session_key] = user
    return stayers


@dataclass
class Answer:
    path: str
    status: int  # HTTP status; 0 for no HTTP answer at all (a dropped connection)
    sent: float
    received: float
    pid: int | None = None
    body: dict = field(default_factory=dict)
    session_key: str | None = None  # the session cookie the response set ("" if it deleted it)


def call(base: str, path: str, session_key: str | None) -> Answer:
    """One request on a new connection (either worker may take it) with this session cookie."""
    request = urllib.request.Request(f"{base}{path}")
    if session_key:
        request.add_header("Cookie", f"sessionid={session_key}")
    sent = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, error.headers, error.read()
    except OSError:
        return Answer(path, 0, sent, time.monotonic())
    answer = Answer(path, status, sent, time.monotonic())
    cookies = SimpleCookie()
    for header in headers.get_all("Set-Cookie") or []:
        cookies.load(header)
    if "sessionid" in cookies:
        answer.session_key = cookies["sessionid"].value
    if status == 200:
        answer.body = json.loads(raw)
        answer.pid = answer.body.get("pid")
    return answer


class Traffic:
    """Visitors on threads, each: log in, change the session twice, log out, again and again,
    pressing again after a 503. Everything they were told is kept for the checks."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.answers: list[Answer] = []
        self.logins: dict[str, tuple[str, Answer]] = {}  # key -> (user, the 200 that logged in)
        self.logged_out: dict[str, Answer] = {}  # key -> the 200 that logged it out
        self.logout_refused: set[str] = set()  # keys whose logout got a 503 at least once
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.idle = threading.Semaphore(0)
        self.threads = [
            threading.Thread(target=self._visit, args=(number,), daemon=True)
            for number in range(VISITORS)
        ]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.running.set()
        for thread in self.threads:
            thread.join(60)

    def pause(self) -> None:
        """Until every visitor has finished its request in flight and waits."""
        self.running.clear()
        for _ in self.threads:
            assert self.idle.acquire(timeout=60), "a visitor did not pause"

    def resume(self) -> None:
        self.running.set()

    def _ask(self, path: str, key: str | None) -> Answer:
        answer = call(self.base, path, key)
        with self.lock:
            self.answers.append(answer)
        return answer

    def _step(self, path: str, key: str | None) -> Answer | None:
        """This step until it is served (None if the run ends first)."""
        while not self.stopping.is_set():
            if not self.running.is_set():
                self.idle.release()
                self.running.wait()
                continue
            answer = self._ask(path, key)
            if answer.status == 200:
                return answer
            if key and path.startswith("/session/sign-out/"):
                with self.lock:
                    self.logout_refused.add(key)
            time.sleep(RETRY_PAUSE)
        return None

    def _visit(self, number: int) -> None:
        rounds = 0
        while not self.stopping.is_set():
            rounds += 1
            user = f"{number}-{rounds}"
            answer = self._step(f"/session/sign-in/?user={user}", None)
            if answer is None:
                return
            key = answer.session_key
            assert key, "a login that set no cookie"
            with self.lock:
                self.logins[key] = (user, answer)
            for _ in range(2):
                if self._step("/session/make/", key) is None:
                    return
            answer = self._step("/session/sign-out/", key)
            if answer is None:
                return
            with self.lock:
                self.logged_out[key] = answer

    def served_since(self, moment: float) -> set[int]:
        with self.lock:
            return {a.pid for a in self.answers if a.status == 200 and a.sent > moment}


def until_served_by_every_worker(
    traffic: Traffic, since: float, timeout: float, workers: int
) -> set[int]:
    """Until each of the ``workers`` has served a visitor since ``since``; their pids."""

    def every_worker() -> set[int] | None:
        pids = traffic.served_since(since)
        return pids if len(pids) == workers else None

    return wait_for(every_worker, timeout, f"all {workers} workers to serve")


def check_no_logout_undone_and_no_login_lost(
    server: Server, traffic: Traffic, stayers: dict[str, str], unsure: tuple[float, float]
) -> None:
    """Every confirmed logout still holds; every confirmed login still holds its user: the
    stayers', and the visitors' not logged out since, nor confirmed within ``unsure`` (a span
    in which a replica may not have acknowledged it)."""
    assert traffic.logged_out, "no visitor logged out: the run proves nothing"
    for key in traffic.logged_out:
        answer = call(server.base, "/session/whoami/", key)
        assert answer.status == 200
        assert answer.body["user"] is None, "a confirmed logout was undone"
    for key, user in stayers.items():
        assert call(server.base, "/session/whoami/", key).body["user"] == user
    for key, (user, login) in traffic.logins.items():
        if key in traffic.logged_out or unsure[0] <= login.received <= unsure[1]:
            continue
        answer = call(server.base, "/session/whoami/", key)
        assert answer.status == 200
        if key in traffic.logout_refused:
            # A logout refused and not pressed again before the run ended: either state is
            # right, never another user.
            assert answer.body["user"] in (None, user)
        else:
            assert answer.body["user"] == user, "a confirmed login was lost"
