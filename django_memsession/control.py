"""The control channel: how ``prunesessions``, ``clearsessions`` and the admin page reach the
memory of every running server process of this project. This module holds the wire (where the
sockets are, how frames are signed) and the client; :mod:`~django_memsession.listener` serves.

Each process that serves from a live store listens on a Unix socket of its own::

    <control dir>/<project id>-<pid>.sock     (socket 0600, directory 0700)

- The control dir is ``MEMSESSION_CONTROL_DIR``, or ``memsession-<uid>`` under the system temp
  directory. Only its owner may use it: a directory (or a symlink to one) owned by someone else,
  or open to others, is refused, and the channel stays off.
- The project id is a short hash of the settings module and a ``SECRET_KEY``-derived value, so
  two projects sharing the directory never meet, and socket paths stay far below the ~100-byte
  limit of ``AF_UNIX`` addresses.

A frame is a 4-byte big-endian length, a 32-byte HMAC-SHA256 and a JSON body (a
:mod:`~django_memsession.messages` message). The MAC is checked over the raw body **before** it is
parsed, keyed from ``SECRET_KEY`` (Django's ``salted_hmac``), with one salt for requests and
another for replies; a reply's MAC also covers its request's nonce, so a reply cannot be replayed
to another request. A request more than ``MAX_AGE`` seconds old or ``MAX_FUTURE`` seconds ahead,
or whose nonce was seen before, is refused. Anyone who can reach the socket already runs as the
same user: the MAC guards against other projects and against stale, replayed or forged frames.

A socket is removed by a client only when connecting to it is refused (nothing listens on it any
more): never because ``kill(pid, 0)`` says the pid is gone, which is what a client in another PID
namespace (a cron container sharing the directory) would see of a live server.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.utils.crypto import constant_time_compare, salted_hmac

from . import conf
from .dirs import dir_problem as private_dir_problem
from .messages import (
    COMMANDS,
    Gathered,
    MessageError,
    ProcessReport,
    Reply,
    Request,
    from_json,
    to_json,
)

__all__ = [
    "PRUNE_TIMEOUT",
    "REPORT_TIMEOUT",
    "ChannelError",
    "NoAnswer",
    "Refused",
    "ask",
    "fan_out",
    "request",
]

HMAC_SALT = "django_memsession.control"
FRAME = struct.Struct(">I")
MAC_SIZE = 32
MAX_REQUEST_BYTES = 4096
MAX_REPLY_BYTES = 16 * 1024 * 1024
# A request's nesting: one object. Anything deeper is refused before parsing.
MAX_REQUEST_BRACKETS = 4
MAX_AGE = 30.0  # seconds a request stays valid
MAX_FUTURE = 5.0  # seconds a request may come from the future (clock skew)
# Seconds a fan-out waits for the processes it asks, all asked at once: a report (the admin
# page) and a prune (prunesessions, clearsessions, "Prune now"; a pass over a million sessions
# takes about a second).
REPORT_TIMEOUT = 2.0
PRUNE_TIMEOUT = 30.0
# AF_UNIX paths are limited to 108 bytes on Linux, 104 on macOS.
MAX_SOCKET_PATH = 100

Handler = Callable[[Request], ProcessReport]
# A request's fields beyond command and dry_run (see messages.Request): user, offset, ...
Fields = dict[str, str | int | None]


class ChannelError(Exception):
    """One process could not be asked; the message is safe to log and to show."""


class Refused(ChannelError):
    """A frame that is not signed by this project, stale, replayed or malformed."""


class NoAnswer(ChannelError):
    """A process that accepted the connection but did not answer in time (hung, or stopped)."""


class Gone(ChannelError):
    """Nothing listens on the socket any more."""


# -- where -------------------------------------------------------------------------------------


def available() -> bool:
    """Whether this platform has Unix sockets (POSIX); elsewhere the channel is off."""
    return hasattr(socket, "AF_UNIX")


def enabled() -> bool:
    return bool(conf.conf.CONTROL) and available()


def control_dir() -> Path:
    configured = conf.conf.CONTROL_DIR
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"memsession-{os.getuid()}"


def project_id() -> str:
    """12 hex digits naming this project: settings module and a ``SECRET_KEY``-derived value."""
    derived = salted_hmac(HMAC_SALT + ".project", "id", algorithm="sha256").hexdigest()
    module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    return hashlib.sha256(f"{module}\0{derived}".encode()).hexdigest()[:12]


def socket_path(pid: int) -> Path:
    return control_dir() / f"{project_id()}-{pid}.sock"


def dir_problem(directory: Path, *, create: bool) -> str | None:
    """Why ``directory`` cannot hold control sockets (it must be this user's, 0700), or None."""
    return private_dir_problem(directory, create=create, forbidden=0o077)


# -- frames ------------------------------------------------------------------------------------


def _mac(direction: str, body: bytes) -> bytes:
    return salted_hmac(f"{HMAC_SALT}.{direction}", body, algorithm="sha256").digest()


def frame(mac: bytes, body: bytes) -> bytes:
    return FRAME.pack(len(mac) + len(body)) + mac + body


def make_request(command: str, *, dry_run: bool = False, sent_at: float | None = None) -> bytes:
    """A signed request frame (for tests, and for clients that frame requests themselves)."""
    return sign_request(new_request(command, dry_run=dry_run, sent_at=sent_at))


def new_request(
    command: str,
    *,
    dry_run: bool = False,
    sent_at: float | None = None,
    fields: Fields | None = None,
) -> Request:
    return Request(
        command=command,
        sent_at=time.time() if sent_at is None else sent_at,
        nonce=secrets.token_hex(16),
        dry_run=dry_run,
        **(fields or {}),
    )


def sign_request(request: Request) -> bytes:
    body = to_json(request)
    return frame(_mac("request", body), body)


def open_request(data: bytes) -> Request:
    """The request in a frame's payload (MAC and body), checked in this order: MAC over the raw
    bytes, shape, then the message. Raises :class:`Refused` with a reason safe to log."""
    mac, body = data[:MAC_SIZE], data[MAC_SIZE:]
    if len(mac) != MAC_SIZE or not constant_time_compare(mac, _mac("request", body)):
        raise Refused("bad MAC (not signed by this project's SECRET_KEY)")
    if body.count(b"{") + body.count(b"[") > MAX_REQUEST_BRACKETS:
        raise Refused("malformed request")
    try:
        request = from_json(Request, body)
    except MessageError as exc:
        raise Refused(f"malformed request: {exc}") from None
    if request.command not in COMMANDS:
        raise Refused("unknown command")
    return request


def sign_reply(reply: Reply, nonce: str) -> bytes:
    body = to_json(reply)
    return frame(_mac("reply", nonce.encode() + b"\0" + body), body)


def open_reply(data: bytes, nonce: str) -> Reply:
    mac, body = data[:MAC_SIZE], data[MAC_SIZE:]
    expected = _mac("reply", nonce.encode() + b"\0" + body)
    if len(mac) != MAC_SIZE or not constant_time_compare(mac, expected):
        raise Refused("the reply is not signed by this project (another SECRET_KEY?)")
    try:
        return from_json(Reply, body)
    except MessageError as exc:
        raise ChannelError(f"malformed reply: {exc}") from None


class ReplayGuard:
    """Refuses requests too old, from the future, or seen before (nonces kept for ``MAX_AGE``)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, request: Request) -> None:
        now = self.clock()
        if request.sent_at < now - MAX_AGE:
            raise Refused("stale request")
        if request.sent_at > now + MAX_FUTURE:
            raise Refused("request from the future")
        with self._lock:
            if len(self._seen) > 1024:
                self._seen = {n: t for n, t in self._seen.items() if t >= now - MAX_AGE}
            if request.nonce in self._seen:
                raise Refused("replayed request")
            self._seen[request.nonce] = request.sent_at


# -- the client --------------------------------------------------------------------------------


def _recv_exact(conn: socket.socket, size: int, deadline: float) -> bytes:
    chunks = []
    while size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        conn.settimeout(remaining)
        chunk = conn.recv(min(size, 1 << 20))
        if not chunk:
            raise ChannelError("the process closed the connection without answering")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _connect(conn: socket.socket, path: Path, deadline: float) -> None:
    """Connect, trying again while the listener's backlog is full (EAGAIN: it is busy, not
    gone) until the deadline."""
    while True:
        conn.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            conn.connect(str(path))
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError from None
            time.sleep(0.01)


def request(
    path: Path,
    command: str,
    *,
    dry_run: bool = False,
    timeout: float = REPORT_TIMEOUT,
    fields: Fields | None = None,
) -> ProcessReport:
    """Ask one process; its report. Raises :class:`ChannelError` (never anything else for what
    the process or the socket does), within ``timeout`` seconds in all."""
    message = new_request(command, dry_run=dry_run, fields=fields)
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            _connect(conn, path, deadline)
            conn.settimeout(max(0.001, deadline - time.monotonic()))
            conn.sendall(sign_request(message))
            (length,) = FRAME.unpack(_recv_exact(conn, FRAME.size, deadline))
            if not MAC_SIZE <= length <= MAX_REPLY_BYTES:
                raise ChannelError(f"a reply of {length} bytes")
            reply = open_reply(_recv_exact(conn, length, deadline), message.nonce)
    except (ConnectionRefusedError, FileNotFoundError) as exc:
        raise Gone(str(exc.strerror)) from None
    except TimeoutError:
        raise NoAnswer(f"no answer within {timeout:g} s (hung or stopped?)") from None
    except OSError as exc:
        raise ChannelError(exc.strerror or type(exc).__name__) from None
    if not reply.ok or reply.report is None:
        raise Refused(reply.error or "the process refused the request")
    return reply.report


def peers() -> list[tuple[int, Path]]:
    """(pid, path) of every socket of this project in the control dir, this process's aside."""
    prefix, own = f"{project_id()}-", os.getpid()
    try:
        names = os.listdir(control_dir())
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith(prefix) and name.endswith(".sock"):
            digits = name[len(prefix) : -len(".sock")]
            if digits.isdigit() and int(digits) != own:
                found.append((int(digits), control_dir() / name))
    return sorted(found)


