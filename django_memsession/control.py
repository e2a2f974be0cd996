"""The control channel: how ``prunesessions``, ``clearsessions`` and the admin page reach the
memory of every running server process of this project.

Each process that serves from a live store listens on a Unix socket of its own::

    <control dir>/<project id>-<pid>.sock     (socket 0600, directory 0700)

- The control dir is ``MEMSESSION_CONTROL_DIR``, or ``memsession-<uid>`` under the system temp
  directory. Only its owner may use it: a directory owned by someone else, or open to others, is
  refused (logged once), and the channel stays off.
- The project id is a short hash of the settings module and a ``SECRET_KEY``-derived value, so
  two projects (or two settings of one project) sharing the directory never meet, and socket
  paths stay far below the ~100-byte limit of ``AF_UNIX`` addresses.
- Management commands (other than ``runserver``) and test runs do not listen: they do not serve.
  ``start_listener()`` starts one explicitly.

A request is a 4-byte big-endian length and a JSON object ``{"command", "dry_run", "time",
"nonce", "mac"}``; ``mac`` is Django's ``salted_hmac`` of the rest, keyed from ``SECRET_KEY``.
A request more than ``MAX_CLOCK_SKEW`` seconds old or new, with a wrong MAC, too long, or not
JSON is refused and logged (never with its content); the listener goes on. Anyone who can reach
the socket already runs as the same user, so the MAC guards against other projects and stale or
forged requests rather than against that user. A request can be replayed within the time window;
its only effects are a report and a prune, which are harmless to repeat.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from django.utils.crypto import constant_time_compare, salted_hmac

from . import conf, runtime
from .store import MemoryStore

logger = logging.getLogger("django_memsession")

Command = Literal["stats", "prune"]
COMMANDS = ("stats", "prune")
HMAC_SALT = "django_memsession.control"
FRAME = struct.Struct(">I")
MAX_REQUEST_BYTES = 4096
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_CLOCK_SKEW = 30.0
CONNECTION_TIMEOUT = 2.0
# AF_UNIX paths are limited to 108 bytes on Linux, 104 on macOS.
MAX_SOCKET_PATH = 100
# Management commands that serve requests, and so hold a live store worth reaching.
SERVING_COMMANDS = frozenset({"runserver", "runserver_plus"})


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


def _socket_path(pid: int) -> Path:
    return control_dir() / f"{project_id()}-{pid}.sock"


_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def _prepare_dir(directory: Path) -> bool:
    """Create the control directory 0700, or check that an existing one is ours and private."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as exc:
        _warn_once(
            "dir",
            "Session control channel off: cannot create %s (%s). prunesessions and the admin "
            "page will not reach this process; set MEMSESSION_CONTROL_DIR to a writable "
            "directory, or MEMSESSION_CONTROL = False.",
            directory,
            exc.strerror,
        )
        return False
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        _warn_once(
            "perm",
            "Session control channel off: %s must belong to this user and be private (0700).",
            directory,
        )
        return False
    return True


def _mac(command: str, dry_run: bool, sent_at: float, nonce: str) -> str:
    message = f"{command}\0{int(dry_run)}\0{sent_at!r}\0{nonce}"
    return salted_hmac(HMAC_SALT, message, algorithm="sha256").hexdigest()


def make_request(command: str, *, dry_run: bool = False, sent_at: float | None = None) -> bytes:
    """A framed, authenticated request (public for tests)."""
    sent_at = time.time() if sent_at is None else sent_at
    nonce = secrets.token_hex(8)
    body = {
        "command": command,
        "dry_run": dry_run,
        "time": sent_at,
        "nonce": nonce,
        "mac": _mac(command, dry_run, sent_at, nonce),
    }
    data = json.dumps(body).encode()
    return FRAME.pack(len(data)) + data


class Refused(Exception):
    """A request the listener will not act on; the message is safe to log."""


