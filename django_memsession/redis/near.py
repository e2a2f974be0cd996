"""The near cache: a memory store (L1) in each process, in front of Redis (L2), kept coherent by
Redis's server-assisted invalidation (``CLIENT TRACKING``).

Why not redis-py's own client-side cache: it needs Redis 7.4, and Debian's is 7.0. Why not an L1
with a TTL, as the usual L1/L2 guides do: a logout served by one process would be ignored by the
others until their copy aged out. Here no process serves a version older than the last write or
delete that has returned anywhere, by construction:

* **Two connections of our own per process**, both RESP2. The *invalidation connection* is
  subscribed to ``__redis__:invalidate``. The *writer connection* carries the tracking
  registration, ``CLIENT TRACKING on REDIRECT <invalidation id> BCAST PREFIX <prefix> NOLOOP``,
  and the writes this process makes while tracking is on whose result L1 may keep (a write
  with nothing to keep goes on the pool, in parallel, and comes back to us like anyone else's).
  ``BCAST`` sends us an invalidation for every write under the prefix by anyone (no per-key
  tracking to lose on data connections);
  ``NOLOOP`` leaves out the writes made through the writer connection itself, so a save can put
  its own new version into L1 without invalidating it. Redis sends one invalidation per key per
  event-loop turn and leaves it out for a ``NOLOOP`` client only when that client was the key's
  *last* writer in the turn: a write by another client after ours in the same turn reaches us;
  one before ours does not (our own write saw it, and we keep or drop what we wrote).
* **A script's save claims its key.** Redis 7.0 attributes a script's writes to its script
  client, so ``NOLOOP`` does not leave them out: our own save would come back and drop its copy.
  The save sends the script with its TTL a millisecond short and pipelines ``PEXPIRE key ttl
  GT`` right after it on the writer connection, which gives the key its TTL (never a longer one)
  and makes the writer the key's last writer in that turn (see :meth:`NearCache.execute`).
* **Invalidations are applied before a copy is served.** Redis sends the invalidation of a write
  (in ``beforeSleep``) before the writer's reply, so by the time a write has returned to its
  caller, the invalidation is on its way to every process. Every L1 hit first polls both our
  sockets with a zero timeout and drains the invalidation connection when it is readable; all
  of it under one lock, so no hit can slip between reading an invalidation and applying it.
* **The races are closed with tickets.** A command whose answer may go into L1 (a ``GET``, a
  save) takes a ticket before it is sent: the reset epoch, and how many invalidations of that
  key have arrived so far. The insert is refused if either moved. That closes the *fill race*
  (a ``GET`` returns v1, the invalidation of v2 arrives and finds nothing to remove, then v1
  would be cached) and the *write-then-fill race* (we store v2, another process stores v3 and
  its invalidation lands before v2 enters L1). A write of our own counts as an invalidation of
  the key for every ticket taken before it *from the moment it begins*, and no load fills L1
  while one is in flight: being the last writer in a turn hides the invalidation of another
  process's write just before ours, which a load in flight may have missed.
* **Tracking loss empties and bypasses L1.** When either connection drops (``CLIENT KILL``, a
  Redis restart, a network fault), its ``BCAST`` registration is gone with it; a flush
  (``FLUSHALL``, ``FLUSHDB``) arrives as a null invalidation. Each empties L1 and moves the reset
  epoch (so every ticket in flight is refused); after a loss, L1 is bypassed until tracking is
  registered again. That is always on a fresh pair: a writer connection that outlives its
  invalidation connection goes on redirecting to the old client id with no error
  (redis/redis#13082), so it is never reused, and the new registration is read back with
  ``CLIENT TRACKINGINFO`` before L1 is used again. Nor is a writer connection that redis-py
  closed (an error in the middle of a reply): its next command would reopen it silently,
  without tracking; that is taken as a loss.

What is cached: settled sessions only (a session on probation must reach Redis on its next load,
which promotes it), each with its own expiry (a copy never outlives its session; Redis's TTL of
a settled session ends at the same time, and reads never move it, so Redis never expires a
session that L1 still serves). The L1 is the memory engine's store, with its byte budget and
eviction policy; a session larger than an eighth of the budget is not kept. Opening a tracking
pair and reading its pushes: ``tracking.py``.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from ..memory.store import EntryTooLarge, Limits, MemoryStore, PutResult
from ..sizing import EntrySizer
from .conf import NEAR_CACHE_LOW_WATER, NEAR_CACHE_SESSION_SHARE, StoreSettings
from .tracking import INVALIDATE_CHANNEL, parse_resp, register

__all__ = ["NearCache", "Ticket", "WriterLost", "parse_resp"]

# How long after a failed attempt to register tracking again (on the monotonic clock): a Redis
# that is down is not asked on every request.
RETRY_INTERVAL = 1.0
POLL_EVENTS = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


class WriterLost(Exception):
    """The writer connection failed before a reply: tracking is down; the write may be sent
    again on the pool (as the store retries a dropped connection once)."""

    def __init__(self, cause: redis.ConnectionError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Flight:
    """The commands in flight for one key: how many, how many of them are writes of ours, and
    how many invalidations of the key have arrived (or writes of ours begun or finished) since
    the first of them was sent."""

    __slots__ = ("invalidations", "users", "writes")

    def __init__(self) -> None:
        self.users = 0
        self.writes = 0
        self.invalidations = 0


class Ticket:
    """Taken before a command whose answer may go into L1; checked before the insert."""

    __slots__ = ("echoes", "epoch", "flight", "seen", "session_key", "write", "writer")

    def __init__(
        self,
        session_key: str,
        epoch: int,
        flight: _Flight,
        *,
        write: bool = False,
        writer: _Writer | None = None,
    ) -> None:
        self.session_key = session_key
        self.epoch = epoch
        self.flight = flight
        self.seen = flight.invalidations
        self.write = write
        self.writer = writer  # set for a write to be sent on the writer connection
        # A write whose invalidation will come back to us (a script's, not claimed): what it
        # wrote is not kept.
        self.echoes = False


class _Writer:
    """The writer connection and the lock that serializes this process's writes on it."""

    __slots__ = ("connection", "lock")

    def __init__(self, connection: redis.Connection) -> None:
        self.connection = connection
        self.lock = threading.Lock()


