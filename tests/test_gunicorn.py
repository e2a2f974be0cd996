"""A real gunicorn serving the test site: prunesessions and clearsessions reach its memory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import pytest
from processes import TESTS_DIR, run_command

pytestmark = pytest.mark.heavy


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:  # a fresh client: no cookie
        return json.loads(response.read())


@dataclass
class Server:
    base: str
    stderr: IO[bytes]
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        """What the server (master and workers) has written to stderr so far."""
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")


@contextmanager
def gunicorn(
    control_dir: str,
    *options: str,
    prune_interval: float = 0,
    app: str = "testsite.wsgi",
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Run gunicorn on 127.0.0.1 with the test site; yield it; stop it afterwards.

    Its stderr goes to a file, not a pipe: nobody reads a pipe while the test runs, and a full
    pipe would block the server.
    """
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testsite.settings",
        "PYTHONPATH": str(TESTS_DIR),
        "MEMSESSION_CONTROL_DIR": control_dir,
        "MEMSESSION_TEST_PRUNE_INTERVAL": str(prune_interval),
        **(extra_env or {}),
    }
    env.pop("WEB_CONCURRENCY", None)
    args = [sys.executable, "-m", "gunicorn", f"{app}:application"]
    args += ["--bind", f"127.0.0.1:{port}", "--worker-class", "gthread", "--threads", "4"]
    args += ["--graceful-timeout", "2", *options]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        server = Server(f"http://127.0.0.1:{port}", stderr, process)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    get_json(f"{server.base}/session/stats/")
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(server.log()) from None
                    time.sleep(0.1)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def prune_json(control_dir: str, *extra: str) -> dict:
    result = run_command("prunesessions", "--json", *extra, control_dir=control_dir)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def wait_until_expired(control_dir: str, count: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = prune_json(control_dir, "--dry-run")
        if output["total"]["removed"] >= count:
            return output
        time.sleep(0.25)
    raise AssertionError(f"{count} sessions did not expire within {timeout} s")


def make_sessions(base: str, count: int, expiry: int) -> set[int]:
    return {get_json(f"{base}/session/make/?expiry={expiry}")["pid"] for _ in range(count)}


@pytest.mark.parametrize("command", ["prunesessions", "clearsessions"])
def test_a_command_removes_expired_sessions_from_the_servers_memory(control_dir, command):
    with gunicorn(control_dir, "--workers", "1") as server:
        base = server.base
        make_sessions(base, 5, expiry=1)
        make_sessions(base, 2, expiry=3600)
        assert get_json(f"{base}/session/stats/")["entries"] == 7
        wait_until_expired(control_dir, 5)
        result = run_command(command, control_dir=control_dir)
        assert result.returncode == 0, result.stderr
        figures = get_json(f"{base}/session/stats/")
    assert (figures["entries"], figures["expired"]) == (2, 5)


def sessions_on_both_workers(base: str) -> tuple[set[int], int]:
    """Make one-second sessions until both workers hold some; (their pids, sessions made)."""
    pids: set[int] = set()
    made = 0
    deadline = time.monotonic() + 30
    while len(pids) < 2 and time.monotonic() < deadline:
        pids |= make_sessions(base, 1, expiry=1)
        made += 1
    assert len(pids) == 2, "the second worker never took a request"
    return pids, made


def test_preload_with_two_workers_both_are_reached_and_pruned(control_dir):
    with gunicorn(control_dir, "--workers", "2", "--preload") as server:
        pids, made = sessions_on_both_workers(server.base)
        wait_until_expired(control_dir, made)
        result = run_command("prunesessions", control_dir=control_dir)
        after = prune_json(control_dir, "--dry-run")
        log = server.log()
    assert result.returncode == 0, result.stderr
    assert f"total over 2 process(es): removed {made} sessions" in result.stdout
    assert "sessions are split between them" in result.stderr
    assert {p["pid"] for p in after["processes"]} == pids
    assert after["total"]["entries"] == 0
    # The worker that started second saw the first one's socket and said so.
    assert "2 processes hold a session store, so sessions are split" in log


def test_preload_master_that_touched_the_store_is_not_a_serving_process(control_dir):
    """The app uses the store at import, so gunicorn's master builds one before it forks: with
    one worker there is one serving process, and nobody warns of a split."""
    with gunicorn(control_dir, "--workers", "1", "--preload", app="testsite.wsgi_touching") as (
        server
    ):
        (worker,) = make_sessions(server.base, 3, expiry=3600)
        output = prune_json(control_dir, "--dry-run")
        log = server.log()
    assert [p["pid"] for p in output["processes"]] == [worker]
    assert output["split"] is False
    assert "hold a session store" not in log


def test_preload_each_worker_runs_its_own_pruner_thread(control_dir):
    with gunicorn(control_dir, "--workers", "2", "--preload", prune_interval=1) as server:
        pids, _ = sessions_on_both_workers(server.base)
        deadline = time.monotonic() + 30
        emptied_by_the_threads = False
        while not emptied_by_the_threads and time.monotonic() < deadline:
            time.sleep(0.25)
            figures = prune_json(control_dir, "--dry-run")["processes"]  # removes nothing
            emptied_by_the_threads = {p["pid"] for p in figures} == pids and all(
                p["entries"] == 0 for p in figures
            )
    assert emptied_by_the_threads
