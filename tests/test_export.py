"""exportsessions and the mirror, in this process, against a real redis-server: what is copied,
what is never overwritten, what a dry run, a snapshot and a Redis outage do."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from processes import run_command

from django_memsession import SessionStore as MemorySession
from django_memsession import mirror, runtime
from django_memsession.memory import export
from django_memsession.memory import services as memory_services
from django_memsession.memory.index import FACTS
from django_memsession.memory.lru import AUTHENTICATED, PROBATION
from django_memsession.memory.snapshot.file import write_snapshot
from django_memsession.memory.snapshot.journal import Journal
from django_memsession.memory.store import HEADER
from django_memsession.redis.engine import SessionStore as RedisSession
from django_memsession.redis.importer import Importer, Kind, Outcome, Write, importer_for
from django_memsession.redis.store import get_store as redis_store
from django_memsession.serializers import current_codec

pytestmark = pytest.mark.usefixtures("redis_url", "control_dir")

DAY = 24 * 3600


@pytest.fixture
def redis_url(redis_server, settings):
    """An empty server, the Redis engine's settings pointed at it; this process stays on the
    memory engine, as the processes an export copies (and the command itself) do."""
    from django_memsession.redis import store

    redis_server.reset()
    settings.MEMSESSION_REDIS_URL = redis_server.url
    store.reset()
    yield redis_server.url
    store.reset()


@pytest.fixture(autouse=True)
def _no_mirror_left():
    yield
    mirror.remove_marker()
    if memory_services._services is not None:
        memory_services._services.stop_mirror()


def memory_session(**data) -> str:
    session = MemorySession()
    session.update(data)
    session.save()
    return session.session_key


def export_json(*args: str) -> dict:
    out = io.StringIO()
    call_command("exportsessions", *args, "--json", stdout=out, stderr=io.StringIO())
    return json.loads(out.getvalue())


def loaded(key: str) -> dict | None:
    session = RedisSession(key)
    data = session.load()
    return None if session.session_key is None else data


def mirrored() -> None:
    """Wait until this process's mirror has sent everything it queued (it stops to do so)."""
    assert memory_services._services is not None and memory_services._services.mirror is not None
    assert memory_services._services.mirror.stop(timeout=10)


# -- the importer's rules ---------------------------------------------------------------------


@pytest.fixture
def importer(redis_url) -> Importer:
    made = importer_for(redis_url)
    yield made
    made.close()


def record(payload: bytes, expires_at: float, kind: Kind = Kind.EXPORT, key: str = "k" * 32):
    return Write(kind, key, payload, expires_at)


def test_an_export_is_a_settled_record_with_the_rest_of_its_life_as_ttl(importer, redis_server):
    expires_at = redis_store().clock() + 600
    assert importer.write([record(b"{}", expires_at)]) == [Outcome.WRITTEN]
    client = redis_server.client()
    assert client.get(b"memsession:" + b"k" * 32)[:1] == b"S"
    assert 590_000 < client.pttl(b"memsession:" + b"k" * 32) <= 600_000


def test_an_export_never_overwrites_a_logout(importer):
    redis_store().delete("k" * 32)
    outcomes = importer.write([record(b"{}", redis_store().clock() + 600)])
    assert outcomes == [Outcome.KEPT_LOGOUT]
    assert loaded("k" * 32) is None


def test_an_export_never_overwrites_a_copy_that_expires_later(importer):
    now = redis_store().clock()
    importer.write([record(b'{"v":2}', now + 900, Kind.MIRROR)])
    assert importer.write([record(b'{"v":1}', now + 600)]) == [Outcome.KEPT_NEWER]
    assert loaded("k" * 32) == {"v": 2}


def test_an_export_replaces_a_copy_that_expires_earlier(importer):
    now = redis_store().clock()
    importer.write([record(b'{"v":1}', now + 600)])
    assert importer.write([record(b'{"v":2}', now + 900)]) == [Outcome.WRITTEN]
    assert loaded("k" * 32) == {"v": 2}


