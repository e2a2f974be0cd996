"""The control channel: a listener per process that nothing can knock out, signed frames, typed
replies, and a client that never mistakes a live process for a dead one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings
from processes import store_process

import django_memsession
from django_memsession import SessionStore, control, runtime, serving
from django_memsession import listener as listener_module
from django_memsession.listener import Listener
from django_memsession.messages import SESSIONS_PAGE, Reply, Request, to_json


@pytest.fixture
def listener(control_dir: str) -> Iterator[Listener]:
    started = runtime.start_listener()
    assert started is not None
    yield started
    runtime.stop_listener()


def send_raw(path: Path, data: bytes, *, shut: bool = True) -> bytes:
    """Send bytes as they are; return what comes back before the listener closes."""
    chunks = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(path))
        try:
            conn.sendall(data)
            if shut:
                conn.shutdown(socket.SHUT_WR)
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
    return b"".join(chunks)


def reply_of(raw: bytes) -> dict:
    """The JSON body of a reply frame (length, MAC, body)."""
    return json.loads(raw[control.FRAME.size + control.MAC_SIZE :])


def still_serves(listener: Listener, timeout: float = 2.0) -> bool:
    return control.request(listener.path, "report", timeout=timeout).pid == os.getpid()


def signed(body: bytes) -> bytes:
    """A frame signed with this project's key around any body (as a buggy or hostile peer that
    holds the key could send)."""
    return control.frame(control._mac("request", body), body)


class FakePeer:
    """A socket in the control dir that answers like a peer would, or not at all."""

    def __init__(self, control_dir: str, pid: int, reply: bytes | None) -> None:
        self.path = Path(control_dir) / f"{control.project_id()}-{pid}.sock"
        self.reply = reply
        self.sign_with: str | None = None  # another SECRET_KEY, to forge replies
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            data = b""
            while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            if self.reply is None:
                time.sleep(5)  # hung
                return
            nonce = json.loads(data[4 + control.MAC_SIZE :])["nonce"]
            body = self.reply
            with override_settings(**({"SECRET_KEY": self.sign_with} if self.sign_with else {})):
                mac = control._mac("reply", nonce.encode() + b"\0" + body)
            conn.sendall(control.frame(mac, body))

    def close(self) -> None:
        self.sock.close()


# -- the socket ------------------------------------------------------------------------------------


def test_socket_is_0600_in_a_0700_directory(listener):
    assert stat.S_IMODE(listener.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(listener.path.parent.stat().st_mode) == 0o700


def test_socket_name_is_short_and_hashed(listener):
    project, pid = listener.path.name.removesuffix(".sock").split("-")
    assert (len(project), int(pid)) == (12, os.getpid())


def test_project_id_depends_on_the_secret_key():
    first = control.project_id()
    with override_settings(SECRET_KEY="another project"):
        assert control.project_id() != first


def test_an_authenticated_request_gets_the_typed_report(listener):
    report = control.request(listener.path, "report")
    assert (report.pid, report.stats.pid, report.result) == (os.getpid(), os.getpid(), None)


def test_a_prune_request_prunes_and_says_what_it_removed(listener, global_clock):
    session = SessionStore()
    session.set_expiry(5)
    session.save()
    global_clock.advance(6)
    report = control.request(listener.path, "prune")
    assert report.result is not None
    assert (report.result.removed, report.stats.entries) == (1, 0)


# -- refusals: signed, fresh, once ----------------------------------------------------------------


def test_a_request_with_another_secret_key_is_refused(listener, caplog):
    with override_settings(SECRET_KEY="not this project's key"):
        forged = control.make_request("prune")
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        reply = send_raw(listener.path, forged)
    assert reply_of(reply)["ok"] is False
    assert "bad MAC" in caplog.text
    assert still_serves(listener)


def test_a_stale_request_is_refused(listener, caplog):
    stale = control.make_request("report", sent_at=time.time() - 3600)
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        reply = send_raw(listener.path, stale)
    assert reply_of(reply)["ok"] is False
    assert "stale" in caplog.text


def test_a_request_from_the_future_is_refused(listener, caplog):
    ahead = control.make_request("report", sent_at=time.time() + 600)
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        reply = send_raw(listener.path, ahead)
    assert reply_of(reply)["ok"] is False
    assert "from the future" in caplog.text


def test_a_replayed_request_is_refused(listener, caplog):
    frame = control.make_request("prune")
    first = send_raw(listener.path, frame)
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        second = send_raw(listener.path, frame)
    assert (reply_of(first)["ok"], reply_of(second)["ok"]) == (True, False)
    assert "replayed" in caplog.text


def test_an_unknown_command_is_refused(listener):
    request = Request(command="shutdown", sent_at=time.time(), nonce="n" * 32)
    assert reply_of(send_raw(listener.path, signed(to_json(request))))["ok"] is False
    assert still_serves(listener)


# -- nothing knocks it out --------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x05hello",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x00\x00",
        b"\x00\x00\x00\x10" + b'{"command": "st',
        b"\x00\x00\x00\x02[]",
        # unsigned JSON nested 2,000 deep: refused on its MAC, never parsed
        len(b"[" * 2000 + b"]" * 2000 + b"x" * 32).to_bytes(4, "big")
        + b"x" * 32
        + b"[" * 2000
        + b"]" * 2000,
        # unsigned, with a 400-digit timestamp
        b"\x00\x00\x01\x00" + b"x" * 32 + b'{"sent_at": ' + b"9" * 400 + b"}",
    ],
    ids=["short", "http", "truncated-header", "truncated-body", "no-mac", "deep", "huge-int"],
)
def test_garbage_is_refused_and_the_listener_goes_on(listener, garbage):
    send_raw(listener.path, garbage)
    assert still_serves(listener)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 1000 + b"]" * 1000,
        b'{"command": "report", "sent_at": ' + b"9" * 400 + b', "nonce": "x"}',
        b'{"command": "report", "sent_at": NaN, "nonce": "x"}',
        b'{"command": "report", "nonce": "x"}',
        b'{"command": ["report"], "sent_at": 1, "nonce": "x"}',
        b"\xff\xfe not utf-8",
    ],
    ids=["deep", "huge-int", "nan", "missing-field", "wrong-type", "not-utf8"],
)
def test_signed_but_malformed_requests_are_refused_and_the_listener_goes_on(listener, body):
    assert reply_of(send_raw(listener.path, signed(body)))["ok"] is False
    assert still_serves(listener)


def test_a_huge_length_prefix_is_refused_without_reading_it(listener, caplog):
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        send_raw(listener.path, b"\xff\xff\xff\xff" + b"x" * 100)
    assert "frame length out of bounds" in caplog.text
    assert still_serves(listener)


def test_refusals_never_log_the_request(listener, caplog):
    with caplog.at_level(logging.DEBUG, logger="django_memsession"):
        send_raw(listener.path, b"\x00\x00\x00\x30" + b"secret" * 8)
    assert "secret" not in caplog.text


def test_a_flood_of_garbage_is_logged_a_few_times_not_once_per_frame(listener, caplog):
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        for _ in range(50):
            send_raw(listener.path, b"\x00\x00\x00\x40" + b"x" * 64)
    assert 1 <= caplog.text.count("bad MAC") <= 2
    assert still_serves(listener)


def test_a_handler_that_raises_anything_is_an_error_reply_and_the_listener_goes_on(
    listener, monkeypatch
):
    class Surprise(Exception):  # not one of the types the old listener caught
        pass

    calls = {"n": 0}
    real = listener.handler

    def handler(request):
        calls["n"] += 1
        if calls["n"] == 1:
            raise Surprise("surprise")
        return real(request)

    monkeypatch.setattr(listener, "handler", handler)
    with pytest.raises(control.Refused):
        control.request(listener.path, "report")
    assert still_serves(listener)


def test_a_failure_of_the_loop_itself_is_logged_and_the_loop_starts_again(
    listener, monkeypatch, caplog
):
    real = Listener._expire
    calls = {"n": 0}

    def fail_once(self, *args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RecursionError("deep")
        return real(self, *args)

    with caplog.at_level(logging.ERROR, logger="django_memsession"):
        monkeypatch.setattr(Listener, "_expire", fail_once)
        deadline = time.monotonic() + 5
        while calls["n"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "listener failed; it starts again" in caplog.text
    assert still_serves(listener)


def test_slow_clients_do_not_delay_a_valid_request(listener):
    """Clients trickling a byte at a time, each holding a connection: a valid request is still
    answered (the old listener served one connection at a time, 2 s per read)."""
    trickling = []
    for _ in range(8):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(listener.path))
        conn.send(b"\x00")
        trickling.append(conn)
    try:
        assert still_serves(listener, timeout=1.0)
    finally:
        for conn in trickling:
            conn.close()


def test_an_idle_client_is_dropped_at_its_deadline(listener, monkeypatch):
    monkeypatch.setattr(listener_module, "REQUEST_DEADLINE", 0.3)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(listener.path))
        conn.send(b"\x00\x00")  # half a header, then nothing
        assert conn.recv(100) == b""  # closed by the listener, well before our 5 s


def test_more_connections_than_the_limit_wait_their_turn_and_are_served(listener):
    """Idle connections fill every slot: a valid request waits in the backlog until their
    deadline frees one, then is answered."""
    held = []
    for _ in range(listener_module.MAX_CONNECTIONS + 10):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(listener.path))
        held.append(conn)
    try:
        assert still_serves(listener, timeout=listener_module.REQUEST_DEADLINE + 3)
    finally:
        for conn in held:
            conn.close()


def test_a_flood_of_junk_connections_does_not_stop_valid_requests(listener, caplog):
    """Four threads connecting, sending an unsigned frame and closing, as fast as they can."""
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as conn:
                conn.connect(str(listener.path))
                conn.send(b"\0\0\0\x40" + b"z" * 64)

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        with caplog.at_level(logging.ERROR, logger="django_memsession"):
            answered = [still_serves(listener) for _ in range(20)]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert all(answered)
    assert "listener failed" not in caplog.text


def test_a_removed_socket_file_is_bound_again(listener):
    listener.path.unlink()
    deadline = time.monotonic() + 5
    while not listener.path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert still_serves(listener)


# -- the client ---------------------------------------------------------------------------------


def test_gather_reaches_another_process_and_this_one(control_dir):
    runtime.get_store()
    with store_process(control_dir) as pid:
        gathered = runtime.gather("report")
    assert [report.pid for report in gathered.processes] == sorted([os.getpid(), pid])
    assert gathered.split


def test_a_peer_reply_without_a_field_is_that_processs_error(control_dir):
    broken = to_json(Reply(ok=True)).replace(b'"report":null', b'"report":{"pid":1}')
    peer = FakePeer(control_dir, 999_999_1, broken)
    try:
        gathered = runtime.gather("report")
    finally:
        peer.close()
    assert [report.pid for report in gathered.processes] == [os.getpid()]
    (error,) = gathered.errors
    assert error.startswith("process 9999991 did not answer: malformed reply:")
    assert "missing" in error


def test_a_peer_reply_signed_with_another_key_is_refused(control_dir):
    peer = FakePeer(control_dir, 999_999_2, to_json(Reply(ok=False, error="x")))
    peer.sign_with = "another project's key"
    try:
        gathered = runtime.gather("report")
    finally:
        peer.close()
    assert [report.pid for report in gathered.processes] == [os.getpid()]
    (error,) = gathered.errors
    assert "not signed by this project" in error


def test_a_fan_out_ends_within_its_timeout_however_many_peers_hang(control_dir):
    peers = [FakePeer(control_dir, 888_000 + n, None) for n in range(8)]
    started = time.monotonic()
    try:
        gathered = runtime.gather("prune", timeout=1.0)
    finally:
        for peer in peers:
            peer.close()
    # Asked one after the other, eight hung peers would take eight timeouts.
    assert time.monotonic() - started < 4.0
    assert len(gathered.errors) == 8
    assert all("did not answer within 1 s" in error for error in gathered.errors)


async def test_aclear_expired_does_not_block_the_event_loop(control_dir, monkeypatch):
    import asyncio

    monkeypatch.setattr(control, "PRUNE_TIMEOUT", 1.0)
    peer = FakePeer(control_dir, 777_001, None)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await SessionStore.aclear_expired()
    finally:
        task.cancel()
        peer.close()
    assert ticks >= 5  # the loop ran while the fan-out waited a second on the hung peer


def test_sockets_nothing_listens_on_are_removed(control_dir):
    path = Path(control_dir) / f"{control.project_id()}-{os.getpid() + 100000}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as leftover:
        leftover.bind(str(path))
    gathered = runtime.gather("report")
    assert (path.exists(), gathered.errors) == (False, [])


def test_a_live_listener_is_never_removed_even_if_its_pid_looks_dead(control_dir, monkeypatch):
    """From another PID namespace, kill(pid, 0) says ESRCH for a live server."""

    def esrch(pid: int, signal: int) -> None:
        raise ProcessLookupError

    with store_process(control_dir) as pid:
        monkeypatch.setattr(os, "kill", esrch)
        gathered = runtime.gather("report")
        monkeypatch.undo()
        assert pid in [report.pid for report in gathered.processes]
        assert control.socket_path(pid).exists()


def test_another_projects_sockets_are_left_alone(control_dir):
    other = Path(control_dir) / f"0123456789ab-{os.getpid()}.sock"
    other.touch()
    runtime.gather("report")
    assert other.exists()


def test_control_false_means_this_process_only(control_dir):
    runtime.get_store()
    with override_settings(MEMSESSION_CONTROL=False):
        assert runtime.start_listener() is None
        gathered = runtime.gather("report")
    assert (gathered.channel_on, [r.pid for r in gathered.processes]) == (False, [os.getpid()])


# -- the control directory --------------------------------------------------------------------


def test_a_directory_open_to_others_turns_the_channel_off(control_dir, caplog, monkeypatch):
    monkeypatch.setattr(serving, "_warned", set())
    os.chmod(control_dir, 0o755)
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        assert runtime.start_listener() is None
    assert "open to other users" in caplog.text


def test_a_refused_directory_is_reported_by_gather(control_dir):
    os.chmod(control_dir, 0o755)
    gathered = runtime.gather("report")
    assert gathered.problem is not None
    assert "open to other users" in gathered.problem


@pytest.mark.skipif(os.getuid() != 0, reason="giving a symlink to another user needs root")
def test_a_symlink_owned_by_another_user_is_refused(control_dir, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(control_dir)
    os.lchown(link, 65534, -1)
    problem = control.dir_problem(link, create=False)
    assert problem is not None and "symlink owned by another user" in problem


def test_a_symlink_of_ours_to_a_private_directory_is_fine(control_dir, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(control_dir)
    assert control.dir_problem(link, create=False) is None


def test_an_unwritable_directory_is_logged_once_and_not_fatal(caplog, monkeypatch):
    monkeypatch.setattr(serving, "_warned", set())
    with (
        override_settings(MEMSESSION_CONTROL_DIR="/proc/memsession-cannot-exist"),
        caplog.at_level(logging.WARNING, logger="django_memsession"),
    ):
        assert runtime.start_listener() is None
        assert runtime.start_listener() is None
    assert caplog.text.count("Session control channel off") == 1


def test_a_socket_path_over_the_limit_turns_the_channel_off(caplog, monkeypatch, tmp_path):
    monkeypatch.setattr(serving, "_warned", set())
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with (
        override_settings(MEMSESSION_CONTROL_DIR=str(deep)),
        caplog.at_level(logging.WARNING, logger="django_memsession"),
    ):
        assert runtime.start_listener() is None
    assert "longer than" in caplog.text


# -- who listens --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["manage.py", "runserver"], True),
        (["manage.py", "migrate"], False),
        (["manage.py", "prunesessions"], False),
        (["/usr/bin/django-admin", "shell"], False),
        (["/srv/venv/bin/gunicorn", "site.wsgi"], True),
        (["/srv/venv/bin/uvicorn", "site.asgi:application"], True),
        (["/srv/venv/lib/python3.12/site-packages/django/__main__.py", "migrate"], False),
        (["/srv/venv/lib/python3.12/site-packages/django/__main__.py", "runserver"], True),
        # python -m gunicorn from a virtualenv whose path says "django"
        (["/srv/django-shop/venv/lib/python3.12/site-packages/gunicorn/__main__.py"], True),
        # a test runner is a program like any other: the pytest plugin says it does not serve
        (["/srv/venv/bin/pytest"], True),
    ],
)
def test_who_listens_by_default(monkeypatch, argv, expected):
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(serving, "_listening", None)
    assert serving.should_listen() is expected


def test_the_pytest_plugin_says_a_test_run_does_not_listen():
    assert serving.should_listen() is False


def test_no_module_changes_behaviour_because_pytest_is_imported():
    package = Path(runtime.__file__).parent
    for source in package.rglob("*.py"):
        if source.name != "pytest_plugin.py":
            assert '"pytest"' not in source.read_text(), source


UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]


@pytest.mark.heavy
def test_prunesessions_from_another_pid_namespace_leaves_live_sockets_alone(control_dir):
    from processes import TESTS_DIR

    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("unshare --pid is not permitted here")
    env = {
        **os.environ,
        "MEMSESSION_CONTROL_DIR": control_dir,
        "DJANGO_SETTINGS_MODULE": "testsite.settings",
        "PYTHONPATH": str(TESTS_DIR),
    }
    with store_process(control_dir) as pid:
        result = subprocess.run(
            [*UNSHARE, sys.executable, "-m", "django", "prunesessions", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        still_there = control.socket_path(pid).exists()
    assert result.returncode == 0, result.stderr
    assert [p["pid"] for p in json.loads(result.stdout)["processes"]] == [pid]
    assert still_there


# -- who is logged in ---------------------------------------------------------------------------


def test_a_users_sessions_in_another_process_come_in_pages_and_end(control_dir):
    count = 2 * SESSIONS_PAGE + 7  # three replies
    with store_process(control_dir, extra_env={"MEMSESSION_TEST_LOGINS": f"5:{count}"}) as pid:
        found = django_memsession.user_sessions("5")
        assert len(found) == count == len({record.id for record in found})
        assert {record.pid for record in found} == {pid}
        assert django_memsession.end_user_sessions("5", keep=None) == count
        assert django_memsession.user_sessions("5") == []


def test_a_session_id_of_another_user_ends_nothing_in_another_process(control_dir):
    with store_process(control_dir, extra_env={"MEMSESSION_TEST_LOGINS": "5:2"}):
        (first, _) = django_memsession.user_sessions("5")
        assert django_memsession.end_session("6", first.id) == 0
        assert django_memsession.end_session("5", first.id) == 1
        assert [record.id for record in django_memsession.user_sessions("5")] != [first.id]


def test_user_requests_carry_their_fields_and_no_key():
    request = control.new_request("end", fields={"user": "5", "keep": "ab" * 16})
    assert (request.user, request.keep, request.session_id) == ("5", "ab" * 16, None)
    assert control.open_request(control.sign_request(request)[4:]) == request


def test_ending_after_a_password_change_does_not_wait_for_a_hung_peer(control_dir, monkeypatch):
    """This process's sessions end before the call returns; the hung peer is asked on a thread
    that is still waiting for it when the request goes on."""
    from django_memsession.everywhere import end_user_sessions_in_background

    monkeypatch.setattr(control, "REPORT_TIMEOUT", 1.0)
    session = SessionStore()
    session["_auth_user_id"] = "5"
    session.save()
    peer = FakePeer(control_dir, 666_001, None)
    try:
        thread = end_user_sessions_in_background("5", reason="password")
        assert thread is not None and thread.is_alive()  # still waiting on the peer
        assert not SessionStore().exists(session.session_key)  # ended here already
        thread.join(10)
    finally:
        peer.close()
    assert not thread.is_alive()
