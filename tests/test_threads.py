"""Real threads against the process-global store: no exception, exact accounting afterwards."""

from __future__ import annotations

import contextlib
import random
import threading

from django.contrib.sessions.backends.base import UpdateError
from django.test import override_settings

from django_memsession import SessionStore
from django_memsession.runtime import get_store


def _worker(seed: int, rounds: int, errors: list[BaseException], keys: list[str]) -> None:
    rng = random.Random(seed)
    try:
        for _ in range(rounds):
            action = rng.random()
            if action < 0.3 or not keys:
                s = SessionStore()
                s["n"] = 0
                s["pad"] = "p" * rng.randrange(0, 800)
                s.save()
                keys.append(s.session_key)
            else:
                s = SessionStore(rng.choice(keys))
                if action < 0.7:
                    s.get("n")
                elif action < 0.85:
                    s["n"] = s.get("n", 0) + 1
                    # another thread may have flushed it meanwhile: Django's own outcome
                    with contextlib.suppress(UpdateError):
                        s.save()
                elif action < 0.95:
                    s.cycle_key()
                else:
                    s.flush()
    except BaseException as exc:  # pragma: no cover - reported by the assertion below
        errors.append(exc)


@override_settings(MEMSESSION_MAX_SIZE="256K", MEMSESSION_MAX_SESSION_SIZE="8K")
def test_eight_threads_of_mixed_operations_keep_accounting_exact():
    errors: list[BaseException] = []
    keys: list[str] = []
    threads = [
        threading.Thread(target=_worker, args=(seed, 3000, errors, keys)) for seed in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    store = get_store()
    stats = store.stats()
    assert stats["bytes"] == store.accounted_bytes()
    assert stats["bytes"] <= stats["max_bytes"]
    assert stats["evictions"] > 0