def test_a_mirrored_write_never_overwrites_a_logout(importer):
    now = redis_store().clock()
    importer.write([Write(Kind.DELETE, "k" * 32)])
    assert importer.write([record(b'{"v":3}', now + 900, Kind.MIRROR)]) == [Outcome.KEPT_LOGOUT]
    assert loaded("k" * 32) is None


def test_an_expired_session_is_not_sent(importer, redis_server):
    assert importer.write([record(b"{}", redis_store().clock() - 1)]) == [Outcome.EXPIRED]
    assert redis_server.client().dbsize() == 0


# -- the export from this process ---------------------------------------------------------------


def test_sessions_and_logins_load_on_the_redis_engine_after_the_export(redis_url):
    anonymous = memory_session(cart=["tea"])
    logged_in = memory_session(_auth_user_id="7", visits=3)
    result = export_json(redis_url)
    assert result["total"]["written"] == 2 and result["total"]["logged_in"] == 1
    assert loaded(anonymous) == {"cart": ["tea"]}
    assert loaded(logged_in) == {"_auth_user_id": "7", "visits": 3}


def indexed(user: str) -> list[str]:
    """The session keys the Redis user index lists for ``user``."""
    return [row.key for row in redis_store().index.user_sessions(user)]


def test_an_exported_login_is_in_the_redis_user_index(redis_url):
    logged_in = memory_session(_auth_user_id="7")
    memory_session(_auth_user_id="8")
    export_json(redis_url)
    assert indexed("7") == [logged_in]


def test_a_login_made_after_the_export_is_mirrored_into_the_redis_user_index(redis_url):
    export_json(redis_url)
    key = memory_session(_auth_user_id="9")
    mirrored()
    assert indexed("9") == [key]


def test_an_anonymous_session_exported_touches_no_user_index(redis_url, redis_server):
    memory_session(cart=["tea"])
    export_json(redis_url)
    assert redis_server.client().keys("memsession:u:*") == []


def test_the_ttl_in_redis_is_the_sessions_remaining_life(redis_url, redis_server):
    session = MemorySession()
    session.set_expiry(1000)
    session.save()
    export_json(redis_url)
    ttl = redis_server.client().pttl(f"memsession:{session.session_key}")
    assert 990_000 < ttl <= 1_000_000


def test_a_change_after_the_export_is_mirrored(redis_url):
    key = memory_session(visits=1)
    export_json(redis_url)
    session = MemorySession(key)
    session["visits"] = 2
    session.save()
    mirrored()
    assert loaded(key) == {"visits": 2}


def test_a_logout_after_the_export_stays_a_logout_in_redis(redis_url):
    key = memory_session(_auth_user_id="7")
    export_json(redis_url)
    MemorySession(key).flush()
    mirrored()
    assert loaded(key) is None


def test_a_session_created_after_the_export_is_mirrored(redis_url):
    export_json(redis_url)
    key = memory_session(_auth_user_id="8")
    mirrored()
    assert loaded(key) == {"_auth_user_id": "8"}


