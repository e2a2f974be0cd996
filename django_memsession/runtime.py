"""The one store of this process: built lazily from settings, kept right across forks and settings.

Nothing happens at import time except connecting a ``setting_changed`` receiver. The store is
built the first time something uses it (normally the first request that touches a session); then
the *first-use hooks* run once per process — the pruner thread and the control socket register
themselves here — so ``migrate``, ``shell``, ``check`` and runserver's autoreloader parent, which
never touch a session, start nothing.

Fork safety (gunicorn ``--preload``): before a fork the store's lock is taken (with a timeout, so
a thread stuck holding it cannot hang the parent); the child gets a fresh lock, recounts its bytes
if the lock could not be taken, and runs its own first-use hooks when it first uses the store.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from . import conf
from .signals import sessions_evicted, sessions_expired
from .sizing import format_size
from .store import MemoryStore, StoreEvent

logger = logging.getLogger("django_memsession")

_store: MemoryStore | None = None
_build_lock = threading.Lock()
_first_use_done = False
_fork_lock_taken = False

# Callables run once per process on first use of the store, and after a fork in the child.
first_use_hooks: list[Callable[[MemoryStore], None]] = []
fork_child_hooks: list[Callable[[], None]] = []
settings_hooks: list[Callable[[str], None]] = []

# Evictions on the request path are summed and logged at most once per this many seconds.
EVICTION_LOG_INTERVAL = 60.0


def get_store() -> MemoryStore:
    """This process's store (built, and its first-use hooks run, on the first call)."""
    store = _store
    if store is None or not _first_use_done:
        store = _build()
    return store


def _build() -> MemoryStore:
    global _store, _first_use_done
    with _build_lock:
        if _store is None:
            _store = MemoryStore(conf.limits(), on_event=_on_event)
            os.register_at_fork(
                before=_before_fork,
                after_in_parent=_after_fork_in_parent,
                after_in_child=_after_fork_in_child,
            )
        if not _first_use_done:
            _first_use_done = True
            for hook in first_use_hooks:
                try:
                    hook(_store)
                except Exception:
                    logger.exception(
                        "django_memsession: a start-up hook failed; sessions still work"
                    )
        return _store


def peek_store() -> MemoryStore | None:
    """The store if this process has built one, without building it or running hooks."""
    return _store


def stats() -> dict[str, Any]:
    """This process's figures: ``pid``, ``entries``, ``bytes``, ``max_bytes``, ``hits``, ``misses``,
    ``evictions``, ``expired`` and more (see README, "Stats")."""
    return get_store().stats()


def clear() -> None:
    """Empty this process's store and reset its counters, the once-a-minute eviction warning's
    among them (for tests)."""
    store = peek_store()
    if store is not None:
        store.clear()
    with _eviction_log_lock:
        _eviction_log.update(count=0, bytes=0, since=0.0)


# -- events -> signals and logging (never under the store's lock) -------------------------------

_eviction_log = {"count": 0, "bytes": 0, "since": 0.0}
_eviction_log_lock = threading.Lock()


def _on_event(events: list[StoreEvent]) -> None:
    for event in events:
        signal = sessions_evicted if event.kind == "evicted" else sessions_expired
        signal.send(sender=MemoryStore, count=event.count, bytes=event.bytes, reason=event.reason)
        if event.kind == "evicted" and event.reason == "write":
            _log_write_evictions(event)
        else:
            logger.debug(
                "%s %d sessions (%s) [%s]",
                event.kind,
                event.count,
                format_size(event.bytes),
                event.reason,
            )


def _log_write_evictions(event: StoreEvent) -> None:
    """One warning a minute at most: a full store under load must not flood the log."""
    now = time.monotonic()
    with _eviction_log_lock:
        _eviction_log["count"] += event.count
        _eviction_log["bytes"] += event.bytes
        if now - _eviction_log["since"] < EVICTION_LOG_INTERVAL:
            return
        count, size = _eviction_log["count"], _eviction_log["bytes"]
        _eviction_log.update(count=0, bytes=0, since=now)
    store = _store
    budget = format_size(store.limits.max_bytes) if store else "?"
    logger.warning(
        "Session store full: evicted %d least-recently-used sessions (%s) to stay within "
        "MEMSESSION_MAX_SIZE (%s). Evicted users keep their current request but must log in "
        "again later; raise MEMSESSION_MAX_SIZE if this happens often.",
        count,
        format_size(size),
        budget,
    )


# -- fork ---------------------------------------------------------------------------------------


def _before_fork() -> None:
    global _fork_lock_taken
    store = _store
    _fork_lock_taken = store is not None and store.lock.acquire(timeout=1.0)


def _after_fork_in_parent() -> None:
    global _fork_lock_taken
    if _fork_lock_taken and _store is not None:
        _store.lock.release()
    _fork_lock_taken = False


def _after_fork_in_child() -> None:
    global _first_use_done, _fork_lock_taken
    if _store is not None:
        _store.after_fork_in_child(consistent=_fork_lock_taken)
    _fork_lock_taken = False
    _first_use_done = False  # this process starts its own pruner and listener on first use
    for hook in fork_child_hooks:
        try:
            hook()
        except Exception:
            logger.exception("django_memsession: an after-fork hook failed")


# -- settings -----------------------------------------------------------------------------------


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    """``override_settings(MEMSESSION_*=...)`` takes effect on the live store."""
    if not setting.startswith("MEMSESSION_"):
        return
    store = _store
    if store is not None and not conf.problems():
        store.reconfigure(conf.limits())
    for hook in settings_hooks:
        hook(setting)
