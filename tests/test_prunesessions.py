"""``manage.py prunesessions`` and ``clearsessions`` reaching other processes' memory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from processes import run_command, store_process

from django_memsession import control


def prune_json(control_dir: str, *extra: str) -> tuple[int, dict]:
    result = run_command("prunesessions", "--json", *extra, control_dir=control_dir)
    return result.returncode, json.loads(result.stdout)


def wait_until_expired(control_dir: str, count: int, timeout: float = 15.0) -> None:
    """Bounded polling (dry runs) until ``count`` sessions have expired in the other process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, output = prune_json(control_dir, "--dry-run")
        if output["total"]["removed"] >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} sessions did not expire within {timeout} s")


def test_prunes_another_process_and_prints_a_line_per_process_and_a_total(control_dir):
    with store_process(control_dir, short=3, long=2) as pid:
        wait_until_expired(control_dir, 3)
        result = run_command("prunesessions", control_dir=control_dir)
        _, after = prune_json(control_dir, "--dry-run")
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[0].startswith(f"pid {pid}: removed 3 sessions (")
    assert lines[0].endswith("; 2 sessions (" + lines[0].split("; 2 sessions (")[1])
    assert lines[1].startswith("total over 1 process(es): removed 3 sessions")
    assert after["processes"][0]["entries"] == 2


def test_json_output(control_dir):
    with store_process(control_dir, short=2, long=1) as pid:
        wait_until_expired(control_dir, 2)
        status, output = prune_json(control_dir)
    assert status == 0
    assert [(p["pid"], p["removed"], p["entries"]) for p in output["processes"]] == [(pid, 2, 1)]
    assert output["total"]["removed"] == 2
    assert (output["dry_run"], output["errors"], output["split"]) == (False, [], False)


def test_dry_run_removes_nothing(control_dir):
    with store_process(control_dir, short=2, long=1):
        wait_until_expired(control_dir, 2)
        _, first = prune_json(control_dir, "--dry-run")
        _, second = prune_json(control_dir, "--dry-run")
    assert first["total"] == second["total"]
    assert first["total"]["removed"] == 2
    assert first["total"]["entries"] == 1  # what would be left


def test_two_processes_are_both_pruned_and_the_split_is_reported(control_dir):
    with store_process(control_dir, short=1, long=1), store_process(control_dir, short=1, long=1):
        wait_until_expired(control_dir, 2)
        result = run_command("prunesessions", control_dir=control_dir)
    assert result.returncode == 0
    assert "total over 2 process(es): removed 2 sessions" in result.stdout
    assert "sessions are split between them" in result.stderr


def test_clearsessions_reaches_the_running_process(control_dir):
    with store_process(control_dir, short=2, long=1):
        wait_until_expired(control_dir, 2)
        result = run_command("clearsessions", control_dir=control_dir)
        _, after = prune_json(control_dir, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert (after["total"]["entries"], after["total"]["removed"]) == (1, 0)


def test_no_server_found_is_one_clear_line_and_exit_status_1(control_dir):
    result = run_command("prunesessions", control_dir=control_dir)
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith("CommandError: No running server of this project found in ")
    for cause in ("no server is running", "MEMSESSION_CONTROL_DIR", "SECRET_KEY", "PrivateTmp"):
        assert cause in message
    assert len(message.splitlines()) == 1


def test_an_unreachable_process_gives_exit_status_2(control_dir):
    # A live process whose socket accepts but never answers.
    with (
        subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        ) as mute,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hung,
    ):
        hung.bind(str(Path(control_dir) / f"{control.project_id()}-{mute.pid}.sock"))
        hung.listen(1)
        with store_process(control_dir):
            result = run_command("prunesessions", "--timeout", "0.5", control_dir=control_dir)
        mute.stdin.close()
    assert result.returncode == 2
    assert f"process {mute.pid} did not answer" in result.stderr
    assert "total over 1 process(es)" in result.stdout


def test_a_stopped_process_gives_exit_status_2_naming_it(control_dir):
    """A server stopped with SIGSTOP accepts connections but never answers: "some could not be
    reached", within --timeout, not "no running server found"."""
    with store_process(control_dir) as pid:
        os.kill(pid, signal.SIGSTOP)
        try:
            result = run_command("prunesessions", "--timeout", "1", control_dir=control_dir)
        finally:
            os.kill(pid, signal.SIGCONT)
    assert result.returncode == 2
    assert f"process {pid} did not answer within 1 s" in result.stderr


def test_a_refused_control_directory_is_said_not_no_server_found(control_dir):
    os.chmod(control_dir, 0o755)
    result = run_command("prunesessions", control_dir=control_dir)
    assert result.returncode == 2
    assert "the control directory was refused" in result.stderr
    assert "open to other users" in result.stderr


def test_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        call_command("prunesessions", "--help")
    text = capsys.readouterr().out
    assert "Exit status: 0 when every process found was pruned; 1 when no running" in " ".join(
        text.split()
    )


def test_the_command_process_itself_does_not_listen(control_dir):
    run_command("prunesessions", control_dir=control_dir)
    assert os.listdir(control_dir) == []


def test_snapshotsessions_asks_every_process_and_prints_what_each_wrote(control_dir, tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {"MEMSESSION_TEST_SNAPSHOT_PATH": str(state / "sessions.snapshot")}
    with (
        store_process(control_dir, long=3, extra_env=env) as owner,
        store_process(control_dir, long=2, extra_env=env) as sibling,
    ):
        result = run_command("snapshotsessions", control_dir=control_dir)
        as_json = run_command("snapshotsessions", "--json", control_dir=control_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"pid {owner}: wrote 3 sessions (")
    assert lines[1] == (f"pid {sibling}: nothing written: the snapshot belongs to process {owner}")
    assert lines[2].startswith("total over 2 process(es): 1 wrote 3 sessions")
    output = json.loads(as_json.stdout)
    assert [(p["pid"], p["written"], p["sessions"]) for p in output["processes"]] == [
        (owner, True, 3),
        (sibling, False, 0),
    ]


def test_snapshotsessions_where_snapshots_are_off_says_so(control_dir):
    with store_process(control_dir) as pid:
        result = run_command("snapshotsessions", control_dir=control_dir)
    assert result.returncode == 1
    assert f"pid {pid}: nothing written: snapshots are off" in result.stdout
    assert "No process wrote a snapshot: snapshots are off" in result.stderr


@pytest.mark.parametrize("command", ["prunesessions", "snapshotsessions"])
def test_a_timeout_that_is_not_a_positive_number_is_refused_by_the_parser(command, control_dir):
    with pytest.raises(CommandError, match=r"--timeout: '0' is not a positive number of seconds"):
        call_command(command, "--timeout", "0")