def _verify(data: bytes) -> tuple[str, bool]:
    try:
        body = json.loads(data)
        command, dry_run = body["command"], body["dry_run"]
        sent_at, nonce, mac = body["time"], body["nonce"], body["mac"]
    except (ValueError, TypeError, KeyError) as exc:
        raise Refused("malformed request") from exc
    if not (
        isinstance(command, str)
        and isinstance(dry_run, bool)
        and isinstance(sent_at, (int, float))
        and math.isfinite(sent_at)
        and isinstance(nonce, str)
        and isinstance(mac, str)
    ):
        raise Refused("malformed request")
    if not constant_time_compare(mac, _mac(command, dry_run, sent_at, nonce)):
        raise Refused("bad MAC (another project, or another SECRET_KEY)")
    if abs(time.time() - sent_at) > MAX_CLOCK_SKEW:
        raise Refused("stale request")
    if command not in COMMANDS:
        raise Refused("unknown command")
    return command, dry_run


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = conn.recv(min(size, 65536))
        if not chunk:
            raise ConnectionError("connection closed early")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frame(conn: socket.socket, limit: int) -> bytes:
    (length,) = FRAME.unpack(_recv_exact(conn, FRAME.size))
    if length > limit:
        raise Refused(f"frame of {length} bytes is over the limit of {limit}")
    return _recv_exact(conn, length)


