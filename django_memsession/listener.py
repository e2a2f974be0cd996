"""One process's control socket, and the thread that serves it.

Built to stay up whatever arrives on the socket:

- One thread runs a selector loop over the listening socket and every open connection, so a
  slow or idle client holds nothing but its own connection: each connection has a deadline for
  its whole request (``REQUEST_DEADLINE``), not per read. At ``MAX_CONNECTIONS`` open, no more
  are accepted until one ends (at the latest at its deadline): the rest wait in the backlog, in
  order, and a client whose connect finds the backlog full tries again until its own deadline.
- A frame's MAC is checked over its raw bytes before anything is parsed
  (:func:`~django_memsession.control.open_request`); refusals are logged, at most once per
  ``LOG_INTERVAL`` for each reason, never with the frame's content.
- Signed requests are answered on a thread of their own (a prune can take a second), at most
  ``MAX_ANSWERING`` at once; the loop goes on meanwhile.
- No exception of any type ends the loop: one that escapes it is logged and the loop starts
  again. If the socket file disappears (removed by hand, or by a client that wrongly took the
  process for dead), the listener binds it again.

The listener knows only its ``handler``; it imports neither the store nor the runtime.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .control import (
    FRAME,
    MAC_SIZE,
    MAX_REQUEST_BYTES,
    Handler,
    Refused,
    ReplayGuard,
    open_request,
    sign_reply,
)
from .messages import Reply, Request

__all__ = ["Listener"]

logger = logging.getLogger("django_memsession")

REQUEST_DEADLINE = 2.0  # seconds a client has to send its whole request
REPLY_TIMEOUT = 10.0  # seconds a client has to take its reply
MAX_CONNECTIONS = 256
MAX_ANSWERING = 4
POLL_INTERVAL = 0.25  # how often the loop looks at its stop flag and its socket file
LOG_INTERVAL = 10.0


@dataclass(eq=False)  # hashed by identity: a closed socket's fd may already be reused
class _Connection:
    sock: socket.socket
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)


class Listener:
    """Listens on ``path`` and answers signed requests with ``handler(request)``."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._guard = ReplayGuard()
        self._answering = threading.BoundedSemaphore(MAX_ANSWERING)
        self._logged: dict[str, tuple[float, int]] = {}
        self._suppressed = 0
        self._sock: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._bind()
        self.thread = threading.Thread(
            target=self._run, name="django_memsession-control", daemon=True
        )
        self.thread.start()

    # -- the socket ------------------------------------------------------------------------------

    def _bind(self) -> None:
        """Bind and listen on a temporary name, then rename it into place: the socket file
        appears only once it accepts connections (a client that met a bound socket not yet
        listening would take it for a dead one and remove it)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        temporary = self.path.with_name(self.path.name + "~")  # the pid in the name: ours alone
        try:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            old_umask = os.umask(0o177)
            try:
                sock.bind(str(temporary))
            finally:
                os.umask(old_umask)
            os.chmod(temporary, 0o600)
            sock.listen(64)
            sock.setblocking(False)
            info = os.stat(temporary)
            os.replace(temporary, self.path)  # over a socket left by a dead process's pid
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        self._sock, self._inode = sock, (info.st_dev, info.st_ino)

    def _socket_file_is_ours(self) -> bool:
        try:
            info = os.stat(self.path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self._inode

    # -- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._serve()
            except BaseException:
                if self._should_log("listener failed"):
                    logger.exception("Session control listener failed; it starts again.")
                self._stop.wait(0.05)
        self._close_socket()

    def _serve(self) -> None:
        connections: set[_Connection] = set()
        with selectors.DefaultSelector() as selector:
            listening = self._sock
            assert listening is not None
            selector.register(listening, selectors.EVENT_READ)
            accepting = True
            try:
                while not self._stop.is_set():
                    if listening is not self._sock:  # rebound: watch the new socket
                        if accepting:
                            selector.unregister(listening)
                        listening = self._sock
                        assert listening is not None
                        selector.register(listening, selectors.EVENT_READ)
                        accepting = True
                    # At the limit, stop watching the listening socket (it would stay readable
                    # and spin the loop): new connections wait in the backlog.
                    if accepting and len(connections) >= MAX_CONNECTIONS:
                        selector.unregister(listening)
                        accepting = False
                    elif not accepting and len(connections) < MAX_CONNECTIONS:
                        selector.register(listening, selectors.EVENT_READ)
                        accepting = True
                    for key, _ in selector.select(POLL_INTERVAL):
                        if key.fileobj is listening:
                            self._accept(listening, selector, connections)
                            continue
                        connection = key.data
                        if connection not in connections:
                            continue  # dropped earlier in this batch
                        try:
                            self._read(connection, selector, connections)
                        except Exception:  # one connection's trouble is that connection's
                            self._drop(connection, selector, connections, "failed request")
                    self._expire(selector, connections)
                    self._keep_socket_file()
            finally:
                for connection in connections:
                    connection.sock.close()

    def _accept(
        self,
        listening: socket.socket,
        selector: selectors.BaseSelector,
        connections: set[_Connection],
    ) -> None:
        while len(connections) < MAX_CONNECTIONS:
            try:
                sock, _address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. out of file descriptors: try again on the next turn
                self._refusal("could not accept a connection")
                return
            sock.setblocking(False)
            connection = _Connection(sock, time.monotonic() + REQUEST_DEADLINE)
            connections.add(connection)
            selector.register(sock, selectors.EVENT_READ, data=connection)

    def _read(
        self,
        connection: _Connection,
        selector: selectors.BaseSelector,
        connections: set[_Connection],
    ) -> None:
        try:
            chunk = connection.sock.recv(MAX_REQUEST_BYTES + FRAME.size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(connection, selector, connections, "connection error")
            return
        if not chunk:
            if connection.buffer:
                self._drop(connection, selector, connections, "incomplete request")
            else:  # a probe (live_peers) or a client that gave up: nothing to refuse
                self._forget(connection, selector, connections)
                connection.sock.close()
            return
        buffer = connection.buffer
        buffer += chunk
        if len(buffer) < FRAME.size:
            return
        (length,) = FRAME.unpack_from(buffer)
        if not MAC_SIZE < length <= MAX_REQUEST_BYTES:
            self._drop(connection, selector, connections, "frame length out of bounds", reply=True)
            return
        if len(buffer) < FRAME.size + length:
            return
        self._forget(connection, selector, connections)
        try:
            request = open_request(bytes(buffer[FRAME.size : FRAME.size + length]))
            self._guard.check(request)
        except Refused as exc:
            self._refusal(str(exc))
            self._send_refusal(connection.sock)
            return
        if not self._answering.acquire(blocking=False):
            self._refusal("too many requests at once")
            self._send_refusal(connection.sock, request.nonce, "busy; try again")
            return
        threading.Thread(
            target=self._answer,
            args=(connection.sock, request),
            name="django_memsession-answer",
            daemon=True,
        ).start()

    def _expire(
        self, selector: selectors.BaseSelector, connections: dict[int, _Connection]
    ) -> None:
        now = time.monotonic()
        for connection in [c for c in connections if c.deadline <= now]:
            self._drop(connection, selector, connections, "request not sent in time")

    def _keep_socket_file(self) -> None:
        if self._stop.is_set() or self._socket_file_is_ours():
            return
        logger.warning("Session control socket %s was removed; listening on it again.", self.path)
        old = self._sock
        self._bind()
        if old is not None:
            old.close()

    def _forget(
        self,
        connection: _Connection,
        selector: selectors.BaseSelector,
        connections: set[_Connection],
    ) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            selector.unregister(connection.sock)
        connections.discard(connection)

    def _drop(
        self,
        connection: _Connection,
        selector: selectors.BaseSelector,
        connections: set[_Connection],
        reason: str,
        *,
        reply: bool = False,
    ) -> None:
        self._forget(connection, selector, connections)
        self._refusal(reason)
        if reply:
            self._send_refusal(connection.sock)
        else:
            connection.sock.close()

    # -- answers -------------------------------------------------------------------------------

    def _answer(self, sock: socket.socket, request: Request) -> None:
        try:
            try:
                reply = Reply(ok=True, report=self.handler(request))
            except Exception:
                logger.exception("Session control channel: answering a %s failed.", request.command)
                reply = Reply(ok=False, error="the process failed to answer; see its log")
            sock.setblocking(True)
            sock.settimeout(REPLY_TIMEOUT)
            sock.sendall(sign_reply(reply, request.nonce))
        except Exception:
            logger.warning("Session control channel: a reply could not be sent.")
        finally:
            sock.close()
            self._answering.release()

    def _send_refusal(self, sock: socket.socket, nonce: str = "", error: str = "refused") -> None:
        """Best effort, without blocking the loop: the client may be gone or not reading."""
        with contextlib.suppress(OSError):
            sock.send(sign_reply(Reply(ok=False, error=error), nonce))
        sock.close()

    def _should_log(self, reason: str) -> bool:
        """At most once per ``LOG_INTERVAL`` for each reason, so a flood cannot flood the log."""
        now = time.monotonic()
        last, suppressed = self._logged.get(reason, (-LOG_INTERVAL, 0))
        if now - last < LOG_INTERVAL:
            self._logged[reason] = (last, suppressed + 1)
            return False
        self._logged[reason] = (now, 0)
        self._suppressed = suppressed
        return True

    def _refusal(self, reason: str) -> None:
        if self._should_log(reason):
            more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
            logger.warning("Session control channel refused a request: %s%s.", reason, more)

    # -- stopping ------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def close(self, *, unlink: bool = True, wait: bool = True) -> None:
        """Stop listening. ``unlink=False`` (a forked child closing what it inherited) leaves
        the socket file to the process it belongs to; ``wait=False`` does not join the thread."""
        self._stop.set()
        if os.getpid() != self.pid or not self.thread.is_alive():
            self._close_socket()  # a forked child has no thread: close what it inherited
        elif wait and self.thread is not threading.current_thread():
            self.thread.join(2.0)
        if unlink and os.getpid() == self.pid and self._socket_file_is_ours():
            with contextlib.suppress(OSError):
                self.path.unlink()
