"""Fork safety: a child forked while another thread holds the store's lock (gunicorn
``--preload`` forks a master that may hold a live store) gets a working store, not a deadlock."""

from __future__ import annotations

import os
import threading
import time
import warnings

import pytest

from django_memsession import SessionStore, stats
from django_memsession.runtime import get_store

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")

CHILD_DEADLINE = 20.0


def run_in_child(body) -> int:
    """Fork; run ``body()`` in the child and exit with its result (1 on any exception).

    Returns the child's exit status, waiting at most CHILD_DEADLINE seconds (a deadlocked child
    is killed and reported as -1).
    """
    with warnings.catch_warnings():
        # Python 3.12+ warns that fork() in a threaded process may deadlock: that is the point.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            code = body()
        finally:
            os._exit(code)
    deadline = time.monotonic() + CHILD_DEADLINE
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -1


def sessions_work() -> int:
    """In the child: save, load and count sessions; 0 when all of it works."""
    session = SessionStore()
    session["child"] = os.getpid()
    session.save()
    loaded = SessionStore(session.session_key)["child"] == os.getpid()
    figures = stats()
    accounted = figures["bytes"] == get_store().accounted_bytes()
    return 0 if loaded and accounted and figures["pid"] == os.getpid() else 2


def test_a_child_forked_while_another_thread_holds_the_lock_has_a_working_store():
    parent_session = SessionStore()
    parent_session["parent"] = True
    parent_session.save()
    store = get_store()
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with store.lock:
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    holding.wait(5)
    try:
        status = run_in_child(sessions_work)
    finally:
        release.set()
        holder.join(5)
    assert status == 0


def test_a_child_forked_while_the_store_is_idle_keeps_the_parents_sessions():
    parent_session = SessionStore()
    parent_session["parent"] = True
    parent_session.save()
    key = parent_session.session_key

    def parents_session_is_there() -> int:
        return 0 if SessionStore(key).get("parent") is True and sessions_work() == 0 else 3

    assert run_in_child(parents_session_is_there) == 0


def test_the_parent_store_still_works_after_a_fork():
    assert run_in_child(lambda: 0) == 0
    session = SessionStore()
    session["after"] = 1
    session.save()
    assert SessionStore(session.session_key)["after"] == 1


def test_a_child_makes_none_of_the_session_keys_its_parent_makes():
    from django_memsession.sessionbase import new_session_key

    new_session_key()  # the parent holds a batch of keys made ahead
    read_end, write_end = os.pipe()

    def child() -> int:
        os.close(read_end)
        os.write(write_end, "".join(new_session_key() for _ in range(200)).encode())
        return 0

    assert run_in_child(child) == 0
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    child_keys = {text[start : start + 32] for start in range(0, len(text), 32)}
    parent_keys = {new_session_key() for _ in range(200)}
    assert len(child_keys) == 200
    assert not child_keys & parent_keys
