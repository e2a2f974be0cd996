"""Waiting for replicas: a write that ends a logged-in session, or logs one in, is acknowledged
by the primary's replicas (Redis ``WAIT``) before it is reported done.

Redis replicates asynchronously: a failover loses the writes its replicas had not received. For
a logout that would bring the session back. So the engine sends ``WAIT <n> <timeout>`` pipelined
with such a write, on the write's own connection (``WAIT`` counts that connection's writes; it
cannot run inside a script), in the same round trip: :class:`WaitingRun`.

How many replicas (``MEMSESSION_REDIS_WAIT_REPLICAS``): ``"connected"`` (the default), every
replica connected to the primary and in sync with it (``state=online`` in ``INFO replication``:
one still loading its first copy cannot acknowledge anything yet), read at most every
:data:`REFRESH` seconds per process, on a thread of its own once the first count is known, and
soon after any wait that came back short (:class:`Replicas`); a number; or ``0``, never wait.
With no replica connected there is nothing to wait for.

A count that is too high costs 503s (``WAIT`` times out); one too low could lose a logout. So the
count goes up at once, and goes down at once only on another primary (its ``master_replid``
changed: a failover happened, and the new primary's replicas are what counts). On the same
primary a lower count is believed only once it has been seen for :data:`REFRESH` seconds: a
replica that disappears may be the one just promoted, and until the sentinels reconfigure the old
primary every write it takes is lost, which its ``WAIT`` answering 0 is the only sign of.
"""

from __future__ import annotations

import asyncio
import logging
import os
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
# After a wait that came back short under Sentinel: for how long, and how often, the process asks
# the sentinels whether they name a new primary (see watch_sentinels()).
WATCH = 15.0
WATCH_EVERY = 0.1

_watched: set[int] = set()  # id() of the pools being watched
_watched_lock = threading.Lock()
# A child process has none of its parent's threads: none of its watches.
os.register_at_fork(after_in_child=_watched.clear)


def _watch_starts(pool: Any) -> bool:
    """Whether a watch of this pool may start (none runs); then it is marked as running."""
    if not hasattr(pool, "get_master_address"):
        return False  # not a Sentinel pool: a plain URL has no one to ask
    with _watched_lock:
        if id(pool) in _watched:
            return False
        _watched.add(id(pool))
    return True


def _watch_ends(pool: Any) -> None:
    with _watched_lock:
        _watched.discard(id(pool))


def watch_sentinels(pool: Any) -> None:
    """After a wait that came back short on a Sentinel pool: ask the sentinels every
    :data:`WATCH_EVERY` s, for up to :data:`WATCH` s, until they name another primary.

    A short wait is what an old primary answers once its replica has been promoted: the
    sentinels name the new one about a second later, but demote the old one only some ten
    seconds after that, and until then it takes writes that will be lost. redis-py's Sentinel
    pool drops its idle connections as soon as the address it is told changes, and each
    connection in use when it is released, so asking is enough to move this process's writes
    within :data:`WATCH_EVERY` of the announcement, whatever the traffic."""
    if not _watch_starts(pool):
        return
    threading.Thread(
        target=_watch, args=(pool,), name="memsession-failover-watch", daemon=True
    ).start()


def _watch(pool: Any) -> None:
    try:
        deadline = time.monotonic() + WATCH
        first = None
        while time.monotonic() < deadline:
            try:
                named = pool.get_master_address()
            except redis.RedisError:
                named = None  # no sentinel answers now: ask again
            if first is None:
                first = named
            elif named is not None and named != first:
                return
            time.sleep(WATCH_EVERY)
    finally:
        _watch_ends(pool)


async def _awatch(pool: Any) -> None:
    """:func:`_watch` on the event loop of an asyncio Sentinel pool."""
    try:
        deadline = time.monotonic() + WATCH
        first = None
        while time.monotonic() < deadline:
            try:
                named = await pool.get_master_address()
            except redis.RedisError:
                named = None
            if first is None:
                first = named
            elif named is not None and named != first:
                return
            await asyncio.sleep(WATCH_EVERY)
    finally:
        _watch_ends(pool)


