"""The thread the pruner and the Redis history run on: ticks one interval apart, starting one
interval after the start; starts and stops one at a time; never two ticks at once."""

from __future__ import annotations

import threading

from django_memsession.periodic import Periodic


def test_the_first_tick_comes_one_interval_after_the_start():
    ticked = threading.Event()
    periodic = Periodic(ticked.set, "test-periodic")
    try:
        assert periodic.start(3600)
        assert not ticked.wait(0.2)
        assert periodic.interval == 3600
    finally:
        assert periodic.stop()
    assert periodic.interval is None


def test_it_ticks_every_interval_until_stopped():
    ticks = threading.Semaphore(0)
    periodic = Periodic(ticks.release, "test-periodic")
    try:
        assert periodic.start(0.01)
        for _ in range(3):
            assert ticks.acquire(timeout=10)
    finally:
        assert periodic.stop()
    assert not any(t.name == "test-periodic" for t in threading.enumerate())


def test_start_with_0_stops_the_thread():
    periodic = Periodic(lambda: None, "test-periodic")
    assert periodic.start(1)
    assert not periodic.start(0)
    assert periodic.interval is None


def test_a_restart_waits_for_the_tick_in_progress_so_ticks_never_overlap():
    entered, release = threading.Event(), threading.Event()
    running, most = [0], [0]
    lock = threading.Lock()

    def tick() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        entered.set()
        release.wait(10)
        with lock:
            running[0] -= 1

    periodic = Periodic(tick, "test-periodic")
    try:
        periodic.start(0.01)
        assert entered.wait(10)
        restart = threading.Thread(target=periodic.start, args=(0.02,))
        restart.start()
        restart.join(0.3)
        assert restart.is_alive()  # waiting for the tick in progress
        entered.clear()
        release.set()
        restart.join(10)
        assert not restart.is_alive()
        assert entered.wait(10)  # the new thread ticks
        assert periodic.interval == 0.02
    finally:
        release.set()
        assert periodic.stop()
    assert most[0] == 1