def test_writes_and_deletes_from_many_threads_reach_redis_in_the_stores_order(redis_url):
    keys = [memory_session(n=0) for _ in range(20)]
    export_json(redis_url)

    def churn(key: str) -> None:
        for n in range(1, 30):
            session = MemorySession(key)
            session["n"] = n
            session.save()
        if keys.index(key) % 2:
            MemorySession(key).delete()

    threads = [threading.Thread(target=churn, args=(key,)) for key in keys for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mirrored()
    for key in keys:
        in_memory = runtime.get_store().get(key)
        expected = None if in_memory is None else MemorySession(key).load()
        assert loaded(key) == expected


def test_a_newer_copy_in_redis_is_not_overwritten(redis_url, importer):
    key = memory_session(version="memory")
    newer = current_codec().dumps({"version": "redis"})
    importer.write([record(newer, redis_store().clock() + 30 * DAY, Kind.MIRROR, key)])
    result = export_json(redis_url)
    assert result["total"]["kept_newer"] == 1
    assert loaded(key) == {"version": "redis"}


def test_pages_cut_to_the_page_size_copy_every_session(redis_url, monkeypatch):
    monkeypatch.setattr(export, "EXPORT_PAGE_BYTES", 2000)
    keys = [memory_session(blob="x" * 300) for _ in range(40)]
    pages = []
    ask = runtime.ask

    def counting_ask(*args, **kwargs):
        report = ask(*args, **kwargs)
        pages.append(len(report.exported))
        return report

    monkeypatch.setattr(runtime, "ask", counting_ask)
    result = export_json(redis_url)
    assert len(pages) > 5 and sum(pages) == 40
    assert result["total"]["written"] == 40
    assert all(loaded(key) == {"blob": "x" * 300} for key in keys)


def test_a_dry_run_writes_nothing_and_turns_no_mirroring_on(redis_url, redis_server):
    memory_session(_auth_user_id="7")
    result = export_json(redis_url, "--dry-run")
    assert (result["total"]["sessions"], result["total"]["logged_in"]) == (1, 1)
    assert redis_server.client().dbsize() == 0
    assert not mirror.marker_path().exists()
    assert memory_services._services.mirror is None


def test_redis_down_is_a_clear_error_with_nothing_turned_on(redis_server):
    memory_session(visits=1)
    redis_server.kill()
    try:
        with pytest.raises(CommandError) as raised:
            call_command("exportsessions", redis_server.url, stdout=io.StringIO())
    finally:
        redis_server.start()
    assert raised.value.returncode == 3
    assert "cannot be reached" in str(raised.value)
    assert not mirror.marker_path().exists()


def test_redis_failing_part_way_is_exit_3_and_not_claimed_as_done(
    redis_url, redis_server, monkeypatch
):
    monkeypatch.setattr(export, "EXPORT_PAGE_BYTES", 2000)
    for _ in range(20):
        memory_session(blob="x" * 300)
    ask = runtime.ask

    def redis_dies_after_the_first_page(*args, **kwargs):
        if kwargs["fields"]["offset"] > 0:
            redis_server.kill()
        return ask(*args, **kwargs)

    monkeypatch.setattr(runtime, "ask", redis_dies_after_the_first_page)
    out = io.StringIO()
    try:
        with pytest.raises(CommandError) as raised:
            call_command("exportsessions", redis_url, stdout=out, stderr=io.StringIO())
    finally:
        redis_server.start()
    assert raised.value.returncode == 3
    assert "Redis failed part-way" in str(raised.value)
    assert "Mirroring is on" not in out.getvalue()


def test_the_mirror_keeps_its_queue_while_redis_is_down_and_sends_it_in_order(
    redis_url, redis_server
):
    changed, logged_out = memory_session(v=1), memory_session(v=1)
    export_json(redis_url)
    redis_server.kill()
    services = memory_services._services
    try:
        for version in (2, 3):
            session = MemorySession(changed)
            session["v"] = version
            session.save()
        MemorySession(logged_out).delete()
        deadline = time.monotonic() + 30
        while services.mirror.state().failures == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert services.mirror.state().failures > 0
    finally:
        redis_server.start()  # empty: only what the mirror sends from now on is there
    mirror_of_this_process = services.mirror
    mirrored()
    assert mirror_of_this_process.lost == 0
    assert loaded(changed) == {"v": 3}
    assert redis_server.client().get(f"memsession:{logged_out}") == b"T"


def test_the_output_never_holds_a_session_key(redis_url):
    key = memory_session(visits=1)
    out, err = io.StringIO(), io.StringIO()
    call_command("exportsessions", redis_url, stdout=out, stderr=err)
    assert key not in out.getvalue() + err.getvalue()
    assert "1 copied to Redis" in out.getvalue()


def test_stop_mirroring_stops_it_here_and_for_processes_started_later(redis_url):
    export_json(redis_url)
    assert mirror.marker_path().exists()
    call_command("exportsessions", "--stop-mirroring", stdout=io.StringIO())
    assert not mirror.marker_path().exists()
    assert memory_services._services.mirror is None
    key = memory_session(visits=1)
    assert loaded(key) is None


# -- from a snapshot ----------------------------------------------------------------------------


def snapshot_of_the_store(path: Path) -> None:
    write_snapshot(path, runtime.get_store().copy_chunks(), epoch=1, started_at=0.0)


def test_a_snapshot_is_copied(redis_url, tmp_path):
    logged_in = memory_session(_auth_user_id="7")
    snapshot_of_the_store(tmp_path / "sessions.snapshot")
    runtime.clear()
    result = export_json(redis_url, "--from-snapshot", str(tmp_path / "sessions.snapshot"))
    assert result["total"]["written"] == 1
    assert loaded(logged_in) == {"_auth_user_id": "7"}


def test_a_session_journaled_after_the_snapshot_began_is_left_out(redis_url, tmp_path):
    path = tmp_path / "sessions.snapshot"
    kept, changed = memory_session(v=1), memory_session(v=1)
    snapshot_of_the_store(path)
    journal = Journal(path)
    journal.open(1)
    journal.append(changed, 1)
    journal.close()
    result = export_json(redis_url, "--from-snapshot", str(path))
    assert result["total"]["left_out"] == 1
    assert loaded(kept) == {"v": 1} and loaded(changed) is None


def test_records_of_a_snapshot_that_are_not_whole_are_left_out_and_counted(
    redis_url, tmp_path, redis_server
):
    """Signed by us, yet holding values no store wrote whole: each is treated as absent, the
    rest is copied, and no key is printed."""
    path = tmp_path / "sessions.snapshot"
    kept = memory_session(v=1)
    (good,) = [record for chunk in runtime.get_store().copy_chunks() for record in chunk]
    alive = time.time() + 600
    broken = [
        (PROBATION, "a" * 32, b"\x01"),  # shorter than the header
        (AUTHENTICATED, "b" * 32, HEADER.pack(alive, 0) + b"{}"),  # too short for its facts
        (AUTHENTICATED, "c" * 32, FACTS.pack(alive, 0, 1, 1, 500, 0) + b"7"),  # user cut short
    ]
    write_snapshot(path, [[*broken, good]], epoch=1, started_at=0.0)
    out = io.StringIO()
    call_command("exportsessions", redis_url, "--from-snapshot", str(path), stdout=out, stderr=out)
    assert "3 left out (not whole sessions" in out.getvalue()
    assert not any(key in out.getvalue() for key in ("a" * 32, "b" * 32, "c" * 32))
    assert loaded(kept) == {"v": 1}
    assert redis_server.client().exists(*(f"memsession:{c * 32}" for c in "abc")) == 0


def test_a_tampered_snapshot_is_refused(redis_url, tmp_path, redis_server):
    path = tmp_path / "sessions.snapshot"
    memory_session(v=1)
    snapshot_of_the_store(path)
    data = bytearray(path.read_bytes())
    data[-40] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CommandError, match="refused"):
        call_command("exportsessions", redis_url, "--from-snapshot", str(path))
    assert redis_server.client().dbsize() == 0