def _send_frame(conn: socket.socket, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    conn.sendall(FRAME.pack(len(data)) + data)


def answer(command: str, dry_run: bool) -> dict[str, Any]:
    """What this process answers: its report, and for ``prune`` what the pass removed.

    Only this process's store is pruned: a listener never fans out.
    """
    from . import pruner

    result = pruner.prune(dry_run=dry_run).as_dict() if command == "prune" else None
    figures = pruner.report()
    if result is not None:
        figures["result"] = result
    return figures


# -- the listener -------------------------------------------------------------------------------


class Listener:
    """One process's socket and the thread that serves it, one connection at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid = os.getpid()
        self.refused = 0
        self.served = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a socket of a dead process that had this pid
        old_umask = os.umask(0o177)
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._sock.listen(8)
        self._sock.settimeout(0.5)  # how often the thread looks at its stop flag
        self.thread = threading.Thread(
            target=self._serve, name="django_memsession-control", daemon=True
        )
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.1)  # e.g. out of file descriptors: back off, then go on
                continue
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(CONNECTION_TIMEOUT)
        try:
            command, dry_run = _verify(_read_frame(conn, MAX_REQUEST_BYTES))
        except (Refused, ConnectionError, OSError, struct.error) as exc:
            self.refused += 1
            reason = str(exc) if isinstance(exc, Refused) else "connection error or timeout"
            logger.warning("Session control channel refused a request: %s.", reason)
            with contextlib.suppress(OSError):
                _send_frame(conn, {"ok": False, "error": "refused"})
            return
        try:
            _send_frame(conn, {"ok": True, "report": answer(command, dry_run)})
            self.served += 1
        except Exception:
            logger.exception("Session control channel: answering a %s request failed.", command)

    def close(self, *, unlink: bool = True) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        if unlink and os.getpid() == self.pid:
            with contextlib.suppress(OSError):
                self.path.unlink()
        if self.thread is not threading.current_thread():
            self.thread.join(2.0)


_listener: Listener | None = None
_listener_lock = threading.Lock()


def listener() -> Listener | None:
    return _listener


def should_listen() -> bool:
    """Whether this process serves requests: not a test run, not a management command.

    ``runserver`` is a management command that serves; its autoreloader parent never uses the
    store, so only the serving child gets here.
    """
    if "pytest" in sys.modules:
        return False
    program = sys.argv[0] if sys.argv else ""
    name = os.path.basename(program)
    # ``python -m django``: the program is django/__main__.py (and only the folder name says so:
    # a virtualenv called "django-site" holds gunicorn/__main__.py too).
    is_manage = name in {"manage.py", "django-admin", "django-admin.py"} or (
        name == "__main__.py" and os.path.basename(os.path.dirname(program)) == "django"
    )
    if is_manage:
        return len(sys.argv) > 1 and sys.argv[1] in SERVING_COMMANDS
    return True


def start_listener() -> Listener | None:
    """Listen for this process (idempotent); ``None`` when the channel is off or cannot start."""
    global _listener
    if not enabled():
        return None
    with _listener_lock:
        if _listener is not None and _listener.pid == os.getpid():
            return _listener
        directory = control_dir()
        if not _prepare_dir(directory):
            return None
        path = _socket_path(os.getpid())
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            _warn_once(
                "path",
                "Session control channel off: the socket path %s is longer than %d bytes; "
                "set MEMSESSION_CONTROL_DIR to a shorter directory.",
                path,
                MAX_SOCKET_PATH,
            )
            return None
        try:
            _listener = Listener(path)
        except OSError as exc:
            _warn_once(
                "bind",
                "Session control channel off: cannot listen on %s (%s).",
                path,
                exc.strerror,
            )
            return None
    others = [pid for pid, _ in _peer_sockets() if pid != os.getpid()]
    if others:
        logger.warning(
            "%d other process(es) of this project hold a session store (pids %s): sessions are "
            "split between them, and users whose requests reach another process look logged "
            "out. Run one process with threads (gunicorn --workers 1 --threads 8) or use a "
            "shared session store.",
            len(others),
            ", ".join(map(str, sorted(others))),
        )
    return _listener


def stop_listener() -> None:
    global _listener
    with _listener_lock:
        current, _listener = _listener, None
    if current is not None:
        current.close()


# -- the client ---------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _peer_sockets() -> Iterator[tuple[int, Path]]:
    """(pid, path) of every socket of this project whose process is alive; dead ones removed."""
    directory = control_dir()
    prefix = f"{project_id()}-"
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for path in entries:
        name = path.name
        if not (name.startswith(prefix) and name.endswith(".sock")):
            continue
        try:
            pid = int(name[len(prefix) : -len(".sock")])
        except ValueError:
            continue
        if not _pid_alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        yield pid, path


def request(path: Path, command: str, *, dry_run: bool = False, timeout: float = 2.0) -> Any:
    """Send one request to one socket and return its report (raises ``OSError``/``Refused``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        conn.sendall(make_request(command, dry_run=dry_run))
        reply = json.loads(_read_frame(conn, MAX_RESPONSE_BYTES))
    if not reply.get("ok"):
        raise Refused("the process refused the request (another SECRET_KEY?)")
    return reply["report"]


@dataclass
class Gathered:
    """Reports of every live process reached (this one included when it holds a store)."""

    processes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    channel_on: bool = True
    searched: str = ""

    @property
    def split(self) -> bool:
        """More than one process holds a store: sessions are split between them."""
        return len(self.processes) > 1


def gather(command: Command = "stats", *, dry_run: bool = False, timeout: float = 2.0) -> Gathered:
    """Ask every live process of this project, and this one directly, for ``command``."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; expected one of {COMMANDS}")
    gathered = Gathered(channel_on=enabled(), searched=str(control_dir()))
    own_store: MemoryStore | None = runtime.peek_store()
    if own_store is not None:
        gathered.processes.append(answer(command, dry_run))
    if not gathered.channel_on:
        return gathered
    for pid, path in _peer_sockets():
        if pid == os.getpid():
            continue
        try:
            gathered.processes.append(request(path, command, dry_run=dry_run, timeout=timeout))
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(OSError):
                path.unlink()  # its process is gone, or it is not ours any more
        except (OSError, ValueError, KeyError, Refused, struct.error) as exc:
            gathered.errors.append(f"process {pid} did not answer: {exc}")
    gathered.processes.sort(key=lambda figures: figures["pid"])
    return gathered


# -- wiring -------------------------------------------------------------------------------------


def _on_first_use(store: MemoryStore) -> None:
    if should_listen():
        start_listener()


def _after_fork_in_child() -> None:
    """The parent's listener socket is inherited but is not ours: close it, keep its file."""
    global _listener
    current, _listener = _listener, None
    if current is not None:
        current.close(unlink=False)


@atexit.register
def _at_exit() -> None:
    stop_listener()


runtime.first_use_hooks.append(_on_first_use)
runtime.fork_child_hooks.append(_after_fork_in_child)
