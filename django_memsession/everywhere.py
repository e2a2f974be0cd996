"""Who is logged in, in every live process: ``user_sessions``, ``end_user_sessions``,
``end_session`` (the package's public functions).

Each asks every live process of the project through the control channel (this one directly; only
this one where the channel is off), all at once, within ``control.REPORT_TIMEOUT`` however many
hang; a process that does not answer is logged and left out. Requests name the user by the id
Django keeps in the session and a session by its opaque id (:func:`~django_memsession.logged_in.
session_id`): no session key ever crosses the channel or reaches a caller.

Every ending is logged once, here (who ended how many of whose sessions, never a key), and sends
:data:`~django_memsession.signals.user_sessions_ended`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from . import control, runtime
from .logged_in import end_local, session_id, user_id
from .messages import Gathered, UserSession
from .signals import user_sessions_ended
from .store import MemoryStore

__all__ = ["end_session", "end_user_sessions", "end_user_sessions_in_background", "user_sessions"]

logger = logging.getLogger("django_memsession")


def _log_errors(gathered: Gathered, what: str) -> None:
    for error in gathered.errors:
        logger.warning("%s: %s", what, error)
    if gathered.problem:
        logger.warning("%s: %s", what, gathered.problem)


def user_sessions(user: Any) -> list[UserSession]:
    """The live sessions of ``user`` (a user instance or its primary key; no database query)
    in every live process, most recently used first."""
    uid = user_id(user)
    gathered = runtime.gather("sessions", fields={"user": uid})
    _log_errors(gathered, "user_sessions")
    found: list[UserSession] = []
    for report in gathered.processes:
        found += report.sessions
        offset = len(report.sessions)
        while offset < report.sessions_total:  # a process with more: the next pages
            try:
                page = runtime.ask(
                    report.pid,
                    "sessions",
                    fields={"user": uid, "offset": offset},
                    timeout=control.REPORT_TIMEOUT,
                )
            except control.ChannelError as exc:
                logger.warning("user_sessions: process %d: %s", report.pid, exc)
                break
            if not page.sessions:
                break
            found += page.sessions
            offset += len(page.sessions)
    found.sort(key=lambda record: (record.last_used, record.created), reverse=True)
    return found


def _keep_id(keep: Any) -> str | None:
    if keep is None:
        return None
    key = keep if isinstance(keep, str) else getattr(keep, "session_key", None)
    return None if key is None else session_id(key)


def _ended(uid: str, count: int, reason: str, by: Any) -> None:
    """Log and signal an ending (nothing ended, nothing to say)."""
    if not count:
        return
    actor = None if by is None else user_id(by)
    logger.info(
        "Ended %d session(s) of user %s (%s)%s.",
        count,
        uid,
        reason,
        "" if actor is None else f" by user {actor}",
    )
    user_sessions_ended.send(sender=MemoryStore, user=uid, count=count, reason=reason, by=actor)


def _end(uid: str, fields: control.Fields, reason: str, by: Any) -> int:
    gathered = runtime.gather("end", fields=fields)
    _log_errors(gathered, "end_user_sessions")
    count = sum(report.ended for report in gathered.processes)
    _ended(uid, count, reason, by)
    return count


def end_user_sessions(user: Any, keep: Any = None, *, by: Any = None, reason: str = "ended") -> int:
    """End ``user``'s sessions in every live process, except ``keep`` (a session key, or
    ``request.session``); how many ended. ``by`` (the user who asked, if any) and ``reason``
    go to the log line and the signal."""
    uid = user_id(user)
    return _end(uid, {"user": uid, "keep": _keep_id(keep)}, reason, by)


def end_session(user: Any, session_id_: str, *, by: Any = None, reason: str = "ended") -> int:
    """End the one session of ``user`` whose opaque id is ``session_id_``, wherever it lives;
    1 if it ended, 0 if there is none (or it is another user's)."""
    uid = user_id(user)
    return _end(uid, {"user": uid, "session_id": session_id_}, reason, by)


def end_user_sessions_in_background(
    user: Any, keep: Any = None, *, by: Any = None, reason: str = "ended"
) -> threading.Thread | None:
    """:func:`end_user_sessions`, with this process's sessions ended now and the other
    processes asked on a thread, so a request is never held by a hung peer. The thread (for
    tests), or None where this process holds no store."""
    uid = user_id(user)
    store = runtime.peek_store()
    keep_id = _keep_id(keep)
    here = end_local(store, uid, keep=keep_id) if store is not None else 0

    def others() -> None:
        gathered = runtime.gather("end", fields={"user": uid, "keep": keep_id}, local=False)
        _log_errors(gathered, "end_user_sessions")
        _ended(uid, here + sum(report.ended for report in gathered.processes), reason, by)

    thread = threading.Thread(target=others, name="django_memsession-end", daemon=True)
    thread.start()
    return thread
