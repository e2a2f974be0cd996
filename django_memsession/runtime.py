"""The public API's process functions, for the engine in ``SESSION_ENGINE``: ``stats()``,
``report()``, ``gather()``, ``ask()``, ``start_listener()``... On the memory engine they are its
services' (``memory/services.py``, where the memory engine's composition root now lives); on the
Redis engine they hand over to that engine's services, ``redis/services.py``, imported only then.

``prune()``, ``snapshot()``, ``start_pruner()``, ``stop_pruner()``, ``clear()``, ``get_store()``
and ``peek_store()`` are the memory engine's, re-exported from ``memory/services.py``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from . import conf, control
from .listener import Listener
from .memory import services as memory
from .memory.services import (
    SnapshotsOff,
    clear,
    get_store,
    install_signal_handlers,
    peek_store,
    prune,
    snapshot,
    start_pruner,
    stop_pruner,
    user_of_payload,
)
from .messages import Gathered, ProcessReport, Request

__all__ = [
    "SnapshotsOff",
    "ask",
    "clear",
    "gather",
    "get_store",
    "install_signal_handlers",
    "peek_store",
    "prune",
    "prune_everywhere",
    "report",
    "snapshot",
    "start_listener",
    "start_pruner",
    "stats",
    "stop_listener",
    "stop_pruner",
    "user_of_payload",
]

logger = logging.getLogger("django_memsession")

# The Redis engine's services: the functions below hand over to them on that engine.
REDIS_SERVICES = "django_memsession.redis.services"


def start_listener() -> Listener | None:
    """Listen for this process now (idempotent); ``None`` when the channel is off or cannot
    start. Builds the store (or, on the Redis engine, its services) if needed."""
    if conf.redis_engine():
        from .redis.services import start_listener as start_redis_listener

        return start_redis_listener()
    return memory.start_listener()


def stop_listener() -> None:
    """Stop this process's listener, whichever engine's services hold it."""
    memory.stop_listener()
    # Loaded only if this process used the Redis engine (importing it here would import redis).
    if REDIS_SERVICES in sys.modules:
        from .redis.services import stop_listener as stop_redis_listener

        stop_redis_listener()


def stats() -> dict[str, Any]:
    """This process's figures: ``pid``, ``entries``, ``bytes``, ``max_bytes``, ``hits``,
    ``misses``, ``evictions``, ``expired`` and more (see README, "Stats"). On the Redis engine:
    this process's hits, misses and latency, and Redis's own figures under ``"redis"`` (None,
    and ``"problem"`` saying why, when Redis cannot give them)."""
    if conf.redis_engine():
        from .redis.services import stats as redis_stats

        return redis_stats()
    return memory.stats()


def report() -> ProcessReport:
    """This process's full picture: stats, uptime, pruner, size history."""
    if conf.redis_engine():
        from .redis.services import report as redis_report

        return redis_report()
    return memory.report()


def _local_handler() -> Callable[[Request], ProcessReport] | None:
    if conf.redis_engine():
        from .redis.services import local_handler

        return local_handler()
    return memory.local_handler()


def gather(
    command: str = "report",
    *,
    dry_run: bool = False,
    timeout: float | None = None,
    fields: control.Fields | None = None,
    local: bool = True,
) -> Gathered:
    """Ask every live process of this project for ``command`` (see ``messages.COMMANDS``),
    this one directly when it holds a store (and ``local``)."""
    if timeout is None:
        timeout = control.PRUNE_TIMEOUT if command == "prune" else control.REPORT_TIMEOUT
    return control.fan_out(
        command,
        dry_run=dry_run,
        timeout=timeout,
        local=_local_handler() if local else None,
        fields=fields,
    )


def ask(
    pid: int,
    command: str,
    *,
    fields: control.Fields,
    timeout: float,
    dry_run: bool = False,
) -> ProcessReport:
    """Ask one process (this one directly): the next page of a long answer. Raises
    ``control.ChannelError``."""
    if pid == os.getpid():
        handler = _local_handler()
        if handler is None:
            raise control.Gone("this process holds no store")
        return handler(control.new_request(command, dry_run=dry_run, fields=fields))
    return control.request(
        control.socket_path(pid), command, dry_run=dry_run, timeout=timeout, fields=fields
    )


def prune_everywhere(*, dry_run: bool = False, timeout: float | None = None) -> Gathered:
    """Prune every live process of this project (``clearsessions``), all asked at once, within
    ``control.PRUNE_TIMEOUT`` seconds unless given; errors are logged."""
    gathered = gather("prune", dry_run=dry_run, timeout=timeout)
    for error in gathered.errors:
        logger.warning("clear_expired: %s", error)
    if gathered.problem:
        logger.warning("clear_expired: %s", gathered.problem)
    return gathered
