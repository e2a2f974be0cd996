"""Real threads against the process-global store: no exception, no stale read, exact accounting.

Each thread owns the sessions it creates (it alone modifies, cycles and deletes them), and reads
anyone's. Every save writes a version drawn from one counter; ``last_saved[key]`` is the version
of the key's last save that has returned. A load that starts after that save must return that
version or a later one, or no session at all (evicted, or deleted by its owner), never an older
one.
"""

from __future__ import annotations

import itertools
import random
import threading
from dataclasses import dataclass, field

import pytest
from django.contrib.sessions.backends.base import UpdateError
from django.test import override_settings
from userindex import index_problems

import django_memsession
from django_memsession import SessionStore
from django_memsession.runtime import get_store


@dataclass
class Shared:
    versions: itertools.count = field(default_factory=itertools.count)
    last_saved: dict[str, int] = field(default_factory=dict)
    all_keys: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stale: list[tuple[str, int, int]] = field(default_factory=list)


def _save(shared: Shared, session: SessionStore, mine: list[str], old_key: str | None) -> None:
    """Write a new version; record it once the save has returned."""
    version = next(shared.versions)
    session["v"] = version
    try:
        session.save()
    except UpdateError:  # its remembered key was pushed out: Django's own outcome
        mine.remove(old_key)
        return
    key = session.session_key
    shared.last_saved[key] = version
    if key != old_key:  # it had been evicted: the save made a new session
        if old_key is not None:
            mine.remove(old_key)
        mine.append(key)
        shared.all_keys.append(key)


def _worker(shared: Shared, seed: int, operations: int) -> None:
    rng = random.Random(seed)
    mine: list[str] = []
    try:
        for _ in range(operations):
            action = rng.random()
            if action < 0.2 or not mine:
                session = SessionStore()
                session["pad"] = "p" * rng.randrange(0, 800)
                if rng.random() < 0.5:  # logged in: indexed under one of 20 users
                    session["_auth_user_id"] = str(rng.randrange(20))
                _save(shared, session, mine, None)
            elif action < 0.55:  # load anyone's session
                key = rng.choice(shared.all_keys)
                floor = shared.last_saved.get(key)
                version = SessionStore(key).get("v")
                if version is not None and floor is not None and version < floor:
                    shared.stale.append((key, floor, version))
            elif action < 0.8:  # load, modify, save one of mine
                key = rng.choice(mine)
                session = SessionStore(key)
                session.get("v")
                _save(shared, session, mine, key)
            elif action < 0.9:
                key = rng.choice(mine)
                session = SessionStore(key)
                session.cycle_key()
                mine.remove(key)
                if session.get("v") is not None:
                    shared.last_saved[session.session_key] = session["v"]
                    mine.append(session.session_key)
                    shared.all_keys.append(session.session_key)
            elif action < 0.995:
                key = mine.pop(rng.randrange(len(mine)))
                SessionStore(key).delete()
            elif action < 0.997:
                get_store().user_sessions(str(rng.randrange(20)))
            else:
                django_memsession.prune()
    except BaseException as exc:  # pragma: no cover - reported by the assertions below
        shared.errors.append(exc)


@pytest.mark.parametrize(
    "operations", [3_000, pytest.param(50_000, marks=pytest.mark.heavy)], ids=["3k", "50k"]
)
@override_settings(MEMSESSION_MAX_SIZE="256K", MEMSESSION_MAX_SESSION_SIZE="8K")
def test_eight_threads_of_mixed_operations(operations):
    shared = Shared()
    threads = [
        threading.Thread(target=_worker, args=(shared, seed, operations)) for seed in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads)
    assert shared.errors == []
    assert shared.stale == []
    store = get_store()
    figures = store.stats()
    assert figures["bytes"] == store.accounted_bytes()
    assert figures["bytes"] <= figures["max_bytes"]
    assert figures["evictions"] > 0 and figures["hits"] > 0
    # After it all: every indexed key is stored and logged in, every logged-in session indexed.
    assert figures["users"] > 0
    assert index_problems(store) == []
