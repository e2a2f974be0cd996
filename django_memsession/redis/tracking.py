"""The near cache's tracking connections (see ``near.py`` for the design): opening a pair with
tracking registered (:func:`register`), and reading the RESP2 pushes the invalidation connection
receives (:func:`parse_resp`). No state: the :class:`~django_memsession.redis.near.NearCache`
holds the pair, its lock and L1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .client import primary_connection
from .conf import StoreSettings

__all__ = ["INVALIDATE_CHANNEL", "parse_resp", "register"]

INVALIDATE_CHANNEL = b"__redis__:invalidate"
INVALIDATION_NAME = "memsession-near-invalidation"
WRITER_NAME = "memsession-near-writer"


def _connection(config: StoreSettings) -> redis.Connection:
    options = {**config.options, "protocol": 2, "health_check_interval": 0}
    # One attempt: a failure here is retried on a later request, not inside this one.
    options["retry"] = Retry(NoBackoff(), 0)
    # The URL's server, or under Sentinel the primary the sentinels name now.
    return primary_connection(config, options)


def register(
    config: StoreSettings, prefix: bytes, pid: int
) -> tuple[redis.Connection, int, redis.Connection]:
    """A fresh pair of connections with tracking registered: the invalidation connection
    (subscribed), its client id, and the writer connection (``CLIENT TRACKING on REDIRECT <id>
    BCAST PREFIX <prefix> NOLOOP``, read back). Raises what Redis or the network raised, the
    pair closed."""
    invalidation = writer = None
    try:
        invalidation = _connection(config)
        invalidation.send_command("CLIENT", "SETNAME", f"{INVALIDATION_NAME}-{pid}")
        invalidation.read_response()
        invalidation.send_command("CLIENT", "ID")
        client_id = int(invalidation.read_response())
        invalidation.send_command("SUBSCRIBE", INVALIDATE_CHANNEL)
        reply = invalidation.read_response()
        if not (isinstance(reply, list) and reply[0] == b"subscribe"):
            raise redis.ConnectionError("SUBSCRIBE was not confirmed")
        writer = _connection(config)
        writer.send_command("CLIENT", "SETNAME", f"{WRITER_NAME}-{pid}")
        writer.read_response()
        writer.send_command(
            "CLIENT",
            "TRACKING",
            "on",
            "REDIRECT",
            client_id,
            "BCAST",
            "PREFIX",
            prefix,
            "NOLOOP",
        )
        writer.read_response()
        # Read the registration back: it must redirect to the connection we listen on.
        writer.send_command("CLIENT", "TRACKINGINFO")
        info = writer.read_response()
        fields = dict(zip(info[::2], info[1::2], strict=False))
        if fields.get(b"redirect") != client_id:
            raise redis.ConnectionError("tracking does not redirect to our connection")
    except BaseException:
        for connection in (invalidation, writer):
            if connection is not None:
                connection.disconnect()
        raise
    return invalidation, client_id, writer


def parse_resp(buffer: bytearray) -> Iterator[Any]:
    """Complete RESP2 replies from the front of ``buffer``, removing what they used.

    Just what the invalidation connection receives: arrays (nested), bulk strings, the null
    bulk string (``$-1``, a flush), integers, simple strings and errors. A reply cut short stays
    in the buffer for the next read.
    """
    while buffer:
        try:
            value, end = _parse_one(buffer, 0)
        except IndexError:  # incomplete: wait for more bytes
            return
        del buffer[:end]
        yield value


def _parse_one(buffer: bytearray, start: int) -> tuple[Any, int]:
    line_end = _index(buffer, start)
    kind = buffer[start : start + 1]
    body = bytes(buffer[start + 1 : line_end])
    position = line_end + 2
    if kind == b"$":
        length = int(body)
        if length < 0:
            return None, position
        if len(buffer) < position + length + 2:
            raise IndexError("incomplete bulk string")
        return bytes(buffer[position : position + length]), position + length + 2
    if kind == b"*":
        count = int(body)
        if count < 0:
            return None, position
        items = []
        for _ in range(count):
            item, position = _parse_one(buffer, position)
            items.append(item)
        return items, position
    if kind == b":":
        return int(body), position
    if kind in (b"+", b"-"):
        return body, position
    raise ValueError(f"unexpected RESP type {kind!r} on the invalidation connection")


def _index(buffer: bytearray, start: int) -> int:
    found = buffer.find(b"\r\n", start)
    if found < 0:
        raise IndexError("incomplete line")
    return found