def live_peers(timeout: float = 0.5) -> list[int]:
    """Pids of the other processes whose sockets accept a connection; sockets that refuse
    (nothing listens) are removed. A connection that sends nothing is not logged as a refusal."""
    alive = []
    for pid, path in peers():
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout)
                conn.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        except OSError:
            pass  # busy or slow: still a live process
        alive.append(pid)
    return alive


def ask(
    pid: int,
    command: str,
    *,
    fields: Fields,
    timeout: float,
    dry_run: bool = False,
    local: Handler | None = None,
) -> ProcessReport:
    """Ask one process (this one through ``local``): the next page of a long answer. Raises
    :class:`ChannelError`."""
    if pid == os.getpid():
        if local is None:
            raise Gone("this process holds no store")
        return local(new_request(command, dry_run=dry_run, fields=fields))
    return request(socket_path(pid), command, dry_run=dry_run, timeout=timeout, fields=fields)


def fan_out(
    command: str,
    *,
    dry_run: bool = False,
    timeout: float = REPORT_TIMEOUT,
    local: Handler | None = None,
    fields: Fields | None = None,
) -> Gathered:
    """Ask every live process of this project at once (and this one through ``local``), and
    return within ``timeout`` seconds however many of them hang.

    A process that does not answer is an error naming it; a socket nothing listens on is
    removed (its process is gone).
    """
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; expected one of {COMMANDS}")
    gathered = Gathered(channel_on=enabled(), searched=str(control_dir()))
    if local is not None:
        gathered.processes.append(local(new_request(command, dry_run=dry_run, fields=fields)))
    if not gathered.channel_on:
        return gathered
    problem = dir_problem(control_dir(), create=False)
    if problem is not None:
        if os.path.lexists(control_dir()):
            gathered.problem = f"the control directory was refused: {problem}"
        return gathered
    targets = peers()
    answers: dict[int, ProcessReport | ChannelError] = {}

    def ask(pid: int, path: Path) -> None:
        try:
            answers[pid] = request(path, command, dry_run=dry_run, timeout=timeout, fields=fields)
        except ChannelError as exc:
            answers[pid] = exc
        except Exception as exc:  # a bug must not hide the other processes' answers
            answers[pid] = ChannelError(f"{type(exc).__name__}")

    threads = [
        threading.Thread(target=ask, args=target, name="django_memsession-ask", daemon=True)
        for target in targets
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for pid, path in targets:
        answer = answers.get(pid)
        if isinstance(answer, ProcessReport):
            gathered.processes.append(answer)
        elif isinstance(answer, Gone):
            with contextlib.suppress(OSError):
                path.unlink()  # nothing listens on it: its process is gone
        elif answer is None or isinstance(answer, NoAnswer):
            gathered.errors.append(
                f"process {pid} did not answer within {timeout:g} s (hung or stopped?)"
            )
        else:
            gathered.errors.append(f"process {pid} did not answer: {answer}")
    gathered.processes.sort(key=lambda report: report.pid)
    return gathered