class NearCache:
    """One process's L1 and its tracking. Thread-safe; built by the Redis store when
    ``MEMSESSION_REDIS_NEAR_CACHE`` is set, dropped with it (and in a forked child)."""

    def __init__(
        self,
        config: StoreSettings,
        clock: Callable[[], float],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        assert config.near_cache_bytes is not None
        self.config = config
        self.prefix = config.prefix.encode()
        budget = config.near_cache_bytes
        # conf's defaults for the near cache, not the memory engine's settings:
        # MEMSESSION_LOW_WATER and MEMSESSION_MAX_SESSION_SIZE size its store, not this cache.
        limits = Limits(
            max_bytes=budget,
            max_session_bytes=budget // NEAR_CACHE_SESSION_SHARE,
            low_water=NEAR_CACHE_LOW_WATER,
        )
        self.l1 = MemoryStore(limits, clock=clock, sizer=EntrySizer())
        self.monotonic = monotonic
        self.retry_interval = retry_interval
        self.pid = os.getpid()
        # One lock for the state below, L1's contents and the invalidation socket: reading an
        # invalidation and applying it happen in one hold, so a hit never falls between them.
        # The socket is non-blocking and read only when poll() says it has data: the lock is
        # never held while waiting on the network.
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._up = False
        self._epoch = 0
        self._next_attempt = 0.0
        self._flights: dict[str, _Flight] = {}
        self._invalidation: redis.Connection | None = None
        self._invalidation_socket: socket.socket | None = None
        self._invalidation_id: int | None = None
        self._writer: _Writer | None = None
        self._retired: list[_Writer] = []
        self._poller: Any = None
        self._buffer = bytearray()
        self.l1_hits = 0
        self.invalidations = 0
        self.flushes = 0
        self.losses = 0
        self.registrations = 0
        self.fills = 0
        self.refused = 0
        self.last_loss: str | None = None

    # -- the hit path ---------------------------------------------------------------------------

    def get(self, session_key: str) -> bytes | None:
        """The L1 copy of a session's record (``S`` + expiry + data), or None: not there,
        expired, or L1 not usable now. Invalidations that have arrived are applied first."""
        with self._lock:
            if not self._up:
                return None
            events = self._poller.poll(0)
            if events and not self._service(events):
                return None
            record = self.l1.get(session_key)
            if record is not None:
                self.l1_hits += 1
            return record

    def _service(self, events: list[tuple[int, int]]) -> bool:
        """Drain the invalidation socket and check the writer connection (lock held). False
        when L1 must not be used for this call: tracking was lost, or a write in flight makes
        the writer connection readable (its reply, or its end: cannot tell without it)."""
        invalidation_fd = self._invalidation_socket.fileno()  # type: ignore[union-attr]
        usable = True
        for fd, _ in events:
            if fd == invalidation_fd:
                self._drain()
            else:
                usable = self._check_writer() and usable
            if not self._up:
                return False
        return usable

    def _drain(self) -> None:
        sock = self._invalidation_socket
        assert sock is not None
        # Read until the socket has nothing more, never stopping at a short read: Redis
        # closes a killed connection (or exits) right after the invalidations it had sent, and
        # an end left unread behind them would let this call serve copies that no
        # invalidation can reach any more.
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                break
            except OSError as exc:
                self._lose(f"invalidation connection failed: {type(exc).__name__}")
                return
            if not data:
                self._lose("invalidation connection closed by Redis")
                return
            self._buffer += data
        self._invalidate_buffered()

    def _invalidate_buffered(self) -> None:
        """Apply every complete message read so far (lock held); a message cut short waits in
        the buffer for the rest of its bytes."""
        try:
            messages = list(parse_resp(self._buffer))
        except ValueError:
            self._lose("unreadable message on the invalidation connection")
            return
        for message in messages:
            if (
                isinstance(message, list)
                and len(message) == 3
                and message[0] == b"message"
                and message[1] == INVALIDATE_CHANNEL
            ):
                self._invalidate(message[2])

    def _invalidate(self, keys: list[bytes] | None) -> None:
        if keys is None:  # FLUSHALL / FLUSHDB: everything is invalid
            self.flushes += 1
            self._reset()
            return
        prefix_length = len(self.prefix)
        for key in keys:
            self.invalidations += 1
            if not key.startswith(self.prefix):
                continue
            session_key = key[prefix_length:].decode(errors="replace")
            self.l1.delete(session_key)
            flight = self._flights.get(session_key)
            if flight is not None:
                flight.invalidations += 1

    def _check_writer(self) -> bool:
        writer = self._writer
        if writer is None or not writer.lock.acquire(blocking=False):
            return False  # a write is in flight: its reply may be what made the socket readable
        try:
            sock = writer.connection._sock
            # Polled again under the writer's lock: the reply that made it readable may have
            # been read since. Only then peeked: the socket has redis-py's timeout, and
            # Python waits up to that long for data before a recv() on such a socket, even
            # with MSG_DONTWAIT (holding our lock, and then taking "no data" for an end).
            if sock is not None and not select.select([sock], [], [], 0)[0]:
                return True
            try:
                data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) if sock else b""
            except (BlockingIOError, InterruptedError, TimeoutError):
                return True
            except OSError:
                data = b""
            # Idle, it should never be readable: its end (b"") or anything else means its
            # tracking registration cannot be trusted.
            self._lose(
                "writer connection closed by Redis" if not data else "unexpected writer data"
            )
            return False
        finally:
            writer.lock.release()

    # -- tickets and inserts --------------------------------------------------------------------

    def begin(
        self, session_key: str, *, write: bool = False, on_writer: bool = True
    ) -> Ticket | None:
        """A ticket for a command about to be sent, or None when L1 is not in use (then
        nothing goes into it). ``write``: a write of ours; with ``on_writer``, the ticket
        carries the writer connection to send it on (whose own writes do not come back as
        invalidations: ``NOLOOP``); without, it is sent on the pool and nothing of it is kept.

        A write of ours counts as an invalidation of the key for every ticket taken before it,
        from the moment it begins, and no load fills L1 while one is in flight: Redis tells a
        ``NOLOOP`` client nothing of a key whose last writer in an event-loop turn was that
        client, so another process's write just before ours, in the same turn, reaches us only
        as our own reply. A load that read the version before it must not be cached.
        """
        with self._lock:
            if not self._up:
                return None
            flight = self._flights.get(session_key)
            if flight is None:
                flight = self._flights[session_key] = _Flight()
            flight.users += 1
            if write:
                flight.writes += 1
                flight.invalidations += 1
            writer = self._writer if write and on_writer else None
            return Ticket(session_key, self._epoch, flight, write=write, writer=writer)

    def fill(self, ticket: Ticket, record: bytes | None, expires_at: float, *, wrote: bool) -> bool:
        """Finish a ticket: insert ``record`` (a settled session's record, whose session
        expires at ``expires_at``) unless an invalidation of the key, or a reset, arrived after
        the ticket was taken. ``record`` None inserts nothing; with ``wrote``, the key's L1
        copy is removed (a write of ours whose new version is not to be kept). ``wrote`` also
        counts the write as an invalidation for every other ticket of the key in flight.
        Returns whether the record went into L1."""
        with self._lock:
            if self._up:
                events = self._poller.poll(0)
                if events:  # invalidations that have arrived count against this ticket
                    self._service(events)
            flight = ticket.flight
            valid = (
                self._up
                and ticket.epoch == self._epoch
                and ticket.seen == flight.invalidations
                # a load: no write of ours in flight; a write: no other one of ours
                and flight.writes == int(ticket.write)
                and not ticket.echoes
                and (ticket.writer is not None or not ticket.write)  # a write on the pool echoes
            )
            stored = False
            if record is not None and valid:
                stored = self._put(ticket.session_key, record, expires_at)
                self.fills += stored
            elif record is not None:
                self.refused += 1
            if wrote:
                if not stored:
                    self.l1.delete(ticket.session_key)
                flight.invalidations += 1
            if ticket.write:
                flight.writes -= 1
            flight.users -= 1
            if flight.users == 0 and self._flights.get(ticket.session_key) is flight:
                del self._flights[ticket.session_key]
            return stored

    def _put(self, session_key: str, record: bytes, expires_at: float) -> bool:
        # The memory store's own update first (keeps the entry's place in its eviction policy),
        # a create when the key is not there. Every copy is stored as anonymous: L1 holds
        # copies of Redis records, not this process's sessions, so its user index (who is
        # logged in, per-user limits) stays empty and nothing counts a session twice; a
        # logged-in copy's facts header would only cost bytes and a copy a second on hits.
        try:
            result = self.l1.put(session_key, record, expires_at, authenticated=False, create=False)
            if result is PutResult.MISSING:
                result = self.l1.put(
                    session_key, record, expires_at, authenticated=False, create=True
                )
        except EntryTooLarge:
            self.l1.delete(session_key)
            return False
        return result is not PutResult.MISSING

    def forget(self, session_key: str) -> None:
        """A write sent without a ticket's writer (async, or while tracking is down): remove
        the key's copy, and count it against every ticket of the key in flight."""
        with self._lock:
            self.l1.delete(session_key)
            flight = self._flights.get(session_key)
            if flight is not None:
                flight.invalidations += 1

    # -- the writer connection --------------------------------------------------------------

    def execute(self, ticket: Ticket, *args: Any, claim: tuple[bytes, int] | None = None) -> Any:
        """Send one command on the writer connection (the ticket's), and read its reply.

        A dropped connection raises :class:`WriterLost` (tracking is lost with it; the caller
        may send the write again on the pool); a timeout loses tracking and raises as redis-py
        raised it (the write may have been applied: it is never sent again). An error reply
        (``NOSCRIPT``, ``OOM``...) leaves the connection as it was.

        ``claim`` (the key, and the TTL in ms the script gives it, its ``ARGV[2]``) with an
        ``EVALSHA``: see :meth:`_run_claiming`.
        """
        writer = ticket.writer
        assert writer is not None
        connection = writer.connection
        with writer.lock:
            if connection._sock is None:
                # redis-py closed it (an error in the middle of a reply): its next command
                # would open a new connection, silently, with no tracking registered on it.
                self.lose("writer connection closed", writer)
                raise WriterLost(redis.ConnectionError("the writer connection was closed"))
            try:
                if claim is not None and args[0] == "EVALSHA":
                    return self._run_claiming(ticket, connection, args, *claim)
                connection.send_command(*args)
                return connection.read_response()
            except redis.ConnectionError as exc:
                self.lose(f"writer connection failed: {type(exc).__name__}", writer)
                raise WriterLost(exc) from exc
            except redis.TimeoutError:
                self.lose("writer connection timed out", writer)
                raise
            except BaseException:
                if connection._sock is None:
                    self.lose("writer connection closed", writer)
                raise

    @staticmethod
    def _run_claiming(
        ticket: Ticket, connection: redis.Connection, args: tuple[Any, ...], key: bytes, ttl: int
    ) -> Any:
        """Run a script that writes ``key``, and make this connection the key's last writer.

        Redis 7.0 sends a script's writes to every ``BCAST`` client, ``NOLOOP`` or not (they
        are made by its script client, not by the caller), so our own save would come back and
        drop the copy it just kept. So the script is sent with its TTL (``ttl``, its
        ``ARGV[2]``, as the store's update script and the user index's save script take it) a
        millisecond short, and ``PEXPIRE key ttl GT``, pipelined right after it, gives the key
        its full TTL back: a write of ours that changes nothing but the TTL, and always changes
        it (Redis's clock does not go back between the two). The key's last writer in that
        event-loop turn is then this connection, and ``NOLOOP`` leaves the turn out. No other
        client's command runs between the two (Redis runs the commands of one read back to
        back; a pipeline split over two reads is two turns, and the first one's invalidation
        comes to us). A write by another client later in the same turn makes it the last
        writer: we hear of it. One earlier in the turn was seen by the script.

        The key never gets a longer TTL than ``ttl`` from the ``PEXPIRE``, which runs right
        after the script: it does not outlive its session. (Sending ``ttl + 1`` instead, with
        the script's own TTL, did: by a millisecond, whenever both ran in the same one.)

        When ``PEXPIRE`` changes nothing (the key holds a longer TTL, or nothing: the script
        wrote nothing and the key is gone), the script's write, if any, comes back: the ticket
        is marked so that nothing is kept. ``GT`` leaves a longer TTL alone; a tombstone's may
        be lengthened (a save that raced a logout), never shortened.
        """
        at = 4 + int(args[2])  # ARGV[2], after EVALSHA, the sha, the number of keys and the keys
        if int(args[at]) != ttl:
            raise ValueError("a claimed script takes the TTL it writes as ARGV[2]")
        short = (*args[:at], max(1, ttl - 1), *args[at + 1 :])
        connection.send_packed_command(
            connection.pack_commands([short, ("PEXPIRE", key, ttl, "GT")])
        )
        error = None
        try:
            reply = connection.read_response()
        except redis.ResponseError as exc:  # NOSCRIPT, OOM...: read the PEXPIRE's reply first
            error, reply = exc, None
        claimed = connection.read_response()
        ticket.echoes = not claimed
        if error is not None:
            raise error
        return reply

    # -- tracking: registering it, losing it ---------------------------------------------------

    @property
    def up(self) -> bool:
        return self._up

    def due(self) -> bool:
        """Whether tracking is down and it is time to try registering it again (cheap: no
        lock, read on every request)."""
        return not self._up and self.monotonic() >= self._next_attempt

    def connect(self) -> bool:
        """Register tracking on a fresh pair of connections, then use L1 again (empty).

        Called by the store after a round trip that worked (so a hung Redis never costs this
        attempt's timeouts on top of the request's own), one thread at a time; the others go
        on bypassing L1. A failure leaves L1 off until :data:`RETRY_INTERVAL` has passed.
        """
        if not self._connect_lock.acquire(blocking=False):
            return False
        try:
            if self._up:
                return True
            self._close_retired()
            try:
                invalidation, client_id, writer = register(self.config, self.prefix, self.pid)
            except (redis.RedisError, OSError):
                self._next_attempt = self.monotonic() + self.retry_interval
                return False
            sock = invalidation._sock
            assert sock is not None
            sock.setblocking(False)
            poller = select.poll()
            poller.register(sock, POLL_EVENTS)
            poller.register(writer._sock, POLL_EVENTS)
            with self._lock:
                self._invalidation = invalidation
                self._invalidation_socket = sock
                self._invalidation_id = client_id
                self._writer = _Writer(writer)
                self._poller = poller
                self._buffer = bytearray()
                self._epoch += 1
                self.l1.clear()
                self._up = True
                self.registrations += 1
            return True
        finally:
            self._connect_lock.release()

    def lose(self, reason: str, writer: _Writer | None = None) -> None:
        """Tracking is lost (or cannot be trusted): empty L1, refuse every ticket in flight,
        bypass L1 until :meth:`connect` registers it again. ``writer``: the writer whose
        failure this is, if that is how it was noticed (a later pair is left alone)."""
        with self._lock:
            if writer is not None and writer is not self._writer:
                return
            self._lose(reason)

    def _lose(self, reason: str) -> None:
        if not self._up:
            return
        self._up = False
        self.losses += 1
        self.last_loss = reason
        self._reset()
        self._next_attempt = self.monotonic()  # try again on the next request that works
        if self._invalidation is not None:
            self._invalidation.disconnect()
        self._invalidation = self._invalidation_socket = self._poller = None
        if self._writer is not None:
            # Closed by connect() once no write is using it: a write in flight on it finishes
            # (and its ticket, from an older epoch, is refused).
            self._retired.append(self._writer)
            self._writer = None

    def _reset(self) -> None:
        self._epoch += 1
        self.l1.clear()

    def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        for writer in retired:
            with writer.lock:
                writer.connection.disconnect()

    def close(self) -> None:
        with self._lock:
            self._lose("closed")
        self._close_retired()

    # -- figures --------------------------------------------------------------------------------

    @property
    def client_ids(self) -> tuple[int | None, int | None]:
        """The invalidation and writer connections' client ids (for tests and operators)."""
        writer = self._writer
        writer_id = None
        if writer is not None:
            with writer.lock, contextlib.suppress(redis.RedisError):
                writer.connection.send_command("CLIENT", "ID")
                writer_id = int(writer.connection.read_response())
        return self._invalidation_id, writer_id

    def stats(self) -> dict[str, object]:
        l1 = self.l1.stats()
        with self._lock:
            return {
                "tracking": self._up,
                "l1_hits": self.l1_hits,
                "invalidations": self.invalidations,
                "flushes": self.flushes,
                "tracking_losses": self.losses,
                "last_loss": self.last_loss,
                "registrations": self.registrations,
                "fills": self.fills,
                "refused_fills": self.refused,
                "entries": l1["entries"],
                "bytes": l1["bytes"],
                "max_bytes": l1["max_bytes"],
                "evictions": l1["evictions"],
            }
