"""stats(), the figures behind the admin page, and the signals, on the Redis engine: against a
real redis-server."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import FakeClock
from redis_server import RedisServer

import django_memsession
from django_memsession import runtime
from django_memsession.messages import Sample
from django_memsession.redis import SessionStore, info, latency, services
from django_memsession.redis.history import History
from django_memsession.redis.store import get_store
from django_memsession.signals import sessions_expired

pytestmark = pytest.mark.usefixtures("redis_url")


def make_sessions(count: int) -> list[str]:
    keys = []
    for n in range(count):
        session = SessionStore()
        session["n"] = n
        session.save()
        keys.append(session.session_key)
    return keys


def load(session_key: str | None) -> dict:
    return dict(SessionStore(session_key).items())


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    """Move the web server's clock for the Redis store (Redis's own TTLs keep real time)."""
    store = get_store()
    fake = FakeClock(time.time())
    real = store.clock
    store.clock = fake
    yield fake
    store.clock = real


# -- this process's figures -----------------------------------------------------------------


def test_stats_on_redis_are_this_process_and_redis_not_a_memory_store():
    figures = django_memsession.stats()

    assert figures["engine"] == "redis"
    assert "entries" not in figures  # no memory store's figures: sessions are in Redis
    assert figures["redis"]["version"].startswith("7.")
    assert figures["problem"] is None


def test_loads_that_find_a_session_are_hits_and_the_others_misses():
    (key,) = make_sessions(1)
    before = django_memsession.stats()

    load(key)
    load(key)
    load("x" * 32)  # a valid-looking key of no session

    after = django_memsession.stats()
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (2, 1)


def test_round_trips_are_timed_and_give_p50_and_p99():
    make_sessions(5)

    figures = django_memsession.stats()

    assert figures["round_trips"] >= 5
    assert 0 < figures["latency_p50_ms"] <= figures["latency_p99_ms"]


async def test_async_round_trips_are_timed_too():
    before = latency.recorder.round_trips
    session = SessionStore()
    session["a"] = 1
    await session.asave()
    await SessionStore(session.session_key).aload()

    # SET NX; GET; and the promotion of a session back from probation.
    assert latency.recorder.round_trips - before == 3


def test_the_figures_read_for_stats_are_not_timed_as_round_trips():
    before = latency.recorder.round_trips

    django_memsession.stats()
    django_memsession.stats()

    assert latency.recorder.round_trips == before


def test_a_forked_child_counts_only_its_own_loads():
    """The child empties the one recorder in place, so the engine (which holds it by name)
    and the figures read it alike."""
    session = SessionStore()
    session.save()
    SessionStore(session.session_key).load()
    assert latency.recorder.hits >= 1
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status, never return into pytest
        status = 1
        try:
            before = latency.recorder.hits
            SessionStore(session.session_key).load()
            status = 0 if (before, latency.recorder.hits) == (0, 1) else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_percentiles_are_nearest_rank_over_the_last_round_trips_only():
    recorder = latency.Recorder()
    for _ in range(latency.RING_SIZE):
        recorder.round_trip(5.0)  # old and slow: pushed out of the ring below
    for ms in range(1, 101):
        for _ in range(latency.RING_SIZE // 100):
            recorder.round_trip(ms / 1000)
    for _ in range(latency.RING_SIZE % 100):
        recorder.round_trip(0.050)

    figures = recorder.figures()

    assert figures["round_trips"] == 2 * latency.RING_SIZE
    assert figures["latency_samples"] == latency.RING_SIZE
    assert figures["latency_p50_ms"] == 50.0
    assert figures["latency_p99_ms"] == 99.0


def test_a_recorder_before_any_round_trip_has_no_percentiles():
    figures = latency.Recorder().figures()

    assert (figures["latency_p50_ms"], figures["latency_p99_ms"]) == (None, None)


# -- Redis's figures -------------------------------------------------------------------------


def test_redis_figures_show_maxmemory_and_its_policy(redis_server: RedisServer):
    redis_server.set_maxmemory("64mb", "volatile-ttl")

    server = django_memsession.stats()["redis"]

    assert server["maxmemory"] == 64 * 1024 * 1024
    assert server["maxmemory_policy"] == "volatile-ttl"
    assert server["used_memory"] > 0
    assert server["used_percent"] == round(100 * server["used_memory"] / server["maxmemory"], 1)
    assert server["uptime"] >= 0


def test_evicted_and_expired_keys_are_redis_own_counts(redis_server: RedisServer):
    client = redis_server.client()
    try:
        client.set("expires-at-once", b"x", px=1)
        deadline = time.monotonic() + 5
        while client.exists("expires-at-once") and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        client.close()

    server = django_memsession.stats()["redis"]

    assert server["expired_keys"] >= 1
    assert server["evicted_keys"] == 0


def test_a_small_database_counts_sessions_and_logouts_exactly(redis_server: RedisServer):
    keys = make_sessions(3)
    SessionStore(keys[0]).delete()
    client = redis_server.client()
    try:
        client.set("someone-else:key", b"S is not ours")
        client.sadd(get_store().prefix + b"an-index", b"member")  # ours, not a session
    finally:
        client.close()

    server = django_memsession.stats()["redis"]

    assert (server["sessions"], server["tombstones"], server["keys"]) == (2, 1, 5)
    assert server["sessions_exact"] is True


def test_a_large_database_estimates_sessions_and_says_so(redis_server: RedisServer, monkeypatch):
    monkeypatch.setattr(info, "EXACT_LIMIT", 50)
    make_sessions(100)
    client = redis_server.client()
    try:
        client.mset({f"other:{n}": b"x" for n in range(100)})
    finally:
        client.close()

    server = django_memsession.stats()["redis"]

    assert server["sessions_exact"] is False
    assert server["sampled"] == info.SAMPLE_SIZE
    # Half the keys are sessions: 200 random keys put the estimate within 6 sigma of 100.
    assert 60 <= server["sessions"] <= 140


def test_a_prefix_with_glob_characters_counts_only_its_own_keys(
    redis_server: RedisServer, settings
):
    settings.MEMSESSION_REDIS_PREFIX = "s[1]*:"
    make_sessions(2)
    client = redis_server.client()
    try:
        client.set("s1x:not-ours", b"S")
    finally:
        client.close()

    assert django_memsession.stats()["redis"]["sessions"] == 2


def test_redis_unreachable_gives_a_reason_and_this_process_figures(redis_server: RedisServer):
    make_sessions(1)
    redis_server.kill()

    figures = django_memsession.stats()

    assert figures["redis"] is None
    assert figures["problem"].startswith("ConnectionError")
    assert figures["round_trips"] >= 1


def test_no_session_key_in_stats(redis_server: RedisServer):
    keys = make_sessions(3)
    for key in keys:
        load(key)

    text = json.dumps(django_memsession.stats())

    assert not any(key in text for key in keys)


# -- history -----------------------------------------------------------------------------------


def test_each_sample_records_sessions_and_redis_used_memory():
    make_sessions(2)

    assert services.sample_redis()

    last = runtime.report().history[-1]
    assert last.entries == 2
    assert last.bytes > 0  # Redis's used_memory then


def test_a_sample_when_redis_is_down_is_counted_as_failed(redis_server: RedisServer):
    before = runtime.report().redis.sample_failures
    redis_server.kill()

    assert not services.sample_redis()

    assert runtime.report().redis.sample_failures == before + 1


def test_the_history_thread_samples_every_interval():
    taken = threading.Semaphore(0)

    def read() -> Sample:
        taken.release()
        return Sample(time=time.time(), entries=1, bytes=1)

    history = History(read)
    try:
        assert history.start(0.01)
        for _ in range(3):
            assert taken.acquire(timeout=10)
    finally:
        assert history.stop()
    assert len(history.samples()) >= 3
    assert history.interval is None


def test_the_history_thread_follows_memsession_prune_interval(settings):
    services.redis_store()
    settings.MEMSESSION_PRUNE_INTERVAL = 3600

    assert runtime.report().redis.sample_interval == 3600

    settings.MEMSESSION_PRUNE_INTERVAL = 0
    assert runtime.report().redis.sample_interval is None


# -- the control channel -----------------------------------------------------------------------


def test_a_redis_process_answers_a_report_with_its_own_figures():
    make_sessions(1)

    gathered = runtime.gather("report")

    (report,) = gathered.processes
    assert report.stats is None and report.pruner is None
    assert report.redis is not None and report.redis.round_trips >= 1


def test_a_redis_process_says_it_does_not_prune_per_process():
    make_sessions(1)

    (report,) = runtime.gather("prune").processes

    assert report.result is None
    assert "Redis engine" in report.refused


# -- signals -----------------------------------------------------------------------------------


def test_a_load_of_a_session_expired_by_the_servers_clock_sends_sessions_expired(clock):
    session = SessionStore()
    session["a"] = 1
    session.set_expiry(60)
    session.save()
    sent = []

    def receiver(**kwargs):
        sent.append(kwargs)

    sessions_expired.connect(receiver)
    try:
        clock.advance(61)  # Redis keeps it (real time); the web server's clock says expired
        assert load(session.session_key) == {}
    finally:
        sessions_expired.disconnect(receiver)

    (signal,) = sent
    assert (signal["count"], signal["reason"]) == (1, "load")
    assert session.session_key not in repr(signal)


def test_a_load_of_a_logged_out_session_sends_no_signal():
    (key,) = make_sessions(1)
    SessionStore(key).delete()
    sent = []

    def receiver(**kwargs):
        sent.append(kwargs)

    sessions_expired.connect(receiver)
    try:
        load(key)
    finally:
        sessions_expired.disconnect(receiver)

    assert sent == []


def test_a_reason_from_a_pipeline_error_never_holds_the_command_or_its_key(
    redis_server: RedisServer,
):
    (key,) = make_sessions(1)
    admin = redis_server.client()
    admin.execute_command("ACL", "SETUSER", "default", "-getrange")
    try:
        pipe = get_store().client.pipeline(transaction=False)
        pipe.getrange(get_store().key(key), 0, 0)
        with pytest.raises(Exception) as raised:
            pipe.execute()
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+@all")
        admin.close()
    assert key in str(raised.value)  # redis-py's annotation names the command's arguments

    reason = info._reason(raised.value)

    assert key not in reason
    assert reason.startswith("NoPermissionError: ")


def test_a_hung_redis_gives_a_timeout_as_the_reason(redis_server: RedisServer):
    make_sessions(1)
    redis_server.pause()  # SIGSTOP: connections stay open, nothing answers

    figures = django_memsession.stats()

    assert figures["redis"] is None
    assert figures["problem"].startswith("TimeoutError")
