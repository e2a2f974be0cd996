"""Whether this process serves requests, and its listener on the control channel: what the
memory engine's services (``memory/services.py``) and the Redis engine's (``redis/services.py``)
share.

A process serves unless it is a management command other than ``runserver`` or a test run
(the package's pytest plugin says so with :func:`set_listening`). A serving process listens on
the control channel, so ``prunesessions``, the admin page and ``stats()`` reach it; each
engine's services hold their own :class:`~django_memsession.listener.Listener` and start it
through :func:`start_listener`. Importing this module starts nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, Protocol

from . import control
from .listener import Listener
from .messages import ProcessReport, Request, split_warning

__all__ = [
    "SERVING_COMMANDS",
    "Serves",
    "close_listener",
    "listen_again",
    "set_listening",
    "should_listen",
    "start_listener",
    "warn_once",
]

logger = logging.getLogger("django_memsession")

# Management commands that serve requests, and so hold a live store worth reaching.
SERVING_COMMANDS = frozenset({"runserver", "runserver_plus"})

_listening: bool | None = None
_warned: set[str] = set()


class Serves(Protocol):
    """An engine's services, as the control channel sees them: the listener they hold, and what
    they answer."""

    listener: Listener | None
    # Whether each process holds sessions of its own (the memory store): then more than one
    # live process splits them, which is worth a warning. Not on Redis, which they share.
    holds_sessions: bool

    def handle(self, request: Request) -> ProcessReport: ...


def set_listening(value: bool | None) -> None:
    """Whether this process listens on the control channel: ``None`` (the default) decides from
    the command line; the pytest plugin says ``False`` (a test run serves nothing)."""
    global _listening
    _listening = value


def should_listen() -> bool:
    """Whether this process serves requests: not a management command other than runserver.

    runserver's autoreloader parent never uses the store, so only the serving child gets here.
    """
    if _listening is not None:
        return _listening
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


def warn_once(key: str, message: str, *args: Any) -> None:
    """Log a warning the first time ``key`` comes up in this process."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def start_listener(services: Serves) -> Listener | None:
    """Listen on the control channel for ``services`` (idempotent: the listener they hold, if
    any); ``None`` when the channel is off or cannot start, said once. The caller holds its
    services' build lock."""
    if services.listener is not None or not control.enabled():
        return services.listener
    directory = control.control_dir()
    problem = control.dir_problem(directory, create=True)
    if problem is not None:
        warn_once(
            "dir",
            "Session control channel off: %s. prunesessions and the admin page will not reach "
            "this process; set MEMSESSION_CONTROL_DIR to a private directory (0700) of this "
            "user, or MEMSESSION_CONTROL = False.",
            problem,
        )
        return None
    path = control.socket_path(os.getpid())
    if len(os.fsencode(path)) + 1 > control.MAX_SOCKET_PATH:  # bound as <path>~ first
        warn_once(
            "path",
            "Session control channel off: the socket path %s is longer than %d bytes; set "
            "MEMSESSION_CONTROL_DIR to a shorter directory.",
            path,
            control.MAX_SOCKET_PATH,
        )
        return None
    try:
        services.listener = Listener(path, services.handle)
    except OSError as exc:
        warn_once(
            "bind", "Session control channel off: cannot listen on %s (%s).", path, exc.strerror
        )
        return None
    others = control.live_peers() if services.holds_sessions else []
    if others:
        logger.warning(
            "%s (pids %s)",
            split_warning(len(others) + 1),
            ", ".join(str(pid) for pid in [os.getpid(), *others]),
        )
    return services.listener


def close_listener(services: Serves | None, *, unlink: bool = True, wait: bool = True) -> None:
    """Stop ``services``' listener, if they have one (see ``Listener.close``). Takes no lock:
    one attribute swap is atomic, and the SIGTERM path comes here, possibly while the main
    thread holds a build lock (a signal handler waiting on it would never return)."""
    if services is None:
        return
    listener, services.listener = services.listener, None
    if listener is not None:
        listener.close(unlink=unlink, wait=wait)


def listen_again(services: Serves, lock: threading.Lock) -> None:
    """After ``MEMSESSION_CONTROL`` or ``MEMSESSION_CONTROL_DIR`` changed: close the listener
    and start it on the new settings, if ``services`` listen or should (``lock``: their build
    lock)."""
    if services.listener is not None or should_listen():
        close_listener(services)
        with lock:
            start_listener(services)
