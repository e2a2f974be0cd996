"""The seam between the surfaces and the engines: which engine this process runs, and its
services behind one interface.

:func:`current` is the only code that asks which engine ``SESSION_ENGINE`` names (read at each
call: tests change it). The surfaces (the public functions in ``runtime.py``, the admin page,
``everywhere.py``, the management commands) call through the :class:`Engine` it returns and never
branch on the engine. Each engine's services implement it: ``memory/services.py`` and
``redis/services.py``. Both are imported when first asked for, here: importing this module
imports neither, and the memory engine never imports redis-py.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings

from .conf import MEMORY_ENGINE, REDIS_ENGINE

if TYPE_CHECKING:
    from .listener import Listener
    from .memory.services import WriteMirror
    from .messages import ProcessReport, Request, SnapshotReport, UserSession

__all__ = ["Engine", "Index", "configured", "current", "loaded", "ready", "redis_mirror"]

# Each engine's services, once imported (see loaded()).
MEMORY_SERVICES = "django_memsession.memory.services"
REDIS_SERVICES = "django_memsession.redis.services"


class Index(Protocol):
    """Where a user's sessions are found and ended (``everywhere.py``'s functions use it)."""

    sender: type

    def sessions(self, uid: str) -> list[UserSession]:
        """The user's live sessions (unsorted)."""

    def end(self, uid: str, *, session_id_: str | None = None, keep: str | None = None) -> int:
        """End the one session with id ``session_id_`` if given, else all but ``keep`` (an id);
        how many ended."""

    def end_in_background(self, uid: str, keep: str | None, done: Any) -> threading.Thread | None:
        """End all but ``keep`` without holding the caller on a hung peer; ``done(count)``."""


class Engine(Protocol):
    """One engine's process services, as the surfaces see them."""

    name: str  # "memory" or "redis": what the JSON views and commands print
    # Whether every process shares one session server (Redis): no store, prune or snapshot per
    # process, and the server has figures of its own.
    shared: bool

    def stats(self) -> dict[str, Any]:
        """This process's figures (``django_memsession.stats()``)."""

    def report(self) -> ProcessReport:
        """This process's full picture, as it answers on the control channel."""

    def local_handler(self) -> Callable[[Request], ProcessReport] | None:
        """What answers this process's own part of a fan-out (None before its services run)."""

    def start_listener(self) -> Listener | None:
        """Listen on the control channel now (idempotent), the services started if need be."""

    def stop_listener(self) -> None:
        """Stop listening (no lock: see ``serving.close_listener``)."""

    def snapshot(self) -> SnapshotReport:
        """Write this process's snapshot now (the memory engine; the Redis engine has none and
        raises ``SnapshotsOff``)."""

    def prune_shared(self, *, dry_run: bool = False) -> Any:
        """One pass over what every process shares (the Redis engine's user index: an
        ``IndexPrune``); None where each process prunes its own store (then ask them all:
        ``runtime.gather("prune")``; ``runtime.prune()`` is this process's pass)."""

    def server_figures(self) -> tuple[dict[str, Any] | None, str | None]:
        """The shared server's own figures, or None and why not."""

    def index(self) -> Index:
        """Where who is logged in is answered."""


def _memory() -> Engine:
    from .memory.services import engine

    return engine


def _redis() -> Engine:
    from .redis.services import engine  # imports redis-py: only on the Redis engine

    return engine


def configured() -> str | None:
    """Which of this package's engines ``SESSION_ENGINE`` names: ``"memory"``, ``"redis"``, or
    None for another engine (read at each call: tests change it). The system checks ask this;
    nothing else compares ``SESSION_ENGINE``."""
    name = getattr(settings, "SESSION_ENGINE", "")
    if name == MEMORY_ENGINE:
        return "memory"
    if name == REDIS_ENGINE:
        return "redis"
    return None


def ready() -> bool:
    """``AppConfig.ready()``'s part (in the main thread): whether ``SESSION_ENGINE`` names one of
    this package's engines. On the memory engine with snapshots on, SIGTERM must reach the
    shutdown path where nothing else handles it (runserver, plain processes): its handler is
    installed now. Starts nothing, and imports nothing of the Redis engine (its checks report
    a missing redis-py)."""
    name = configured()
    if name == "memory":
        from .memory.services import install_signal_handlers

        install_signal_handlers()
    return name is not None


def current() -> Engine:
    """This process's engine: the Redis engine when ``SESSION_ENGINE`` names it, else the
    memory engine (what the package's public functions have always answered for)."""
    if configured() == "redis":
        return _redis()
    return _memory()


def loaded() -> list[Engine]:
    """The engines whose services this process has imported (so may have started): the
    shutdown paths stop them all, never importing one (that would import redis)."""
    found = []
    if MEMORY_SERVICES in sys.modules:
        found.append(_memory())
    if REDIS_SERVICES in sys.modules:
        found.append(_redis())
    return found


def redis_mirror(url: str) -> WriteMirror:
    """The memory services' ``mirror_factory``: a mirror of this process's store to the Redis at
    ``url`` while a move is under way (``exportsessions``). The memory engine never imports the
    Redis engine; this seam hands it the Redis side's mirror."""
    from .redis.move import mirror_for

    return mirror_for(url)
