"""The control channel: a listener per process, authenticated requests, dead sockets removed."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings
from processes import store_process

from django_memsession import control
from django_memsession.runtime import get_store


@pytest.fixture
def listener(control_dir: str) -> Iterator[control.Listener]:
    get_store()
    started = control.start_listener()
    assert started is not None
    yield started
    control.stop_listener()


def send_raw(path: Path, data: bytes) -> bytes:
    """Send bytes as they are; return what comes back before the listener closes.

    A listener that closes with unread input resets the connection (TCP-like behaviour of Unix
    sockets on Linux), which may also drop its short refusal: that counts as no reply.
    """
    chunks = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(path))
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
    return b"".join(chunks)


def still_serves(listener: control.Listener) -> bool:
    return control.request(listener.path, "stats")["pid"] == os.getpid()


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


def test_an_authenticated_request_gets_the_report(listener):
    report = control.request(listener.path, "stats")
    assert report["pid"] == os.getpid()
    assert "pruner" in report


def test_a_prune_request_prunes_and_says_what_it_removed(listener, global_clock):
    from django_memsession import SessionStore

    session = SessionStore()
    session.set_expiry(5)
    session.save()
    global_clock.advance(6)
    report = control.request(listener.path, "prune")
    assert (report["result"]["removed"], report["entries"]) == (1, 0)


def test_a_request_with_another_secret_key_is_refused(listener, caplog):
    with override_settings(SECRET_KEY="not this project's key"):
        forged = control.make_request("prune")
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        reply = send_raw(listener.path, forged)
    assert b'"ok": false' in reply
    assert "bad MAC" in caplog.text
    assert still_serves(listener)


def test_a_stale_request_is_refused(listener, caplog):
    stale = control.make_request("stats", sent_at=time.time() - 3600)
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        reply = send_raw(listener.path, stale)
    assert b'"ok": false' in reply
    assert "stale" in caplog.text
    assert still_serves(listener)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x05hello",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x00\x00",
        b"\x00\x00\x00\x10" + b'{"command": "st',
        b"\x00\x00\x00\x02[]",
    ],
)
def test_garbage_is_refused_and_the_listener_goes_on(listener, garbage):
    send_raw(listener.path, garbage)
    assert still_serves(listener)


def test_a_huge_length_prefix_is_refused_without_reading_it(listener, caplog):
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        send_raw(listener.path, b"\xff\xff\xff\xff" + b"x" * 100)
    assert "over the limit" in caplog.text
    assert still_serves(listener)


def test_refusals_never_log_the_request(listener, caplog):
    with caplog.at_level(logging.DEBUG, logger="django_memsession"):
        send_raw(listener.path, b"\x00\x00\x00\x0csecretsecret")
    assert "secret" not in caplog.text


def test_gather_reaches_another_process_and_this_one(control_dir):
    get_store()
    with store_process(control_dir) as pid:
        gathered = control.gather("stats")
    assert sorted(report["pid"] for report in gathered.processes) == sorted([os.getpid(), pid])
    assert gathered.split


def test_sockets_of_dead_processes_are_removed(control_dir):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = Path(control_dir) / f"{control.project_id()}-{int(dead.stdout)}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as leftover:
        leftover.bind(str(path))
    control.gather("stats")
    assert not path.exists()


def test_a_socket_nobody_listens_on_is_removed(control_dir):
    # A live pid whose socket file is stale (its process restarted, or the pid was reused).
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    ) as sleeper:
        path = Path(control_dir) / f"{control.project_id()}-{sleeper.pid}.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as leftover:
            leftover.bind(str(path))
        gathered = control.gather("stats")
        sleeper.stdin.close()
    assert (path.exists(), gathered.errors) == (False, [])


def test_another_projects_sockets_are_left_alone(control_dir):
    other = Path(control_dir) / f"0123456789ab-{os.getpid()}.sock"
    other.touch()
    control.gather("stats")
    assert other.exists()


def test_a_directory_open_to_others_turns_the_channel_off(control_dir, caplog, monkeypatch):
    monkeypatch.setattr(control, "_warned", set())
    os.chmod(control_dir, 0o755)
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        assert control.start_listener() is None
    assert "must belong to this user and be private" in caplog.text


def test_an_unwritable_directory_is_logged_once_and_not_fatal(caplog, monkeypatch):
    monkeypatch.setattr(control, "_warned", set())
    with (
        override_settings(MEMSESSION_CONTROL_DIR="/proc/memsession-cannot-exist"),
        caplog.at_level(logging.WARNING, logger="django_memsession"),
    ):
        assert control.start_listener() is None
        assert control.start_listener() is None
    assert caplog.text.count("Session control channel off") == 1


def test_a_socket_path_over_the_limit_turns_the_channel_off(caplog, monkeypatch, tmp_path):
    monkeypatch.setattr(control, "_warned", set())
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with (
        override_settings(MEMSESSION_CONTROL_DIR=str(deep)),
        caplog.at_level(logging.WARNING, logger="django_memsession"),
    ):
        assert control.start_listener() is None
    assert "longer than" in caplog.text


def test_control_false_means_this_process_only(control_dir):
    get_store()
    with override_settings(MEMSESSION_CONTROL=False):
        assert control.start_listener() is None
        gathered = control.gather("stats")
    assert (gathered.channel_on, [r["pid"] for r in gathered.processes]) == (False, [os.getpid()])


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
    ],
)
def test_who_listens(monkeypatch, argv, expected):
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delitem(sys.modules, "pytest")
    assert control.should_listen() is expected


def test_a_test_run_does_not_listen():
    assert control.should_listen() is False
