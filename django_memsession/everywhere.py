"""Who is logged in, wherever the sessions are: ``user_sessions``, ``end_user_sessions``,
``end_session`` (the package's public functions).

One seam (:func:`index`) picks where the answers come from, by ``SESSION_ENGINE``:

* the memory engine (:class:`EveryProcess`): every live process of the project is asked through
  the control channel (this one directly; only this one where the channel is off), all at once,
  within ``control.REPORT_TIMEOUT`` however many hang; a process that does not answer is logged
  and left out. Requests name the user by the id Django keeps in the session and a session by
  its opaque id (:func:`~django_memsession.logged_in.session_id`): no session key ever crosses
  the channel;
* the Redis engine (:class:`SharedIndex`): the user index in Redis is shared by every process
  (``redis/users.py``), so it is read and changed there in a round trip or two, with no fan-out.

Either way no session key reaches a caller. Every ending is logged once, here (who ended how many
of whose sessions, never a key), and sends :data:`~django_memsession.signals.user_sessions_ended`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from . import conf, control, runtime
from .logged_in import parse_client, session_id, user_id
from .memory.store import MemoryStore
from .memory.who import end_local
from .messages import Gathered, UserSession
from .signals import user_sessions_ended

__all__ = [
    "EveryProcess",
    "SharedIndex",
    "end_session",
    "end_user_sessions",
    "end_user_sessions_in_background",
    "index",
    "user_sessions",
]

logger = logging.getLogger("django_memsession")


class Index(Protocol):
    """Where a user's sessions are found and ended."""

    sender: type

    def sessions(self, uid: str) -> list[UserSession]:
        """The user's live sessions (unsorted)."""

    def end(self, uid: str, *, session_id_: str | None = None, keep: str | None = None) -> int:
        """End the one session with id ``session_id_`` if given, else all but ``keep`` (an id);
        how many ended."""

    def end_in_background(self, uid: str, keep: str | None, done: Any) -> threading.Thread | None:
        """End all but ``keep`` without holding the caller on a hung peer; ``done(count)``."""


def index() -> Index:
    """The seam: where who is logged in is answered, for the configured ``SESSION_ENGINE``."""
    if conf.redis_engine():
        return SharedIndex()
    return EveryProcess()


def _log_errors(gathered: Gathered, what: str) -> None:
    for error in gathered.errors:
        logger.warning("%s: %s", what, error)
    if gathered.problem:
        logger.warning("%s: %s", what, gathered.problem)


class EveryProcess:
    """The memory engine: each process holds its own sessions; ask them all."""

    sender = MemoryStore

    def sessions(self, uid: str) -> list[UserSession]:
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
        return found

    def end(self, uid: str, *, session_id_: str | None = None, keep: str | None = None) -> int:
        fields: control.Fields = {"user": uid}
        if session_id_ is not None:
            fields["session_id"] = session_id_
        else:
            fields["keep"] = keep
        gathered = runtime.gather("end", fields=fields)
        _log_errors(gathered, "end_user_sessions")
        return sum(report.ended for report in gathered.processes)

    def end_in_background(self, uid: str, keep: str | None, done: Any) -> threading.Thread | None:
        """This process's sessions end now; the other processes are asked on a thread."""
        store = runtime.peek_store()
        here = end_local(store, uid, keep=keep) if store is not None else 0

        def others() -> None:
            gathered = runtime.gather("end", fields={"user": uid, "keep": keep}, local=False)
            _log_errors(gathered, "end_user_sessions")
            done(here + sum(report.ended for report in gathered.processes))

        thread = threading.Thread(target=others, name="django_memsession-end", daemon=True)
        thread.start()
        return thread


class SharedIndex:
    """The Redis engine: one index in Redis for every process. Records carry ``pid`` 0 (the
    sessions are in Redis, not in a process)."""

    @property
    def sender(self) -> type:
        from .redis.store import RedisStore

        return RedisStore

    @staticmethod
    def _store() -> Any:
        from .redis.store import get_store

        return get_store()

    def sessions(self, uid: str) -> list[UserSession]:
        found = []
        for row in self._store().user_sessions(uid):
            address, agent = parse_client(row.client)
            found.append(
                UserSession(
                    id=session_id(row.key),
                    pid=0,
                    user=row.user,
                    created=float(row.created),
                    last_used=float(row.last_used),
                    expires=row.expires_at,
                    ip=address,
                    user_agent=agent,
                )
            )
        return found

    def end(self, uid: str, *, session_id_: str | None = None, keep: str | None = None) -> int:
        store = self._store()
        keys = [
            row.key
            for row in store.user_sessions(uid)
            if (session_id(row.key) == session_id_ if session_id_ is not None else True)
            and (keep is None or session_id(row.key) != keep)
        ]
        return int(store.end_sessions(uid, keys)) if keys else 0

    def end_in_background(self, uid: str, keep: str | None, done: Any) -> threading.Thread | None:
        """No peers to wait for: two round trips to Redis, each bounded by its socket timeout.
        When Redis cannot answer, the request goes on (the password is already changed, and
        Django rejects the other sessions when they come back): logged, nothing ended."""
        from .redis.exceptions import SessionBackendUnavailable

        try:
            count = self.end(uid, keep=keep)
        except SessionBackendUnavailable as exc:
            logger.warning(
                "end_user_sessions: Redis could not be reached (%s); the other sessions of "
                "user %s stay in Redis until they come back (then Django rejects them) or "
                "expire.",
                exc.reason,
                uid,
            )
            return None
        done(count)
        return None


def user_sessions(user: Any) -> list[UserSession]:
    """The live sessions of ``user`` (a user instance or its primary key; no database query)
    in every live process (or in Redis), most recently used first."""
    found = index().sessions(user_id(user))
    found.sort(key=lambda record: (record.last_used, record.created), reverse=True)
    return found


def _keep_id(keep: Any) -> str | None:
    if keep is None:
        return None
    key = keep if isinstance(keep, str) else getattr(keep, "session_key", None)
    return None if key is None else session_id(key)


def _ended(uid: str, count: int, reason: str, by: Any, sender: type) -> None:
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
    user_sessions_ended.send(sender=sender, user=uid, count=count, reason=reason, by=actor)


def end_user_sessions(user: Any, keep: Any = None, *, by: Any = None, reason: str = "ended") -> int:
    """End ``user``'s sessions in every live process (or in Redis), except ``keep`` (a session
    key, or ``request.session``); how many ended. ``by`` (the user who asked, if any) and
    ``reason`` go to the log line and the signal."""
    uid = user_id(user)
    where = index()
    count = where.end(uid, keep=_keep_id(keep))
    _ended(uid, count, reason, by, where.sender)
    return count


def end_session(user: Any, session_id_: str, *, by: Any = None, reason: str = "ended") -> int:
    """End the one session of ``user`` whose opaque id is ``session_id_``, wherever it lives;
    1 if it ended, 0 if there is none (or it is another user's)."""
    uid = user_id(user)
    where = index()
    count = where.end(uid, session_id_=session_id_)
    _ended(uid, count, reason, by, where.sender)
    return count


def end_user_sessions_in_background(
    user: Any, keep: Any = None, *, by: Any = None, reason: str = "ended"
) -> threading.Thread | None:
    """:func:`end_user_sessions`, never holding the request on a hung peer: on the memory engine
    this process's sessions end now and the others are asked on a thread (returned, for tests);
    on Redis, all end now (None is returned)."""
    uid = user_id(user)
    where = index()
    sender = where.sender
    return where.end_in_background(
        uid, _keep_id(keep), lambda count: _ended(uid, count, reason, by, sender)
    )
