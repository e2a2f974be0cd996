"""Waiting for replicas: a write that ends a logged-in session, or logs one in, is acknowledged
by the primary's replicas (Redis ``WAIT``) before it is reported done.

Redis replicates asynchronously: a failover loses the writes its replicas had not received. For
a logout that would bring the session back. So the engine sends ``WAIT <n> <timeout>`` pipelined
with such a write, on the write's own connection (``WAIT`` counts that connection's writes; it
cannot run inside a script), in the same round trip: :class:`WaitingRun`.

How many replicas (``MEMSESSION_REDIS_WAIT_REPLICAS``): ``"connected"`` (the default), every
replica connected to the primary, as ``INFO replication`` says (``connected_slaves``), read at
most every :data:`REFRESH` seconds per process, on a thread of its own once the first count is
known (:class:`Replicas`); a number; or ``0``, never wait. With no replica connected there is
nothing to wait for. A stale count is harmless: ``WAIT`` for more replicas than there are times
out, so the count is never raised above what ``INFO`` said.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from .exceptions import SessionBackendUnavailable

__all__ = [
    "ENDING",
    "LOGIN",
    "REFRESH",
    "AsyncClusterWaitingRun",
    "AsyncWaitingRun",
    "ClusterWaitingRun",
    "Replicas",
    "WaitingRun",
]

logger = logging.getLogger("django_memsession.redis")

# What a waited write is: one that ends a logged-in session (not acknowledged in time: not
# done, a 503), or one that logs a session in (not acknowledged: it goes on, logged).
ENDING, LOGIN = "ending", "login"
# Seconds between two reads of INFO replication (per process).
REFRESH = 5.0
# A login not acknowledged in time is logged once per this many seconds of such failures.
LOG_INTERVAL = 60.0


class Replicas:
    """How many replicas a waited write waits for, and what a short count means."""

    def __init__(
        self,
        client: Any,
        wanted: str | int,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.wanted = wanted
        self.timeout_ms = max(1, round(timeout * 1000))
        self.timeout = timeout
        self.clock = clock
        self._connected: int | None = None
        self._read_at = 0.0
        self._reading = False
        self._lock = threading.Lock()
        self._last_failure: float | None = None
        # On a cluster: each primary's connected replicas, by node name ("host:port").
        self.per_node: dict[str, int] = {}

    def needed(self) -> int:
        """How many replicas to wait for now: 0, do not wait."""
        wanted = self.wanted
        if wanted != "connected":
            return int(wanted)
        if self._connected is None:
            if not self._read_at or self.clock() - self._read_at >= REFRESH:
                self._read()  # the first time: on the request path, once per process
        elif self.clock() - self._read_at >= REFRESH:
            self._read_soon()
        return self._connected or 0

    async def aneeded(self) -> int:
        """:meth:`needed` in an event loop: the first read of ``INFO`` on a worker thread."""
        if self.wanted == "connected" and self._connected is None:
            if not self._read_at or self.clock() - self._read_at >= REFRESH:
                await asyncio.to_thread(self._read)
            return self._connected or 0
        return self.needed()

    def _read(self) -> None:
        try:
            if hasattr(self.client, "get_primaries"):  # a cluster: each primary's replicas
                info = self.client.info("replication", target_nodes="primaries")
                per_node = _per_node(info)
                connected = max(per_node.values(), default=0)
            else:
                per_node = {}
                connected = int(self.client.info("replication").get("connected_slaves", 0))
        except redis.RedisError as exc:
            # Unknown: wait for none until the next read (the write itself says whether Redis
            # answers). INFO refused (an ACL, a managed service): said once per process.
            with self._lock:
                self._reading = False
                refused = self._read_at == 0.0 and isinstance(exc, redis.ResponseError)
                self._read_at = self.clock() or 1e-9
            if refused:
                logger.warning(
                    "INFO replication is refused (%s): logouts and logins wait for no replica. "
                    "Set MEMSESSION_REDIS_WAIT_REPLICAS to the number of replicas.",
                    type(exc).__name__,
                )
            return
        with self._lock:
            self._connected = connected
            self.per_node = per_node
            self._read_at = self.clock()
            self._reading = False

    def _read_soon(self) -> None:
        with self._lock:
            if self._reading:
                return
            self._reading = True
        threading.Thread(target=self._read, name="memsession-replicas", daemon=True).start()

    def run(self, client: Any, needed: int) -> WaitingRun:
        if hasattr(client, "get_node_from_key"):  # a cluster: WAIT on the key's node
            per_node = self.per_node if self.wanted == "connected" else {}
            return ClusterWaitingRun(client, needed, self.timeout_ms, per_node)
        return WaitingRun(client, needed, self.timeout_ms)

    def check(self, run: WaitingRun, kind: str) -> None:
        """After a waited write Redis applied: raise for an ending not acknowledged in time (the
        request gets the 503; the tombstone on the primary stays), log a login (once per
        outage: a login lost in a failover costs a login, not security)."""
        acked = run.acked
        if acked is not None and acked >= run.needed:
            return
        shown = f"{acked or 0} of {run.needed} replica(s) acknowledged it within {self.timeout} s"
        if kind == ENDING:
            raise SessionBackendUnavailable(
                f"a logout was written on the primary but {shown} (WAIT): not reported as done, "
                "as a failover now could undo it"
            )
        now = self.clock()
        with self._lock:
            starting = self._last_failure is None or now - self._last_failure >= LOG_INTERVAL
            self._last_failure = now
        if starting:
            logger.warning(
                "A login was written on the primary but %s (WAIT); logins go on (a failover "
                "now would lose them), logged once per outage.",
                shown,
            )


def _per_node(info: Any) -> dict[str, int]:
    """``connected_slaves`` of each primary, from a cluster client's ``INFO replication`` sent to
    every primary (one reply per node)."""
    return {
        str(name): int(node.get("connected_slaves", 0))
        for name, node in info.items()
        if isinstance(node, dict)
    }


def command_key(command: tuple[Any, ...]) -> Any:
    """The key a command is routed by (its first), or None (``MULTI``, ``SCRIPT LOAD``...)."""
    name = str(command[0]).upper()
    if name in ("EVAL", "EVALSHA"):
        return command[3] if int(command[2]) else None
    if name in ("MULTI", "EXEC", "SCRIPT", "WAIT", "PING"):
        return None
    return command[1] if len(command) > 1 else None


class WaitingRun:
    """Runs a write's commands on one pool connection with ``WAIT`` pipelined after them, in one
    round trip; ``acked`` is the last ``WAIT``'s answer. Called as the store's ``run(*command)``;
    :meth:`batch` sends several commands (a ``MULTI`` ... ``EXEC``) the same way. Replies are
    Redis's own (no redis-py callbacks), as on the near cache's writer connection."""

    def __init__(self, client: Any, needed: int, timeout_ms: int) -> None:
        self.client = client
        self.pool = getattr(client, "connection_pool", None)
        self.needed = needed
        self.timeout_ms = timeout_ms
        self.acked: int | None = None

    def __call__(self, *args: Any) -> Any:
        return self.batch([args])[0]

    def batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        commands = [*commands, ("WAIT", self.needed, self.timeout_ms)]
        connection = self.pool.get_connection()
        try:
            # The engine's retry policy: once, at once, after a dropped connection; the WAIT
            # goes again with the write, so it counts the new connection's write.
            replies = connection.retry.call_with_retry(
                lambda: self._send(connection, commands),
                lambda _error: connection.disconnect(),
            )
        finally:
            self.pool.release(connection)
        return self._answered(replies)

    def _answered(self, replies: list[Any]) -> list[Any]:
        """The write's replies; ``acked`` from the WAIT's; the first error reply raised."""
        first_error = next((r for r in replies if isinstance(r, redis.ResponseError)), None)
        self.acked = replies[-1] if isinstance(replies[-1], int) else None
        if first_error is not None:
            raise first_error
        return replies[:-1]

    def _wait_read_timeout(self, connection: Any) -> float | None:
        """How long to read the ``WAIT``'s reply: the socket timeout plus the wait's own, so a
        wait that takes its whole timeout is never a socket timeout."""
        socket_timeout = connection.socket_timeout
        return None if socket_timeout is None else socket_timeout + self.timeout_ms / 1000

    def _send(self, connection: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        connection.send_packed_command(connection.pack_commands(commands), check_health=False)
        replies = []
        last = len(commands) - 1
        for at in range(len(commands)):
            try:
                if at == last:
                    timeout = self._wait_read_timeout(connection)
                    replies.append(connection.read_response(timeout=timeout))
                else:
                    replies.append(connection.read_response())
            except redis.ResponseError as exc:  # read every reply before the error is raised
                replies.append(exc)
        return replies


class ClusterWaitingRun(WaitingRun):
    """:class:`WaitingRun` on a Redis Cluster: each node's commands (grouped by their key's node)
    with ``WAIT`` after them on a connection of that node, never ``RedisCluster.wait()`` (which
    asks every node, on other connections than the write's). Each node waits for its own
    replicas (``per_node``, from ``INFO``; ``needed`` for a node not in it); ``acked`` and
    ``needed`` are then those of the node furthest short, if any. A ``MOVED`` (a slot moved)
    refreshes the slot map and sends again once."""

    def __init__(
        self, client: Any, needed: int, timeout_ms: int, per_node: dict[str, int] | None = None
    ) -> None:
        super().__init__(client, needed, timeout_ms)
        self.per_node = per_node or {}
        self.wanted = needed

    def _needed(self, node: Any) -> int:
        return self.per_node.get(node.name, self.wanted)

    def _result(self, answers: list[tuple[int | None, int]]) -> None:
        """``acked`` and ``needed`` from each node's (acked, needed)."""
        short = [(a, n) for a, n in answers if a is None or a < n]
        self.acked, self.needed = (short or answers or [(None, self.wanted)])[0]

    def __call__(self, *args: Any) -> Any:
        if command_key(args) is None:  # SCRIPT LOAD: every primary, nothing to wait for
            return self.client.execute_command(*args)
        return self.batch([args])[0]

    def _groups(self, commands: list[tuple[Any, ...]]) -> list[tuple[Any, list[int]]]:
        groups: dict[str, tuple[Any, list[int]]] = {}
        node = None
        for at, command in enumerate(commands):
            key = command_key(command)
            if key is not None or node is None:
                node = self.client.get_node_from_key(key if key is not None else b"")
            groups.setdefault(node.name, (node, []))[1].append(at)
        return list(groups.values())

    def batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        for attempt in (0, 1):
            replies: list[Any] = [None] * len(commands)
            answers: list[tuple[int | None, int]] = []
            moved = None
            for node, ats in self._groups(commands):
                connection = self.client.get_redis_connection(node)  # made if a MOVED named it
                run = WaitingRun(connection, self._needed(node), self.timeout_ms)
                try:
                    got = run.batch([commands[at] for at in ats])
                except redis.exceptions.MovedError as exc:
                    moved = exc
                    break
                answers.append((run.acked, run.needed))
                for at, reply in zip(ats, got, strict=True):
                    replies[at] = reply
            if moved is None:
                self._result(answers)
                return replies
            _moved(self.client, moved)
            if attempt:
                raise moved
        raise AssertionError("unreachable")


def _moved(client: Any, error: redis.exceptions.MovedError) -> Any:
    """Tell the cluster client's slot map what a ``MOVED`` said (what redis-py does when one of
    its own commands gets it); the asyncio client's answer is awaited."""
    nodes = client.nodes_manager
    move = getattr(nodes, "move_slot", None) or nodes.update_moved_exception
    return move(error)


class AsyncWaitingRun(WaitingRun):
    """:class:`WaitingRun` on ``redis.asyncio``: the same round trip, on a connection of the
    event loop's pool."""

    async def __call__(self, *args: Any) -> Any:  # type: ignore[override]
        return (await self.batch([args]))[0]

    async def batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:  # type: ignore[override]
        commands = [*commands, ("WAIT", self.needed, self.timeout_ms)]
        connection = await self.pool.get_connection()
        try:
            replies = await connection.retry.call_with_retry(
                lambda: self._asend(connection, commands),
                lambda _error: connection.disconnect(),
            )
        finally:
            await self.pool.release(connection)
        return self._answered(replies)

    async def _asend(self, connection: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
        replies = []
        last = len(commands) - 1
        for at in range(len(commands)):
            try:
                if at == last:
                    timeout = self._wait_read_timeout(connection)
                    replies.append(await connection.read_response(timeout=timeout))
                else:
                    replies.append(await connection.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies


async def evalsha(run: AsyncWaitingRun, script: Any, keys: list[bytes], args: list[Any]) -> Any:
    """A script through an async waiting runner: ``EVALSHA``, and ``SCRIPT LOAD`` first if
    Redis lost it (as the store's ``_evalsha``)."""
    try:
        return await run("EVALSHA", script.sha, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        sha = await run("SCRIPT", "LOAD", script.script)
        script.sha = sha.decode() if isinstance(sha, bytes) else sha
        return await run("EVALSHA", script.sha, len(keys), *keys, *args)


class AsyncClusterWaitingRun(ClusterWaitingRun):
    """:class:`ClusterWaitingRun` on ``redis.asyncio``'s cluster client."""

    async def __call__(self, *args: Any) -> Any:  # type: ignore[override]
        if command_key(args) is None:
            return await self.client.execute_command(*args)
        return (await self.batch([args]))[0]

    async def batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:  # type: ignore[override]
        await self.client.initialize()  # an asyncio cluster client learns the slots on first use
        for attempt in (0, 1):
            replies: list[Any] = [None] * len(commands)
            answers: list[tuple[int | None, int]] = []
            moved = None
            for node, ats in self._groups(commands):
                needed = self._needed(node)
                sent = [*(commands[at] for at in ats), ("WAIT", needed, self.timeout_ms)]
                connection = node.acquire_connection()
                try:
                    got = await AsyncWaitingRun._asend(self, connection, sent)  # type: ignore[arg-type]
                except BaseException:
                    await connection.disconnect()
                    raise
                finally:
                    node.release(connection)
                try:
                    got = self._answered(got)
                except redis.exceptions.MovedError as exc:
                    moved = exc
                    break
                answers.append((self.acked, needed))
                for at, reply in zip(ats, got, strict=True):
                    replies[at] = reply
            if moved is None:
                self._result(answers)
                return replies
            moving = _moved(self.client, moved)
            if asyncio.iscoroutine(moving):
                await moving
            if attempt:
                raise moved
        raise AssertionError("unreachable")