_tasks: set[asyncio.Task[None]] = set()  # the running watches, kept from the garbage collector


def awatch_sentinels(pool: Any) -> None:
    """:func:`watch_sentinels` for an asyncio pool: a task on the running event loop."""
    if not _watch_starts(pool):
        return
    task = asyncio.get_running_loop().create_task(_awatch(pool))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def in_sync(info: dict[str, Any]) -> int:
    """How many replicas ``INFO replication`` (as redis-py parses it) lists as in sync."""
    return sum(
        1
        for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )


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
        self._replid: str | None = None  # the primary the count is about
        self._lower_since: float | None = None  # when this primary first said fewer
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
            per_node: dict[str, int] | None = None
            if hasattr(self.client, "get_primaries"):  # a cluster: each primary's replicas
                per_node = _per_node(self.client.info("replication", target_nodes="primaries"))
                info: dict[str, Any] = {}
                online = max(per_node.values(), default=0)
            else:
                info = self.client.info("replication")
                online = in_sync(info)
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
        replid = info.get("master_replid")
        with self._lock:
            now = self.clock()
            self._read_at = now or 1e-9
            self._reading = False
            if per_node is not None:  # a cluster: each node waits for its own, as read
                self.per_node, self._connected = per_node, online
                return
            if self._connected is None or online >= self._connected or replid != self._replid:
                self._connected, self._replid, self._lower_since = online, replid, None
            elif self._lower_since is None:
                self._lower_since = now  # fewer on the same primary: believed after REFRESH
            elif now - self._lower_since >= REFRESH:
                self._connected, self._lower_since = online, None

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
        if self.wanted == "connected":
            self._read_soon()  # a replica gone, or a new primary: the next write knows
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
    """How many replicas are in sync with each primary (:func:`in_sync`), from a cluster
    client's ``INFO replication`` sent to every primary (one reply per node, by its name)."""
    return {str(name): in_sync(node) for name, node in info.items() if isinstance(node, dict)}


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
        return self._answered(self.replies(commands))

    def replies(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The commands' replies and the ``WAIT``'s, last, an error reply in its place."""
        commands = [*commands, ("WAIT", self.needed, self.timeout_ms)]
        connection = self.pool.get_connection()
        try:
            # The engine's retry policy: once, at once, after a dropped connection; the WAIT
            # goes again with the write, so it counts the new connection's write.
            replies = connection.retry.call_with_retry(
                lambda: self._send(connection, commands),
                lambda _error: connection.disconnect(),
            )
            if self._short(replies):
                connection.disconnect()
                self.pool.disconnect(inuse_connections=False)
                watch_sentinels(self.pool)
        finally:
            self.pool.release(connection)
        return replies

    def _short(self, replies: list[Any]) -> bool:
        """Whether fewer replicas than needed acknowledged: perhaps a failover took them and
        this server is an old primary whose writes will be lost. Then the pool's connections
        are dropped, so the next writes connect again (at a plain URL they reach the same name
        again, at the cost of a connect after a wait that already took its timeout), and through
        Sentinel the process watches the sentinels until they name another primary
        (:func:`watch_sentinels`)."""
        return isinstance(replies[-1], int) and replies[-1] < self.needed

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

    def _asks(self, got: list[Any]) -> list[tuple[Any, list[int]]]:
        """The replies that are ``ASK``, grouped by the node they name (a node the client does
        not know is left out: its ``ASK`` stays the error)."""
        asked: dict[str, tuple[Any, list[int]]] = {}
        for at, reply in enumerate(got[:-1]):
            if isinstance(reply, redis.exceptions.AskError):
                node = self.client.get_node(host=reply.host, port=reply.port)
                if node is not None:
                    asked.setdefault(node.name, (node, []))[1].append(at)
        return list(asked.values())

    def _asked(self, sent: list[tuple[Any, ...]], got: list[Any]) -> list[tuple[int | None, int]]:
        """Each command ``ASK`` sent elsewhere (its key already migrated out of a slot being
        moved) sent again there after ``ASKING``, with ``WAIT``; its reply put in ``got`` in
        place of the ``ASK``. The (acked, needed) of each node asked."""
        answers = []
        for node, ats in self._asks(got):
            run = WaitingRun(
                self.client.get_redis_connection(node), self._needed(node), self.timeout_ms
            )
            again = run.replies([c for at in ats for c in (("ASKING",), sent[at])])
            for n, at in enumerate(ats):
                got[at] = again[2 * n + 1]
            answers.append((again[-1] if isinstance(again[-1], int) else None, run.needed))
        return answers

    def batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        for attempt in (0, 1):
            replies: list[Any] = [None] * len(commands)
            answers: list[tuple[int | None, int]] = []
            moved = None
            for node, ats in self._groups(commands):
                connection = self.client.get_redis_connection(node)  # made if a MOVED named it
                run = WaitingRun(connection, self._needed(node), self.timeout_ms)
                sent = [commands[at] for at in ats]
                got = run.replies(sent)
                if demoted(got):
                    moved = Demoted(node.name)
                    break
                answers += self._asked(sent, got)
                try:
                    got = run._answered(got)
                except redis.exceptions.MovedError as exc:
                    moved = exc
                    break
                answers.append((run.acked, run.needed))
                for at, reply in zip(ats, got, strict=True):
                    replies[at] = reply
            if moved is None:
                self._result(answers)
                return replies
            if isinstance(moved, Demoted):
                self.client.nodes_manager.initialize()
            else:
                _moved(self.client, moved)
            if attempt:
                raise moved
        raise AssertionError("unreachable")


class Demoted(redis.ConnectionError):
    """The node a write went to was a primary when the write arrived and a replica by the time
    its ``WAIT`` did (``WAIT cannot be used with replica instances``): a failover of its shard
    happened in between, and the write will be lost with the old primary's data. The slot map
    is learned again and the step sent again, to the new primary (the engine's steps are safe
    to repeat); a second time, an outage (a 503)."""

    def __init__(self, node: str) -> None:
        super().__init__(f"the node {node} became a replica during the write (a failover)")


def demoted(replies: list[Any]) -> bool:
    """Whether the ``WAIT`` (the last reply) was refused because the node is a replica now."""
    last = replies[-1]
    return isinstance(last, redis.ResponseError) and "replica" in str(last)


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
            if self._short(replies):
                await connection.disconnect()
                await self.pool.disconnect(inuse_connections=False)
                awatch_sentinels(self.pool)
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

    async def _aasked(
        self, sent: list[tuple[Any, ...]], got: list[Any]
    ) -> list[tuple[int | None, int]]:
        """:meth:`ClusterWaitingRun._asked` on ``redis.asyncio``."""
        answers = []
        for node, ats in self._asks(got):
            needed = self._needed(node)
            again_sent = [c for at in ats for c in (("ASKING",), sent[at])]
            again_sent.append(("WAIT", needed, self.timeout_ms))
            connection = node.acquire_connection()
            try:
                again = await AsyncWaitingRun._asend(self, connection, again_sent)  # type: ignore[arg-type]
            except BaseException:
                await connection.disconnect()
                raise
            finally:
                node.release(connection)
            for n, at in enumerate(ats):
                got[at] = again[2 * n + 1]
            answers.append((again[-1] if isinstance(again[-1], int) else None, needed))
        return answers

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
                if demoted(got):
                    moved = Demoted(node.name)
                    break
                answers += await self._aasked(sent, got)
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
            if isinstance(moved, Demoted):
                await self.client.nodes_manager.initialize()
            else:
                moving = _moved(self.client, moved)
                if asyncio.iscoroutine(moving):
                    await moving
            if attempt:
                raise moved
        raise AssertionError("unreachable")
