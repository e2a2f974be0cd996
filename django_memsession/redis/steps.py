"""Writes that span hash slots, sent as ordered steps.

On a Redis Cluster a session's key and its user's hash of the index live in different slots (and
usually on different nodes), so no script and no ``MULTI`` may touch both. Each of our scripts
touches the keys of one slot, all given in ``KEYS``; an operation that spans slots (a login, a
logout, a change of user, ending sessions, the per-user limit) is a list of *steps*, each step a
list of commands, sent in order so that a crash or a failover between two steps leaves a state
the index tolerates (see "Steps" in docs/architecture.md):

- a login indexes the session in its user's hash *before* its record says it is logged in (a
  stale member is repaired lazily; a logged-in session missing from the index is not allowed);
- a logout writes the tombstone *before* it removes the member;
- a change of user adds to the new user's hash, writes the session, then removes it from the old
  user's hash;
- ending sessions tombstones them all, then removes the members.

How the steps travel:

- One server (or Sentinel's primary): every step in one ``MULTI`` ... ``EXEC`` on one connection,
  one round trip as before (``WAIT`` pipelined after it when the write waits for replicas). The
  scripts of every step but the last go as ``EVAL``: an ``EVALSHA`` Redis has lost fails inside
  ``EXEC`` while the rest runs, which would run a later step without an earlier one. The last
  step's go as ``EVALSHA`` (its failing alone is what a crash before it leaves), sent again as
  ``EVAL`` if Redis lost them.
- A cluster: each step after the previous one has answered; a step's commands pipelined per
  node; the step that waits for replicas sends ``WAIT`` on each node it wrote to, on the write's
  own connection (``replicas.ClusterWaitingRun``). A step that fails stops the operation: the
  later steps are not sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
import redis.asyncio.cluster
import redis.cluster

from .scripts import source

__all__ = [
    "Command",
    "Eval",
    "aone",
    "apipelined",
    "asend_steps",
    "is_cluster",
    "one",
    "pipelined",
    "send_steps",
]


@dataclass(frozen=True, slots=True)
class Eval:
    """One of our scripts (``scripts.PARTS``) on keys of one slot."""

    name: str
    keys: tuple[bytes, ...]
    args: tuple[Any, ...]

    def evalsha(self) -> tuple[Any, ...]:
        return ("EVALSHA", sha(self.name), len(self.keys), *self.keys, *self.args)

    def eval(self) -> tuple[Any, ...]:
        return ("EVAL", source(self.name), len(self.keys), *self.keys, *self.args)


Command = Eval | tuple[Any, ...]


@cache
def sha(name: str) -> str:
    return hashlib.sha1(source(name).encode()).hexdigest()


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a Redis Cluster client (redis-py's, sync or async)."""
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def as_eval(command: Command) -> tuple[Any, ...]:
    return command.eval() if isinstance(command, Eval) else command


def first_error(replies: Sequence[Any]) -> Exception | None:
    return next((reply for reply in replies if isinstance(reply, Exception)), None)


def _split(replies: list[Any], steps: Sequence[Sequence[Command]]) -> list[list[Any]]:
    out, at = [], 0
    for step in steps:
        out.append(replies[at : at + len(step)])
        at += len(step)
    return out


def _in_transaction(steps: Sequence[Sequence[Command]]) -> list[tuple[Any, ...]]:
    """The steps' commands for one ``MULTI``: scripts as ``EVAL``, but the last step's as
    ``EVALSHA`` (a script Redis lost fails there alone, as a crash before the last step would
    leave it; it is sent again, as ``EVAL``: see :func:`_lost_scripts`)."""
    *before, last = steps
    return [
        *(as_eval(c) for step in before for c in step),
        *(c.evalsha() if isinstance(c, Eval) else c for c in last),
    ]


def _transaction(steps: Sequence[Sequence[Command]]) -> list[tuple[Any, ...]]:
    return [("MULTI",), *_in_transaction(steps), ("EXEC",)]


def _lost_scripts(steps: Sequence[Sequence[Command]], replies: list[Any]) -> list[int]:
    """Where the last step's scripts got ``NOSCRIPT`` (the only ones sent as ``EVALSHA``)."""
    start = len(replies) - len(steps[-1])
    return [
        at
        for at in range(start, len(replies))
        if isinstance(replies[at], redis.exceptions.NoScriptError)
    ]


def _raise_first(replies: Sequence[Any]) -> None:
    error = first_error(replies)
    if error is not None:
        raise error


