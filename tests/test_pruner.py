"""The pruner: one pass now, the periodic thread, and the record of its passes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.test import override_settings

from django_memsession import SessionStore, prune, start_pruner, stop_pruner
from django_memsession.memory import pruner as pruner_module
from django_memsession.memory.pruner import Pruner
from django_memsession.messages import ProcessReport, PrunerState, from_json, to_json
from django_memsession.runtime import get_store, report

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _no_pruner_left_running() -> Iterator[None]:
    yield
    assert stop_pruner()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until true or ``timeout`` seconds have passed (bounded, never bare)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def make_sessions(count: int, expiry: int) -> list[str]:
    keys = []
    for n in range(count):
        session = SessionStore()
        session["n"] = n
        session.set_expiry(expiry)
        session.save()
        keys.append(session.session_key)
    return keys


def test_prune_removes_only_expired_sessions_and_says_what_it_freed(global_clock):
    make_sessions(3, expiry=10)
    keep = make_sessions(2, expiry=1000)
    global_clock.advance(11)
    result = prune()
    assert (result.removed, get_store().stats()["entries"]) == (3, 2)
    assert result.bytes_freed > 0
    assert all(SessionStore().exists(key) for key in keep)


def test_dry_run_counts_without_removing(global_clock):
    make_sessions(3, expiry=10)
    global_clock.advance(11)
    assert prune(dry_run=True).removed == 3
    assert get_store().stats()["entries"] == 3


def pruner_state() -> PrunerState:
    return report().pruner


def test_prune_brings_an_over_full_store_down_to_low_water():
    make_sessions(400, expiry=1000)
    store = get_store()
    with override_settings(MEMSESSION_MAX_SIZE="64K", MEMSESSION_LOW_WATER=0.5):
        result = prune()
        assert result.evicted > 0
        assert store.stats()["bytes"] <= store.limits.low_water_bytes


def test_removed_is_expired_plus_evicted_everywhere(global_clock):
    make_sessions(400, expiry=1000)
    make_sessions(5, expiry=10)
    global_clock.advance(11)
    with override_settings(MEMSESSION_MAX_SIZE="64K", MEMSESSION_LOW_WATER=0.5):
        result = prune()
        last = pruner_state().last_pass
    assert result.expired == 5 and result.evicted > 0
    assert last is not None
    assert (last.removed, last.bytes_freed) == (
        result.expired + result.evicted,
        result.expired_bytes + result.evicted_bytes,
    )


def test_each_pass_is_recorded_with_time_removed_bytes_and_duration(global_clock):
    make_sessions(2, expiry=10)
    global_clock.advance(11)
    prune()
    last = pruner_state().last_pass
    assert last is not None
    assert last.started_at == global_clock.now
    assert (last.removed, last.bytes_freed > 0, last.duration >= 0) == (2, True, True)


def test_history_is_sampled_each_pass_and_bounded(make_store):
    pruner = Pruner(make_store())
    for _ in range(pruner_module.HISTORY_SAMPLES + 5):
        pruner.run_pass()
    assert len(pruner.history()) == pruner_module.HISTORY_SAMPLES


def test_report_goes_through_the_codec_unchanged():
    make_sessions(3, expiry=100)
    prune()
    before = report()
    assert from_json(ProcessReport, to_json(before)) == before
    assert (before.stats.entries, before.uptime >= 0) == (3, True)


def test_interval_zero_starts_no_thread():
    assert start_pruner(0) is False
    assert pruner_state().alive is False


def test_the_thread_removes_expired_sessions_by_itself(global_clock):
    make_sessions(4, expiry=10)
    global_clock.advance(11)
    assert start_pruner(0.02)
    assert wait_for(lambda: get_store().stats()["entries"] == 0)
    state = pruner_state()
    assert (state.alive, state.interval) == (True, 0.02)


def test_stop_pruner_stops_the_thread():
    start_pruner(0.02)
    assert stop_pruner()
    assert pruner_state().alive is False


def test_a_failing_pass_is_logged_and_the_thread_goes_on(monkeypatch, caplog):
    store = get_store()
    real = store.prune_expired
    calls = {"n": 0}

    def fail_once(**kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(**kwargs)

    monkeypatch.setattr(store, "prune_expired", fail_once)
    before = pruner_state().passes
    with caplog.at_level(logging.ERROR, logger="django_memsession"):
        start_pruner(0.02)
        assert wait_for(lambda: pruner_state().passes > before)
    assert pruner_state().failures >= 1
    assert "a pass failed" in caplog.text


def test_changing_the_interval_setting_restarts_the_thread():
    get_store()
    start_pruner(5)
    with override_settings(MEMSESSION_PRUNE_INTERVAL=3):
        assert pruner_state().interval == 3
    # Back to the suite's setting (0): off.
    assert pruner_state().alive is False


LAZY_START = """
import json, threading
import django
django.setup()
from django.core.management import call_command
import django_memsession

def names():
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("django_memsession"))

after_import = names()
call_command("check", verbosity=0)
after_check = names()
django_memsession.SessionStore().save()
after_first_use = names()
print(json.dumps([after_import, after_check, after_first_use]))
"""


def test_threads_start_on_first_use_of_the_store_not_at_import_or_check(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testsite.settings",
        "PYTHONPATH": str(TESTS_DIR),
        "MEMSESSION_CONTROL_DIR": str(tmp_path / "control"),
        "MEMSESSION_TEST_PRUNE_INTERVAL": "60",
    }
    result = subprocess.run(
        [sys.executable, "-c", LAZY_START],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    after_import, after_check, after_first_use = json.loads(result.stdout.splitlines()[-1])
    assert (after_import, after_check) == ([], [])
    assert after_first_use == ["django_memsession-control", "django_memsession-pruner"]


def test_memory_is_released_only_through_glibc_and_never_fails_elsewhere(monkeypatch):
    pruner_module._malloc_trim.cache_clear()
    monkeypatch.setattr(pruner_module.sys, "platform", "win32")
    try:
        assert pruner_module._malloc_trim() is None
        pruner_module.release_free_memory()  # a no-op, not an error
    finally:
        pruner_module._malloc_trim.cache_clear()
