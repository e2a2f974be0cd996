"""Under Sentinel: hearing of a failover when the sentinels announce it.

redis-py's Sentinel pool asks the sentinels for the primary only when it opens a connection.
After a failover the old primary stays up as a primary for several seconds (a planned
``SENTINEL FAILOVER``: until the sentinels get round to demoting it, about ten seconds), and a
worker whose pooled connections lead there goes on writing to it: writes that are lost when it
is demoted. A logout's ``WAIT`` notices (its replica has gone: a 503); nothing else does.

So each process that serves through Sentinel subscribes to the sentinels' ``+switch-master``
channel (:class:`SwitchListener`, one daemon thread, one connection to one sentinel at a time)
and, when they announce a new primary for the service, or when it (re)subscribes and may have
missed an announcement, tells the store (``moved``). The store asks its pools for the primary,
and redis-py's Sentinel pool, seeing another address, drops its idle connections and each busy
one as it comes back: every worker moves within moments of the announcement, whatever its
traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from .conf import StoreSettings

__all__ = ["CHANNEL", "SwitchListener", "ask_on_loop"]

logger = logging.getLogger("django_memsession.redis")

CHANNEL = "+switch-master"
# How long one wait for a message lasts (the thread checks whether it should stop in between),
# and the pause before the next sentinel when one cannot be reached.
LISTEN = 1.0
PAUSE = 0.5


class SwitchListener:
    """A daemon thread subscribed to ``+switch-master`` on one of ``config.sentinels`` (the
    next one when it cannot be reached), calling ``moved()`` for each announcement about
    ``config.service_name`` and after each (re)subscription. :meth:`close` stops it."""

    def __init__(self, config: StoreSettings, moved: Callable[[], None]) -> None:
        assert config.sentinels is not None
        self.sentinels = list(config.sentinels)
        self.options = dict(config.sentinel_options or {})
        self.service = config.service_name
        self.moved = moved
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="memsession-sentinel-switch", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()

    def _run(self) -> None:
        at = 0
        while not self._closed.is_set():
            host, port = self.sentinels[at % len(self.sentinels)]
            at += 1
            try:
                self._listen(host, port)
            except (redis.RedisError, OSError) as exc:
                logger.debug("Sentinel %s:%s: %s; listening to the next.", host, port, exc)
            except Exception:  # a bug here must not end the thread: only a failover's speed
                logger.exception("Listening for Sentinel's failovers failed; trying again.")
            self._closed.wait(PAUSE)

    def _listen(self, host: str, port: int) -> None:
        client = redis.Redis(host=host, port=port, **self.options)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL)
            self._tell()  # an announcement may have come while no one listened
            while not self._closed.is_set():
                message = pubsub.get_message(timeout=LISTEN)
                if message is not None and self._about_us(message.get("data")):
                    self._tell()
        finally:
            pubsub.close()
            client.close()

    def _about_us(self, data: Any) -> bool:
        """``<service> <old ip> <old port> <new ip> <new port>``, for our service."""
        if isinstance(data, bytes):
            data = data.decode(errors="replace")
        return isinstance(data, str) and data.split(" ", 1)[0] == self.service

    def _tell(self) -> None:
        try:
            self.moved()
        except Exception:
            logger.exception("Moving to the new primary failed; the next failed write will.")


def ask_on_loop(loop: asyncio.AbstractEventLoop, pool: Any) -> None:
    """From another thread: have an asyncio Sentinel pool ask for the primary on its own event
    loop (its connections belong to it). A closed loop has nothing to move."""

    def ask() -> None:
        task = loop.create_task(pool.get_master_address())
        task.add_done_callback(_quiet)

    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(ask)


def _quiet(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("Asking the sentinels for the primary failed: %s", task.exception())
