"""Sessions survive restarts of a real gunicorn: SIGTERM and start, HUP, kill -9 after a periodic
snapshot, bad files, and --preload with two workers."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from processes import run_command
from test_gunicorn import Server, gunicorn

pytestmark = pytest.mark.heavy


class Browser:
    """One visitor: keeps its session cookie, whichever server (port) it talks to."""

    def __init__(self) -> None:
        self.cookie: str | None = None

    def get(self, server: Server, path: str) -> dict:
        request = urllib.request.Request(f"{server.base}{path}")
        if self.cookie:
            request.add_header("Cookie", f"sessionid={self.cookie}")
        with urllib.request.urlopen(request, timeout=15) as response:
            assert response.status == 200
            for header in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = header.partition("=")
                if name.strip() == "sessionid":
                    value = rest.split(";", 1)[0].strip('"')
                    self.cookie = value or None  # an empty value deletes the cookie
            return json.loads(response.read())


@pytest.fixture
def snapshot_env(tmp_path: Path) -> dict[str, str]:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    return {"MEMSESSION_TEST_SNAPSHOT_PATH": str(directory / "sessions.snapshot")}


def visitors(server: Server) -> dict[str, Browser]:
    """An anonymous visitor with a cart, a logged-in one, and one whose session ends soon."""
    guest, member, brief = Browser(), Browser(), Browser()
    guest.get(server, "/session/make/?expiry=3600")
    member.get(server, "/session/make/")
    member.get(server, "/session/sign-in/?user=7")
    brief.get(server, "/session/make/?expiry=2")
    return {"guest": guest, "member": member, "brief": brief}


def test_sessions_survive_sigterm_and_start(control_dir, snapshot_env):
    with gunicorn(control_dir, "--workers", "1", extra_env=snapshot_env) as server:
        people = visitors(server)
    time.sleep(2.5)  # the brief session expires while the server is down
    with gunicorn(control_dir, "--workers", "1", extra_env=snapshot_env) as server:
        guest = people["guest"].get(server, "/session/whoami/")
        member = people["member"].get(server, "/session/whoami/")
        brief = people["brief"].get(server, "/session/whoami/")
    assert (guest["visits"], member["user"], brief["visits"]) == (1, "7", None)


def test_a_graceful_reload_with_hup_logs_nobody_out(control_dir, snapshot_env):
    """The old worker is still finishing a request (which changes its session) when the new one
    starts serving: the new one waits for the old one's final snapshot, so it sees every
    session, the change made after it started included."""
    options = ("--workers", "1", "--graceful-timeout", "20")
    with gunicorn(control_dir, *options, extra_env=snapshot_env) as server:
        people = visitors(server)
        old_worker = people["guest"].get(server, "/session/whoami/")["pid"]
        slow: dict = {}
        request = threading.Thread(
            target=lambda: slow.update(
                people["member"].get(server, "/session/slow-step/?seconds=3")
            )
        )
        request.start()
        time.sleep(0.5)
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        seen = people["guest"].get(server, "/session/whoami/")
        while seen["pid"] == old_worker and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = people["guest"].get(server, "/session/whoami/")
        request.join(30)
        member = people["member"].get(server, "/session/whoami/")
    assert (slow["pid"], seen["pid"] != old_worker) == (old_worker, True)
    assert (seen["visits"], member["user"], member["visits"], member["pid"]) == (
        1,
        "7",
        2,
        seen["pid"],
    )


def test_kill_9_after_a_periodic_snapshot_keeps_sessions_and_logouts(control_dir, snapshot_env):
    snapshot_env = {**snapshot_env, "MEMSESSION_TEST_SNAPSHOT_INTERVAL": "1"}
    path = Path(snapshot_env["MEMSESSION_TEST_SNAPSHOT_PATH"])
    with gunicorn(control_dir, "--workers", "1", extra_env=snapshot_env) as server:
        stays, leaves = Browser(), Browser()
        for person, user in ((stays, "1"), (leaves, "2")):
            person.get(server, "/session/make/")
            person.get(server, f"/session/sign-in/?user={user}")
        made = time.time()
        deadline = time.monotonic() + 20
        while not (path.exists() and path.stat().st_mtime > made + 0.01):
            assert time.monotonic() < deadline, "no periodic snapshot"
            time.sleep(0.1)
        old_key = leaves.cookie
        leaves.get(server, "/session/sign-out/")  # a logout after the last snapshot
        leaves.cookie = old_key  # a stale tab (or a thief) still holds the old key
        worker = stays.get(server, "/session/whoami/")["pid"]
        os.kill(server.process.pid, signal.SIGKILL)  # the master first: no new worker
        os.kill(worker, signal.SIGKILL)
        server.process.wait(10)
    with gunicorn(control_dir, "--workers", "1", extra_env=snapshot_env) as server:
        kept = stays.get(server, "/session/whoami/")
        gone = leaves.get(server, "/session/whoami/")
    assert (kept["user"], gone["user"]) == ("1", None)


@pytest.mark.parametrize("damage", ["tampered", "truncated", "foreign"])
def test_a_bad_snapshot_starts_an_empty_store_with_one_log_line(control_dir, snapshot_env, damage):
    path = Path(snapshot_env["MEMSESSION_TEST_SNAPSHOT_PATH"])
    foreign = {"MEMSESSION_TEST_SECRET_KEY": "another project"} if damage == "foreign" else {}
    with gunicorn(control_dir, "--workers", "1", extra_env={**snapshot_env, **foreign}) as server:
        people = visitors(server)
    data = path.read_bytes()
    if damage == "tampered":
        path.write_bytes(data[:60] + bytes([data[60] ^ 0x20]) + data[61:])
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    with gunicorn(control_dir, "--workers", "1", extra_env=snapshot_env) as server:
        guest = people["guest"].get(server, "/session/whoami/")
        member = people["member"].get(server, "/session/whoami/")
        log = server.log()
    assert (guest["visits"], member["user"]) == (None, None)
    warnings = [line for line in log.splitlines() if "snapshot" in line and "refused" in line]
    assert len(warnings) == 1
    assert list(path.parent.glob("sessions.snapshot.rejected-*"))


def test_preload_with_two_workers_restores_each_session_in_one_worker_only(
    control_dir, snapshot_env
):
    options = ("--workers", "2", "--preload")
    app = "testsite.wsgi_touching"  # the master builds a store (and reads the file) at import
    with gunicorn(control_dir, *options, app=app, extra_env=snapshot_env) as server:
        # Sessions until both workers hold some: the owner of the file among them.
        holders: set[int] = set()
        deadline = time.monotonic() + 30
        while len(holders) < 2 and time.monotonic() < deadline:
            holders.add(Browser().get(server, "/session/make/?expiry=3600")["pid"])
        assert len(holders) == 2, "the second worker never took a request"
        before = run_command("snapshotsessions", "--json", control_dir=control_dir)
    written = json.loads(before.stdout)["total"]["sessions"]
    assert written > 0
    with gunicorn(control_dir, *options, app=app, extra_env=snapshot_env) as server:
        pids: set[int] = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(Browser().get(server, "/session/stats/")["pid"])
        after = run_command("prunesessions", "--dry-run", "--json", control_dir=control_dir)
    processes = json.loads(after.stdout)["processes"]
    assert {p["pid"] for p in processes} == pids
    # Every restored session is in one worker: no copies in the other (nor in the master).
    assert sum(p["entries"] for p in processes) == written
    assert sorted(p["entries"] for p in processes)[0] == 0


def test_a_fifo_at_the_snapshot_path_is_refused_and_the_server_serves(control_dir, snapshot_env):
    """Nobody writes into the FIFO: a server that opened it would wait for ever at its first
    request. It is set aside with one WARNING, and the snapshot written at shutdown is a private
    regular file in its place."""
    path = Path(snapshot_env["MEMSESSION_TEST_SNAPSHOT_PATH"])
    os.mkfifo(path, 0o600)
    with gunicorn(control_dir, "--workers", "1", extra_env=snapshot_env) as server:
        guest = Browser()
        made = guest.get(server, "/session/make/?expiry=3600")
        log = server.log()
    assert made["visits"] == 1
    warnings = [line for line in log.splitlines() if "snapshot" in line and "refused" in line]
    assert len(warnings) == 1 and "it is a FIFO" in warnings[0]
    (aside,) = path.parent.glob("sessions.snapshot.rejected-*")
    assert stat.S_ISFIFO(aside.lstat().st_mode)
    assert stat.S_ISREG(path.lstat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
