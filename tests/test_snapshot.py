"""Snapshots: what a restore brings back (and never brings back), signed files, bad files."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from django.test import override_settings
from pympler import asizeof

from django_memsession.memory.index import FACTS
from django_memsession.memory.lru import AUTHENTICATED, PROBATION, RETURNING
from django_memsession.memory.snapshot import file as snapshot_file
from django_memsession.memory.snapshot import journal as journal_file
from django_memsession.memory.snapshot.safety import UnsafeFile
from django_memsession.memory.snapshot.writer import Snapshotter
from django_memsession.memory.store import HEADER, Limits, MemoryStore


@pytest.fixture
def snapshot_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "snapshots"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture
def make(clock, sizer, snapshot_dir):
    """A store and its snapshotter, as one process would have them."""
    made: list[Snapshotter] = []

    def build(max_bytes: int = 1024 * 1024) -> Snapshotter:
        store = MemoryStore(Limits(max_bytes, max_bytes // 8, 0.75), clock=clock, sizer=sizer)
        snapshotter = Snapshotter(store, snapshot_dir / "sessions.snapshot")
        store.on_journal = snapshotter.journal_write
        made.append(snapshotter)
        return snapshotter

    yield build
    for snapshotter in made:
        snapshotter.journal.close()
        snapshotter.claim.release()


def key(n: int) -> str:
    return f"{n:032d}"


def put(store: MemoryStore, n: int, data: bytes = b"{}", *, ttl: float = 3600, auth=False):
    return store.put(key(n), data, store.clock() + ttl, authenticated=auth, create=False)


def create(store: MemoryStore, n: int, data: bytes = b"{}", *, ttl: float = 3600, auth=False):
    return store.put(key(n), data, store.clock() + ttl, authenticated=auth, create=True)


def crash(process: Snapshotter) -> None:
    """What kill -9 leaves: the files as they are; the claim goes with the process."""
    process.journal.close()
    process.claim.release()


def started(make, **kwargs) -> Snapshotter:
    process = make(**kwargs)
    process.restore()
    return process


def contents(store: MemoryStore) -> dict[str, tuple[int, bytes]]:
    return {k: (i, v[12:]) for i, k, v in (r for chunk in store.copy_chunks() for r in chunk)}


# -- what comes back ----------------------------------------------------------------------------


def test_every_live_session_comes_back_with_its_data_expiry_segment_and_recency(make, clock):
    old = started(make)
    for n in range(3):
        create(old.store, n, b'{"n": %d}' % n)
    create(old.store, 10, b'{"user": 1}', auth=True)
    old.store.get(key(0))  # key 0 comes back: returning, most recently used
    old.shutdown()
    new = started(make)
    assert new.restored is not None and new.restored.sessions == 4
    order = [k for chunk in new.store.copy_chunks() for _, k, _ in chunk]
    assert order == [key(1), key(2), key(0), key(10)]
    assert new.store.stats()["segments"] == {"probation": 2, "returning": 1, "authenticated": 1}
    assert new.store.get(key(1)) == b'{"n": 1}'
    clock.advance(3601)
    assert new.store.get(key(2)) is None


def test_accounting_stays_exact_after_a_restore(make):
    old = started(make)
    for n in range(500):
        create(old.store, n, b"x" * (n % 300))
    old.shutdown()
    new = started(make)
    assert new.store.stats()["bytes"] == asizeof.asizeof(*new.store.containers())


def test_sessions_that_expired_while_down_do_not_come_back(make, clock):
    old = started(make)
    create(old.store, 1, ttl=10)
    create(old.store, 2, ttl=1000)
    old.shutdown()
    clock.advance(11)
    new = started(make)
    assert (new.restored.sessions, new.restored.expired) == (1, 1)
    assert new.store.get(key(1)) is None


def test_a_lowered_budget_brings_back_the_most_valuable_first(make):
    old = started(make)
    for n in range(200):
        create(old.store, n, b"p" * 400)  # probation
    for n in range(200, 260):
        create(old.store, n, b"u" * 400, auth=True)
    old.shutdown()
    new = started(make, max_bytes=64 * 1024)
    segments = new.store.stats()["segments"]
    assert segments["authenticated"] == 60
    assert 0 < segments["probation"] < 200
    assert new.store.get(key(199)) is not None  # the most recent probation sessions
    assert new.store.get(key(0)) is None
    assert new.store.stats()["bytes"] <= 64 * 1024


# -- what never comes back ----------------------------------------------------------------------


def test_a_logout_after_the_last_snapshot_is_not_undone_by_a_crash(make):
    old = started(make)
    create(old.store, 1, auth=True)
    create(old.store, 2, auth=True)
    old.write()
    old.store.delete(key(1))  # a logout, then kill -9
    crash(old)
    new = started(make)
    assert new.store.get(key(1)) is None
    assert new.store.get(key(2)) is not None


def test_a_session_changed_after_the_last_snapshot_is_not_rolled_back_by_a_crash(make):
    old = started(make)
    create(old.store, 1, b'{"token": "unused"}')
    old.write()
    put(old.store, 1, b'{"token": "used"}')
    crash(old)
    new = started(make)
    assert new.store.get(key(1)) is None  # as last written, or not at all: never the old one
    assert new.restored.journaled == 1


def test_a_logout_of_an_evicted_session_is_journaled_too(make):
    """The snapshot holds it even if the store no longer does."""
    old = started(make)
    create(old.store, 1)
    old.write()
    old.store.delete(key(1))
    old.store.delete(key(1))  # gone already: a second logout is still safe
    crash(old)
    assert started(make).store.get(key(1)) is None


def test_changes_made_while_the_snapshot_is_copied_are_never_rolled_back(make, monkeypatch):
    old = started(make, max_bytes=8 * 1024 * 1024)
    for n in range(5000):
        create(old.store, n)
    real = old.store.copy_chunks

    def interfering(**kwargs):
        for count, chunk in enumerate(real(**kwargs)):
            if count == 2:  # the copy is under way: a logout and an update land
                old.store.delete(key(1))  # already copied
                put(old.store, 4999, b'{"v": 2}')  # not copied yet
                put(old.store, 2, b'{"v": 2}')  # already copied, at its old version
            yield chunk

    monkeypatch.setattr(old.store, "copy_chunks", interfering)
    old.write()
    crash(old)
    new = started(make, max_bytes=8 * 1024 * 1024)
    assert new.store.get(key(1)) is None
    assert new.store.get(key(2)) is None  # its copy in the file is the old version
    assert new.store.get(key(4999)) in (None, b'{"v": 2}')
    assert new.store.get(key(3)) is not None


def test_a_session_written_every_request_is_journaled_once_per_snapshot(make):
    old = started(make)
    create(old.store, 1)
    old.write()
    for _ in range(100):
        put(old.store, 1, b'{"n": 1}')
    journal = old.journal.file(old.store.epoch).read_bytes()
    assert len(journal) == journal_file.HASH_SIZE


def test_the_journal_holds_no_session_key(make):
    old = started(make)
    create(old.store, 123456)
    old.write()
    old.store.delete(key(123456))
    data = old.journal.file(old.store.epoch).read_bytes()
    assert key(123456).encode() not in data and len(data) == journal_file.HASH_SIZE


def test_a_graceful_shutdown_keeps_every_session_written_up_to_it(make):
    old = started(make)
    create(old.store, 1)
    old.write()
    put(old.store, 1, b'{"v": 2}')  # after the periodic snapshot
    create(old.store, 2)
    old.shutdown()
    new = started(make)
    assert (new.store.get(key(1)), new.store.get(key(2))) == (b'{"v": 2}', b"{}")


# -- one process owns the file ----------------------------------------------------------------


def test_a_second_process_gets_nothing_and_writes_nothing(make, caplog):
    owner = started(make)
    create(owner.store, 1)
    owner.write()
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        sibling = started(make)
    assert (sibling.restored, sibling.store.stats()["entries"]) == (None, 0)
    assert f"belongs to process {os.getpid()}" in caplog.text
    with pytest.raises(Exception, match="belongs to process"):
        sibling.write()


# -- the file ---------------------------------------------------------------------------------


def test_the_file_is_private_and_no_larger_than_the_store(make):
    old = started(make)
    for n in range(2000):
        create(old.store, n, b'{"cart": [1, 2, 3], "visits": 12}' + b" " * 250)
    report = old.write()
    path = old.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert report.bytes == path.stat().st_size
    assert report.bytes <= 1.2 * old.store.stats()["bytes"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-10],  # truncated
        lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:],  # one bit flipped
        lambda data: b"",  # empty
        lambda data: data.replace(b"snapshot\n\x02", b"snapshot\n\x09", 1),  # future format
        lambda data: b"\x80\x04\x95" + data,  # a pickle, say
    ],
    ids=["truncated", "tampered", "empty", "future-version", "foreign-format"],
)
def test_a_bad_file_is_refused_set_aside_and_logged_and_the_store_starts_empty(
    make, caplog, damage
):
    old = started(make)
    create(old.store, 1)
    old.shutdown()
    old.path.write_bytes(damage(old.path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        new = started(make)
    assert new.store.stats()["entries"] == 0
    (line,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "snapshot" in line.getMessage()
    assert not old.path.exists()
    assert len(list(old.path.parent.glob("sessions.snapshot.rejected-*"))) == 1


def test_a_file_signed_with_another_secret_key_is_refused(make, caplog):
    with override_settings(SECRET_KEY="another project"):
        old = started(make)
        create(old.store, 1)
        old.shutdown()
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        new = started(make)
    assert new.store.stats()["entries"] == 0
    assert "bad signature" in caplog.text


def test_a_rotated_secret_key_still_reads_the_file_through_the_fallbacks(make):
    with override_settings(SECRET_KEY="the old key"):
        old = started(make)
        create(old.store, 1)
        old.write()
        old.store.delete(key(1))  # journaled under the old key
        create(old.store, 2)
        crash(old)
    with override_settings(SECRET_KEY="the new key", SECRET_KEY_FALLBACKS=["the old key"]):
        new = started(make)
    assert (new.store.get(key(1)), new.store.get(key(2))) == (None, None)
    with override_settings(SECRET_KEY="the new key", SECRET_KEY_FALLBACKS=["the old key"]):
        old2 = new
        create(old2.store, 3)
        old2.shutdown()
        assert started(make).store.get(key(3)) == b"{}"


def test_a_failed_write_on_a_full_disk_keeps_the_previous_snapshot(make, monkeypatch, caplog):
    old = started(make)
    create(old.store, 1)
    old.write()
    before = old.path.read_bytes()
    real_fsync = os.fsync

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with caplog.at_level(logging.ERROR, logger="django_memsession"), pytest.raises(OSError):
        old.write()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert old.path.read_bytes() == before
    assert list(old.path.parent.glob("*.tmp-*")) == []
    assert "No space left on device" in caplog.text


def test_the_snapshot_thread_survives_a_failing_write(make, monkeypatch, caplog):
    old = started(make)
    calls = {"n": 0}
    done = threading.Event()
    real = old.write

    def flaky(reason: str = "") -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        done.set()
        return real(reason)

    monkeypatch.setattr(old, "write", flaky)
    with caplog.at_level(logging.ERROR, logger="django_memsession"):
        old.start(0.02)
        assert done.wait(10)
    old.stop_thread()
    assert "a periodic write failed" in caplog.text


def test_sessions_and_segments_round_trip_through_the_file_format(snapshot_dir):
    path = snapshot_dir / "f"
    records = [(PROBATION, key(1), b"a"), (RETURNING, key(2), b""), (AUTHENTICATED, key(3), b"c")]
    snapshot_file.write_snapshot(path, [records], epoch=7, started_at=1.5)
    data = snapshot_file.read_snapshot(path)
    assert (data.epoch, data.started_at, data.records) == (7, 1.5, records)


# -- the shutdown path of a plain process ---------------------------------------------------------


def test_sigterm_to_a_plain_process_writes_the_snapshot_then_ends_it(control_dir, snapshot_dir):
    """A plain Python process (as runserver) has no SIGTERM handler: Python's default dies
    without atexit. The package installs one that ends the process through SystemExit (status
    143, as a shell reports a SIGTERM), and atexit writes the snapshot."""
    import signal

    from processes import store_process

    path = snapshot_dir / "sessions.snapshot"
    process = store_process(
        control_dir, long=3, extra_env={"MEMSESSION_TEST_SNAPSHOT_PATH": str(path)}
    )
    with process as pid:
        os.kill(pid, signal.SIGTERM)
        process.proc.wait(20)
    assert process.proc.returncode == 128 + signal.SIGTERM
    assert len(snapshot_file.read_snapshot(path).records) == 3


def test_a_process_with_its_own_sigterm_handler_keeps_it(control_dir, snapshot_dir):
    """A server's own handler (gunicorn's, uvicorn's) is never replaced."""
    import subprocess
    import sys

    from processes import TESTS_DIR

    script = (
        f"import os, signal, sys; sys.path.insert(0, {str(TESTS_DIR)!r});"
        "mine = lambda *a: None; signal.signal(signal.SIGTERM, mine);"
        "import django; django.setup();"
        "import django_memsession; django_memsession.stats();"
        "print(signal.getsignal(signal.SIGTERM) is mine)"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testsite.settings",
        "MEMSESSION_CONTROL_DIR": control_dir,
        "MEMSESSION_TEST_SNAPSHOT_PATH": str(snapshot_dir / "s.snapshot"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "True", result.stderr


def test_a_logout_racing_a_write_whose_journal_is_late_is_not_undone_by_a_crash(make):
    """A write is preempted around its journal record while a logout of the same session
    returns to the user; then the process dies. The logout must hold (found by a review: the
    journal was written after the store's lock was released, so the logout saw the write's
    tag and skipped its own record)."""
    old = started(make)
    create(old.store, 1, auth=True)
    old.write()
    crashed = threading.Event()
    real = old.journal_write

    def late_journal(key: str, epoch: int) -> bool:
        crashed.wait(0.3)
        return False if crashed.is_set() else real(key, epoch)

    old.store.on_journal = late_journal
    writer = threading.Thread(target=put, args=(old.store, 1, b'{"n": 2}'), kwargs={"auth": True})
    writer.start()
    time.sleep(0.05)
    old.store.on_journal = real
    assert old.store.delete(key(1))  # the logout returns to the user
    crashed.set()  # kill -9 now
    writer.join()
    crash(old)
    assert started(make).store.get(key(1)) is None


def test_a_process_that_outlives_the_handoff_wait_hands_over_late(make, monkeypatch):
    """The process this one replaces still holds the file when the wait runs out (a long last
    request): this one serves empty meanwhile, and when the old one has written its final
    snapshot and gone, its sessions are put back beside the ones made meanwhile."""
    from django_memsession.memory.snapshot import writer as snapshot_module

    monkeypatch.setattr(snapshot_module, "HANDOFF_TIMEOUT", 0.1)
    monkeypatch.setattr(snapshot_module, "LATE_CLAIM_POLL", 0.02)
    old = started(make)
    create(old.store, 1, auth=True)
    monkeypatch.setattr(snapshot_module, "_started_at", time.time() + 1)  # started after old
    new = started(make)
    new.start(0)
    assert (new.claim.held, new.store.stats()["entries"]) == (False, 0)
    create(new.store, 2)  # served while waiting
    old.shutdown()  # the final snapshot, and the claim goes
    deadline = time.monotonic() + 10
    while not new.claim.held and time.monotonic() < deadline:
        time.sleep(0.02)
    while new.restored is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert new.store.get(key(1)) is not None and new.store.get(key(2)) is not None
    new.shutdown()


def test_a_sibling_that_takes_the_file_during_the_wait_ends_it(make, monkeypatch, caplog):
    """Waiting for a predecessor, a process sees that a sibling (one that claimed after this one
    started) now holds the file: it stops waiting at once, instead of for the whole wait."""
    import json as json_module

    from django_memsession.memory.snapshot import writer as snapshot_module

    monkeypatch.setattr(snapshot_module, "HANDOFF_TIMEOUT", 30)
    holder = started(make)  # keeps its flock throughout: the file is never free
    monkeypatch.setattr(snapshot_module, "_started_at", time.time() + 1)  # holder is older

    def sibling_claims(delay: float) -> None:
        time.sleep(delay)  # what a sibling writes once it holds the lock
        claimed = {"pid": 424242, "claimed_at": time.time() + 2}
        holder.claim.path.write_text(json_module.dumps(claimed))

    swapper = threading.Thread(target=sibling_claims, args=(0.3,))
    swapper.start()
    began = time.monotonic()
    waiting = make()
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        assert waiting.restore() is None
    swapper.join()
    assert time.monotonic() - began < 30  # it did not wait out the handoff
    assert waiting.holder == 424242
    assert "writes no snapshot" in caplog.text


def test_a_serving_process_that_forks_a_helper_keeps_its_journal(control_dir, snapshot_dir):
    """A fork from a process that has served (multiprocessing) is not a master's: the process
    keeps its snapshot and its journal, so a logout after the fork survives a crash."""
    import subprocess
    import sys

    from processes import TESTS_DIR

    path = snapshot_dir / "sessions.snapshot"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testsite.settings",
        "MEMSESSION_CONTROL_DIR": control_dir,
        "MEMSESSION_TEST_SNAPSHOT_PATH": str(path),
    }
    result = subprocess.run(
        [sys.executable, str(TESTS_DIR / "forking_server.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    stays, leaves = result.stdout.split()
    data = snapshot_file.read_snapshot(path)
    journaled = journal_file.Journal(path)
    gone = journaled.keys_matching([stays, leaves], journaled.hashes_since(data.epoch))
    assert gone == {leaves}


# -- who is logged in ---------------------------------------------------------------------------


def login(store: MemoryStore, n: int, user: str, client: str | None = None) -> None:
    payload = b'{"_auth_user_id": "%s"}' % user.encode()
    store.put(
        key(n),
        payload,
        store.clock() + 3600,
        authenticated=True,
        create=True,
        user=user,
        client=client,
    )


def test_the_user_index_and_the_facts_survive_a_snapshot_and_restore(make, clock):
    old = started(make)
    login(old.store, 1, "7", client="10.0.0.1\nFirefox")
    clock.advance(3)
    login(old.store, 2, "7")
    login(old.store, 3, "8")
    create(old.store, 4)
    before = {user: old.store.user_sessions(user) for user in ("7", "8")}
    old.shutdown()
    new = started(make)
    assert {user: new.store.user_sessions(user) for user in ("7", "8")} == before
    assert new.store.stats()["users"] == 2
    assert new.store.stats()["bytes"] == asizeof.asizeof(*new.store.containers())


def test_a_version_1_file_is_read_and_its_logged_in_sessions_are_indexed(make, clock, monkeypatch):
    from django_memsession.memory.store import HEADER
    from django_memsession.runtime import user_of_payload

    expires = clock() + 3600
    records = [
        (AUTHENTICATED, key(1), HEADER.pack(expires, 0) + b'{"_auth_user_id": "7"}'),
        (PROBATION, key(2), HEADER.pack(expires, 0) + b'{"cart": []}'),
    ]
    path = make().path
    monkeypatch.setattr(snapshot_file, "VERSION", 1)
    snapshot_file.write_snapshot(path, [records], epoch=1, started_at=clock())
    monkeypatch.undo()
    process = make()
    process.user_of_payload = user_of_payload
    process.restore()
    (row,) = process.store.user_sessions("7")
    assert (row.key, row.created, row.client) == (key(1), int(clock()), None)
    assert process.store.get(key(1)) == b'{"_auth_user_id": "7"}'
    assert process.store.get(key(2)) == b'{"cart": []}'


# -- what the file may be -----------------------------------------------------------------------


def refused(make, caplog) -> tuple[Snapshotter, str]:
    """A new process's restore that is expected to refuse the file: it, and its one WARNING."""
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        process = started(make)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    return process, line


def saved(make) -> Path:
    """A snapshot of one session (key 1), written by a process that has gone."""
    old = started(make)
    create(old.store, 1)
    old.shutdown()
    return old.path


def rejected(path: Path) -> Path:
    (aside,) = path.parent.glob(f"{path.name}.rejected-*")
    return aside


def feed(fifo: Path, data: bytes) -> None:
    """Write ``data`` into a FIFO, once a reader opens it (so a reader that waits gets it)."""
    with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as out:
        out.write(data)


def test_a_fifo_at_the_path_is_refused_at_once_with_the_tampered_files_warning(make, caplog):
    """The first use of the store never waits for a writer at the FIFO's other end. A feeder
    thread holds that end (through a second name of the same FIFO, which is not set aside), so
    a restore that opened the FIFO would get a valid snapshot from it, not hang."""
    path = saved(make)
    data = path.read_bytes()
    path.unlink()
    os.mkfifo(path, 0o600)
    other_name = path.with_name("feeder")
    os.link(path, other_name)
    feeder = threading.Thread(target=feed, args=(other_name, data), daemon=True)
    feeder.start()
    try:
        new, line = refused(make, caplog)
    finally:
        reader = os.open(other_name, os.O_RDONLY | os.O_NONBLOCK)  # lets the feeder through
        feeder.join()
        os.close(reader)
    assert new.store.stats()["entries"] == 0
    assert "refused: it is a FIFO, not a regular file" in line
    assert stat.S_ISFIFO(rejected(path).lstat().st_mode)


def test_a_directory_at_the_path_is_refused_with_the_tampered_files_warning(make, caplog):
    path = make().path
    path.mkdir()
    _, line = refused(make, caplog)
    assert "refused: it is a directory, not a regular file" in line
    assert rejected(path).is_dir()


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o640, 0o602])
def test_a_file_other_users_may_read_or_write_is_refused_and_set_aside(make, caplog, mode):
    """It holds session keys: as ssh refuses a private key others can read."""
    path = saved(make)
    path.chmod(mode)
    new, line = refused(make, caplog)
    assert new.store.stats()["entries"] == 0
    assert f"refused: other users may read or write it (mode {mode:04o})" in line
    assert not path.exists() and rejected(path).exists()


def test_a_file_set_aside_for_its_mode_is_made_private(make, caplog):
    """The keys in it are no longer left readable by others once it is out of the way."""
    path = saved(make)
    path.chmod(0o644)
    refused(make, caplog)
    assert stat.S_IMODE(rejected(path).stat().st_mode) == 0o600


def test_a_symlink_at_the_path_is_refused_and_set_aside_and_its_target_left_alone(make, caplog):
    path = saved(make)
    target = path.with_name("elsewhere")
    path.rename(target)
    path.symlink_to(target)
    new, line = refused(make, caplog)
    assert new.store.stats()["entries"] == 0
    assert "refused: it is a symlink" in line
    assert rejected(path).is_symlink() and target.is_file()


def test_a_snapshot_under_a_symlinked_directory_is_read(clock, sizer, tmp_path):
    """As /var/run is a symlink to /run: only the file itself may not be one."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "linked").symlink_to(real)
    path = tmp_path / "linked" / "sessions.snapshot"
    records = [(PROBATION, key(1), HEADER.pack(clock() + 60, 0) + b"{}")]
    snapshot_file.write_snapshot(path, [records], epoch=1, started_at=clock())
    store = MemoryStore(Limits(1 << 20, 1 << 17, 0.75), clock=clock, sizer=sizer)
    process = Snapshotter(store, path)
    try:
        process.restore()
    finally:
        crash(process)
    assert store.get(key(1)) == b"{}"


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_file_owned_by_another_user_is_refused_and_set_aside(make, caplog):
    """Whoever owns it can rewrite it at any time; the process only reads its own files."""
    path = saved(make)
    os.chown(path, 65534, -1)
    new, line = refused(make, caplog)
    assert new.store.stats()["entries"] == 0
    assert "refused: it belongs to another user (uid 65534" in line


def test_a_symlink_at_the_lock_file_is_not_followed_and_snapshots_are_off(make, caplog):
    path = saved(make)
    victim = path.with_name("victim")
    victim.write_bytes(b"not the server's")
    victim.chmod(0o600)
    lock = path.with_name(f"{path.name}.lock")
    lock.unlink()
    lock.symlink_to(victim)
    with caplog.at_level(logging.WARNING, logger="django_memsession"):
        new = started(make)
    assert victim.read_bytes() == b"not the server's"
    assert not new.claim.held and new.store.stats()["entries"] == 0
    assert "Session snapshots off" in caplog.text and "it is a symlink" in caplog.text


def test_a_symlink_at_a_journal_is_not_written_through(snapshot_dir):
    journal = journal_file.Journal(snapshot_dir / "sessions.snapshot")
    victim = snapshot_dir / "victim"
    victim.write_bytes(b"")
    victim.chmod(0o600)
    journal.file(3).symlink_to(victim)
    with pytest.raises(UnsafeFile, match="it is a symlink"):
        journal.open(3)
    assert not journal.append(key(1), 3)
    assert victim.read_bytes() == b""


def test_a_fifo_among_the_journals_is_ignored_without_waiting_for_a_writer(make, caplog):
    """The feeder would hand a reader that waited the hash of key 1 (leaving it out)."""
    old = started(make)
    create(old.store, 1)
    old.write()
    crash(old)
    journal = old.journal.file(old.store.epoch)
    journal.unlink()
    os.mkfifo(journal, 0o600)
    other_name = journal.with_name("feeder")
    os.link(journal, other_name)
    hashed = journal_file.key_hash(key(1), old.journal.journal_key)
    feeder = threading.Thread(target=feed, args=(other_name, hashed), daemon=True)
    feeder.start()
    try:
        with caplog.at_level(logging.WARNING, logger="django_memsession"):
            new = started(make)
    finally:
        reader = os.open(other_name, os.O_RDONLY | os.O_NONBLOCK)
        feeder.join()
        os.close(reader)
    assert new.store.get(key(1)) == b"{}"
    assert f"journal {journal} ignored: it is a FIFO" in caplog.text


def test_a_symlink_at_the_temporary_name_is_not_written_through(snapshot_dir):
    path = snapshot_dir / "sessions.snapshot"
    victim = snapshot_dir / "victim"
    victim.write_bytes(b"not the server's")
    path.with_name(f"{path.name}.tmp-{os.getpid()}").symlink_to(victim)
    snapshot_file.write_snapshot(path, [], epoch=1, started_at=1.0)
    assert victim.read_bytes() == b"not the server's"
    assert not path.is_symlink() and snapshot_file.read_snapshot(path).records == []


# -- a file larger than the budget ----------------------------------------------------------------


def test_a_file_many_times_the_budget_is_restored_in_bounded_memory(make, clock):
    """A file written by a store with a budget 32 times this one's: a restore keeps the most
    valuable that fit, and its peak of traced memory (the store it builds included) stays
    under 4 times the budget; reading the file whole would take 32."""
    budget = 1 << 20
    process = make(max_bytes=budget)
    expires = HEADER.pack(clock() + 3600, 0)

    def chunks():
        for start in range(0, 16_000, 1000):
            yield [(PROBATION, key(n), expires + b"v" * 2048) for n in range(start, start + 1000)]

    written = snapshot_file.write_snapshot(process.path, chunks(), epoch=1, started_at=clock())
    assert written.bytes > 32 * budget
    tracemalloc.start()
    try:
        process.restore()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * budget
    assert process.store.stats()["bytes"] <= budget
    assert process.store.get(key(15_999)) is not None  # the most recent came back
    assert process.store.get(key(0)) is None


def test_the_records_read_in_small_pieces_are_the_records_written(snapshot_dir, monkeypatch):
    path = snapshot_dir / "f"
    chunks = [
        [(PROBATION, key(n), b"v" * (n % 7)) for n in range(10)],
        [],
        [(AUTHENTICATED, key(n), b"w" * 30) for n in range(10, 13)],
    ]
    snapshot_file.write_snapshot(path, chunks, epoch=7, started_at=1.5)
    monkeypatch.setattr(snapshot_file, "READ_SIZE", 40)
    monkeypatch.setattr(snapshot_file, "BATCH_RECORDS", 3)
    assert snapshot_file.read_snapshot(path).records == [r for chunk in chunks for r in chunk]


def test_a_session_larger_than_this_store_takes_is_left_out_unread(snapshot_dir):
    path = snapshot_dir / "f"
    records = [(PROBATION, key(n), b"v" * size) for n, size in enumerate((10, 5000, 20))]
    snapshot_file.write_snapshot(path, [records], epoch=1, started_at=1.0)
    with snapshot_file.open_snapshot(path) as snapshot:
        read = [record for batch in snapshot.batches(largest_value=100) for record in batch]
        assert snapshot.too_large == 1
    assert read == [records[0], records[2]]


# -- a record that is not whole -------------------------------------------------------------------


def unusable_records(clock) -> list[tuple[int, str, bytes]]:
    """Two good sessions around three records that cannot be unpacked."""
    alive = clock() + 3600
    return [
        (PROBATION, key(1), HEADER.pack(alive, 0) + b'{"n": 1}'),
        (PROBATION, key(2), b"\x01"),  # shorter than the header
        (AUTHENTICATED, key(3), HEADER.pack(alive, 0) + b"{}"),  # too short for its facts
        (AUTHENTICATED, key(4), FACTS.pack(alive, 0, 1, 1, 500, 0) + b"7"),  # a user id cut short
        (RETURNING, key(5), HEADER.pack(alive, 0) + b'{"n": 5}'),
    ]


def test_a_record_that_cannot_be_unpacked_is_left_out_and_the_rest_restored(make, clock):
    process = make()
    snapshot_file.write_snapshot(process.path, [unusable_records(clock)], epoch=1, started_at=1.0)
    process.restore()
    assert process.restored.sessions == 2
    assert contents(process.store) == {
        key(1): (PROBATION, b'{"n": 1}'),
        key(5): (RETURNING, b'{"n": 5}'),
    }


def test_records_that_cannot_be_unpacked_are_logged_once_without_their_keys(make, clock, caplog):
    process = make()
    snapshot_file.write_snapshot(process.path, [unusable_records(clock)], epoch=1, started_at=1.0)
    with caplog.at_level(logging.DEBUG, logger="django_memsession"):
        process.restore()
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "3 sessions could not be unpacked" in line
    assert not any(key(n) in caplog.text for n in range(2, 5))


def test_the_later_copy_of_a_key_is_the_one_restored(make, clock):
    """A session written while the snapshot was copied is in the file twice."""
    store = make().store
    alive = HEADER.pack(clock() + 3600, 0)
    store.restore(
        [
            (PROBATION, key(1), alive + b"old"),
            (PROBATION, key(2), alive + b"2"),
            (RETURNING, key(1), alive + b"new"),
        ]
    )
    assert contents(store) == {key(2): (PROBATION, b"2"), key(1): (RETURNING, b"new")}
    assert store.stats()["bytes"] == asizeof.asizeof(*store.containers())
