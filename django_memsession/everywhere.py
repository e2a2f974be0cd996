"""Who is logged in, wherever the sessions are: ``user_sessions``, ``end_user_sessions``,
``end_session`` (the package's public functions).

Where the answers come from is the engine's user index (:func:`index`, through
``engines.current()``):

* the memory engine (``memory/who.py``'s ``EveryProcess``): every live process of the project is
  asked through the control channel, all at once; requests name the user by the id Django keeps
  in the session and a session by its opaque id
  (:func:`~django_memsession.logged_in.session_id`): no session key ever crosses the channel;
* the Redis engine (``redis/services.py``'s ``SharedIndex``): the user index in Redis is shared
  by every process, so it is read and changed there in a round trip or two, with no fan-out.

Either way no session key reaches a caller. Every ending is logged once, here (who ended how many
of whose sessions, never a key), and sends :data:`~django_memsession.signals.user_sessions_ended`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from . import engines
from .engines import Index
from .logged_in import session_id, user_id
from .messages import UserSession
from .signals import user_sessions_ended

__all__ = [
    "Index",
    "end_session",
    "end_user_sessions",
    "end_user_sessions_in_background",
    "index",
    "user_sessions",
]

logger = logging.getLogger("django_memsession")


def index() -> Index:
    """Where who is logged in is answered: this process's engine's user index."""
    return engines.current().index()


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
