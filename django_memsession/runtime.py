"""The public API's process functions, answering for this process's engine through the seam
(:func:`django_memsession.engines.current`): ``stats()``, ``report()``, ``gather()``, ``ask()``,
``start_listener()``, ``stop_listener()``, ``prune_everywhere()``.

``prune()``, ``snapshot()``, ``start_pruner()``, ``stop_pruner()``, ``clear()``, ``get_store()``
and ``peek_store()`` are the memory engine's (each process's own store), re-exported from
``memory/services.py``, where the memory engine's composition root now lives.
"""

from __future__ import annotations

import logging
from typing import Any

from . import control, engines
from .listener import Listener
from .memory import services as memory_services
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
from .messages import Gathered, ProcessReport

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

# A memory process mirrors its writes to Redis during a move (exportsessions): the memory engine
# builds that mirror through this hook, so it imports nothing of the Redis engine.
memory_services.mirror_factory = engines.redis_mirror


def start_listener() -> Listener | None:
    """Listen for this process now (idempotent); ``None`` when the channel is off or cannot
    start. Builds this engine's services if needed."""
    return engines.current().start_listener()


def stop_listener() -> None:
    """Stop this process's listener, whichever engine's services hold it."""
    for engine in engines.loaded():
        engine.stop_listener()


def stats() -> dict[str, Any]:
    """This process's figures: ``pid``, ``entries``, ``bytes``, ``max_bytes``, ``hits``,
    ``misses``, ``evictions``, ``expired`` and more (see README, "Stats"). On the Redis engine:
    this process's hits, misses and latency, and Redis's own figures under ``"redis"`` (None,
    and ``"problem"`` saying why, when Redis cannot give them)."""
    return engines.current().stats()


def report() -> ProcessReport:
    """This process's full picture: stats, uptime, pruner, size history."""
    return engines.current().report()


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
        local=engines.current().local_handler() if local else None,
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
    local = engines.current().local_handler()
    return control.ask(pid, command, fields=fields, timeout=timeout, dry_run=dry_run, local=local)


def prune_everywhere(*, dry_run: bool = False, timeout: float | None = None) -> Gathered:
    """Prune every live process of this project (``clearsessions``), all asked at once, within
    ``control.PRUNE_TIMEOUT`` seconds unless given; errors are logged."""
    gathered = gather("prune", dry_run=dry_run, timeout=timeout)
    for error in gathered.errors:
        logger.warning("clear_expired: %s", error)
    if gathered.problem:
        logger.warning("clear_expired: %s", gathered.problem)
    return gathered