def send_steps(
    client: Any, steps: Sequence[Sequence[Command]], run: Any = None, wait_at: int = 0
) -> list[list[Any]]:
    """Send ``steps`` in order (see the module's docstring); each step's replies. ``run``, a
    waiting runner (``replicas.WaitingRun``), sends the step ``wait_at`` with ``WAIT``; on one
    server it sends the whole transaction. Raises the first error reply (redis-py's class)."""
    steps = [step for step in steps if step]
    if not is_cluster(client):
        waiting = run is not None and hasattr(run, "batch")
        if waiting:
            replies = run.batch(_transaction(steps))[-1]
        else:
            replies = raw_batch(client, _transaction(steps))[-1]
        if isinstance(replies, Exception):
            raise replies
        replies = list(replies)
        flat = [c for step in steps for c in step]
        for at in _lost_scripts(steps, replies):
            replies[at] = (run if waiting else client.execute_command)(*as_eval(flat[at]))
        _raise_first(replies)
        return _split(replies, steps)
    out = []
    for at, step in enumerate(steps):
        if run is not None and hasattr(run, "batch") and at == wait_at:
            replies = waited(run, step)
        else:
            replies = pipelined(client, step)
        _raise_first(replies)
        out.append(list(replies))
    return out


def raw_batch(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Commands sent together on one connection of ``client``'s pool, their replies read as
    Redis gives them (no redis-py callbacks, none of its pipeline's bookkeeping: a ``MULTI``
    here costs little more than one command); an error reply in its place. A dropped
    connection is retried once, as every command of the engine is (a ``MULTI`` ... ``EXEC``
    that did not reach Redis ran nothing)."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        return connection.retry.call_with_retry(
            lambda: _send(connection, commands), lambda _error: connection.disconnect()
        )
    finally:
        pool.release(connection)


def _send(connection: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    connection.send_packed_command(connection.pack_commands(commands), check_health=False)
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(connection.read_response())
        except redis.ResponseError as exc:  # read every reply before the error is raised
            replies.append(exc)
    return replies


def waited(run: Any, step: Sequence[Command]) -> list[Any]:
    """A step sent with ``WAIT`` after it on each node it writes to (``run``, a
    ``replicas.ClusterWaitingRun``); scripts as ``EVAL`` (no ``SCRIPT LOAD`` to wait behind)."""
    return run.batch([as_eval(c) for c in step])


def pipelined(client: Any, step: Sequence[Command]) -> list[Any]:
    """Commands pipelined, not a transaction (on a cluster, redis-py groups them per node); a
    script Redis lost is sent again as ``EVAL``; an error reply in its place, not raised."""
    pipe = client.pipeline(transaction=False)
    for command in step:
        pipe.execute_command(*(command.evalsha() if isinstance(command, Eval) else command))
    replies = list(pipe.execute(raise_on_error=False))
    for at, reply in enumerate(replies):
        if isinstance(reply, redis.exceptions.NoScriptError):
            replies[at] = client.execute_command(*as_eval(step[at]))
    return replies


def one(client: Any, command: Command) -> Any:
    if not isinstance(command, Eval):
        return client.execute_command(*command)
    try:
        return client.execute_command(*command.evalsha())
    except redis.exceptions.NoScriptError:
        # Redis ran nothing: sending it again cannot apply a write twice. EVAL loads it too.
        return client.execute_command(*command.eval())


async def asend_steps(
    client: Any, steps: Sequence[Sequence[Command]], run: Any = None, wait_at: int = 0
) -> list[list[Any]]:
    """:func:`send_steps` on ``redis.asyncio``."""
    steps = [step for step in steps if step]
    if not is_cluster(client):
        if run is not None:
            replies = (await run.batch(_transaction(steps)))[-1]
        else:
            async with client.pipeline(transaction=True) as pipe:
                for command in _in_transaction(steps):
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
        if isinstance(replies, Exception):
            raise replies
        replies = list(replies)
        flat = [c for step in steps for c in step]
        for at in _lost_scripts(steps, replies):
            replies[at] = await (run if run is not None else client.execute_command)(
                *as_eval(flat[at])
            )
        _raise_first(replies)
        return _split(replies, steps)
    out = []
    for at, step in enumerate(steps):
        if run is not None and at == wait_at:
            replies = await awaited(run, step)
        else:
            replies = await apipelined(client, step)
        _raise_first(replies)
        out.append(list(replies))
    return out


async def awaited(run: Any, step: Sequence[Command]) -> list[Any]:
    """:func:`waited` on ``redis.asyncio``."""
    return await run.batch([as_eval(c) for c in step])


async def apipelined(client: Any, step: Sequence[Command]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in step:
        pipe.execute_command(*(command.evalsha() if isinstance(command, Eval) else command))
    replies = list(await pipe.execute(raise_on_error=False))
    for at, reply in enumerate(replies):
        if isinstance(reply, redis.exceptions.NoScriptError):
            replies[at] = await client.execute_command(*as_eval(step[at]))
    return replies


async def aone(client: Any, command: Command) -> Any:
    if not isinstance(command, Eval):
        return await client.execute_command(*command)
    try:
        return await client.execute_command(*command.evalsha())
    except redis.exceptions.NoScriptError:
        return await client.execute_command(*command.eval())
