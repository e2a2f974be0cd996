"""After a password change, the user's other sessions leave memory at once
(``MEMSESSION_END_SESSIONS_ON_PASSWORD_CHANGE``, default True).

Django rejects them only lazily, when each comes back and its ``_auth_user_hash`` no longer
matches, and until then they stay in memory. Django has no password-changed signal:
:func:`on_user_saved` is a ``post_save`` receiver on the user model that sees
``AbstractBaseUser.set_password()``'s mark (``_password``, set until the save that follows), so it
costs no query.

Every session of the user holds the old hash at that moment; Django keeps at most one of them,
the request's own, and only in the step that follows the save:

* ``update_session_auth_hash()`` cycles the request session's key and gives it the new hash:
  the user's other sessions end in that ``cycle_key()`` (see ``FastSessionBase.cycle_key``),
  keeping the new key; when the session is another user's (an admin changing someone's
  password), none is kept.
* ``login()`` again (a view that logs the user in with the new password) flushes the stale
  session or cycles its key: the others end at the login, keeping what the request now holds.
* Neither: Django will reject every one of them, the request's own included, so all end when
  the request finishes (after its response saved the session: never an interrupted save).

Outside a request (the shell, a task) nothing is kept and all end at once. So loads and saves
pay nothing for this; only a password change and a ``cycle_key()`` look at it. This process's
sessions end at once; the other processes are asked on a thread, so a hung peer never holds the
request.
"""

from __future__ import annotations

from typing import Any

from . import conf
from .everywhere import end_user_sessions_in_background
from .logged_in import user_id
from .sessionbase import AUTH_SESSION_KEY, FastSessionBase, current_password_changes, request_state

__all__ = [
    "RequestPasswordChanges",
    "on_login",
    "on_request_finished",
    "on_request_started",
    "on_user_saved",
]


def _end(uid: str, keep: str | None) -> None:
    end_user_sessions_in_background(uid, keep=keep, reason="password")


def _user_of(session: FastSessionBase) -> str | None:
    data = session.__dict__.get("_session_cache") or {}
    user = data.get(AUTH_SESSION_KEY)
    return None if user is None else str(user)


class RequestPasswordChanges(set[str]):
    """The ids of the users whose password this request changed, their sessions not ended yet."""

    def session_cycled(self, session: FastSessionBase) -> None:
        """``cycle_key()`` of a session (``update_session_auth_hash()``, ``login()``): its user's
        other sessions end keeping it; every other changed user's sessions end, keeping none."""
        self._end_all(keep_user=_user_of(session), keep=session.session_key)

    def logged_in(self, session: FastSessionBase, uid: str) -> None:
        if uid in self:
            self.discard(uid)
            _end(uid, session.session_key)

    def _end_all(self, keep_user: str | None = None, keep: str | None = None) -> None:
        while self:
            uid = self.pop()
            _end(uid, keep if uid == keep_user else None)


def on_request_started(**kwargs: Any) -> None:
    request_state.password_changes = RequestPasswordChanges()


def on_request_finished(**kwargs: Any) -> None:
    """Changes no step of the request kept a session for end every session of their users. A
    thread serves many requests, and runs other code between them: none may see the last
    request's changes."""
    changes = current_password_changes()
    request_state.password_changes = None
    if isinstance(changes, RequestPasswordChanges):
        changes._end_all()


def on_login(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """``user_logged_in``: a login with the new password, after the change in this request, keeps
    the request's session (its key is new, or comes with the response)."""
    changes = current_password_changes()
    session = getattr(request, "session", None)
    if changes and user is not None and isinstance(session, FastSessionBase):  # either engine
        assert isinstance(changes, RequestPasswordChanges)
        changes.logged_in(session, user_id(user))


def on_user_saved(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    if created or getattr(instance, "_password", None) is None:
        return  # not a password change (set_password() was not called before this save)
    if conf.conf.END_SESSIONS_ON_PASSWORD_CHANGE is not True:
        return
    uid = user_id(instance)
    changes = current_password_changes()
    if isinstance(changes, RequestPasswordChanges):
        changes.add(uid)  # until the request keeps its session, or finishes
    else:
        _end(uid, None)  # outside a request: no session to keep
