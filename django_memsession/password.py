"""After a password change, the user's other sessions leave memory at once
(``MEMSESSION_END_SESSIONS_ON_PASSWORD_CHANGE``, default True).

Django rejects them only lazily, when each comes back and its ``_auth_user_hash`` no longer
matches, and until then they stay in memory. Django has no password-changed signal:
:func:`on_user_saved` is a ``post_save`` receiver on the user model that sees
``AbstractBaseUser.set_password()``'s mark (``_password``, set until the save that follows), so it
costs no query. The sessions end when the save is committed (``transaction.on_commit``: at once
in autocommit): a change rolled back changed no password, and ends nothing.

Every session of the user holds the old hash at that moment, but one: the session of the request
that changed the password, which Django's ``update_session_auth_hash()`` keeps (it gives the
session a new key and the new hash, before or after the save). That session is the one this
request loaded logged in, or logged in (see ``sessionbase.current_session``), when it belongs to
the same user, and is kept; changing another user's password (the admin) or from the shell keeps
nothing. A view that changes the password without ``update_session_auth_hash()`` keeps its
session here too: Django rejects it on its next request, and it ends then. This process's
sessions end at once; the other processes are asked on a thread, so a hung peer never holds the
request.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from . import conf
from .everywhere import end_user_sessions_in_background
from .logged_in import user_id
from .sessionbase import AUTH_SESSION_KEY, FastSessionBase, current_session

__all__ = ["on_login", "on_user_saved"]


def on_login(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """``user_logged_in``: the session that logged in during this request (loaded anonymous,
    or not loaded at all) is the one a password change later in the request keeps."""
    session = getattr(request, "session", None)
    if isinstance(session, FastSessionBase):  # either engine
        current_session.set(session)


def _current_key(uid: str) -> str | None:
    """The key of the session this request loaded, if it is the same user's."""
    session = current_session.get()
    if session is None or session.session_key is None:
        return None
    data = session.__dict__.get("_session_cache") or {}
    return session.session_key if str(data.get(AUTH_SESSION_KEY)) == uid else None


def on_user_saved(
    sender: Any, instance: Any, created: bool = False, using: str | None = None, **kwargs: Any
) -> None:
    if created or getattr(instance, "_password", None) is None:
        return  # not a password change (set_password() was not called before this save)
    if conf.conf.END_SESSIONS_ON_PASSWORD_CHANGE is not True:
        return
    uid = user_id(instance)

    def end_the_others() -> None:
        # The kept session's key as it is at the commit: update_session_auth_hash() may have
        # given it a new one since the save (ATOMIC_REQUESTS commits after the view).
        end_user_sessions_in_background(uid, keep=_current_key(uid), reason="password")

    transaction.on_commit(end_the_others, using=using)