def test_stop_mirroring_after_every_process_moved_to_redis_succeeds(control_dir):
    """No memory process is left (all restarted onto Redis): the marker goes, exit 0."""
    mirror.write_marker("redis://127.0.0.1:6379/0")
    result = run_command("exportsessions", "--stop-mirroring", control_dir=control_dir)
    assert result.returncode == 0, result.stderr
    assert "started from now on: off" in result.stdout
    assert not mirror.marker_path().exists()


# -- bad arguments: a one-line error and a non-zero exit, never a traceback ----------------------


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redis://127.0.0.1:notaport/0", "its port is not a number from 1 to 65535"),
        ("redis://127.0.0.1/zero", "its database number (the path) is not a whole number"),
    ],
)
def test_a_bad_url_is_one_line_saying_what_to_write_and_exit_1(url, said, control_dir):
    result = run_command("exportsessions", url, control_dir=control_dir)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert said in line
    assert "redis://127.0.0.1:6379/0" in line
    assert not mirror.marker_path().exists()


def test_a_timeout_that_is_not_a_positive_number_is_refused_by_the_parser(redis_url, control_dir):
    result = run_command("exportsessions", redis_url, "--timeout", "-1", control_dir=control_dir)
    assert result.returncode == 2  # argparse's
    assert "Traceback" not in result.stderr
    assert "argument --timeout: '-1' is not a positive number of seconds" in result.stderr
    assert not mirror.marker_path().exists()
