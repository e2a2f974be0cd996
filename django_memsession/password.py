"""After a password change, the user's other sessions leave memory at once
(``MEMSESSION_END_SESSIONS_ON_PASSWORD_CHANGE``, default True).

Django rejects them only lazily, when each comes back and its ``_auth_user_hash`` no longer
matches, and until then they stay in memory. Django has no password-changed signal:
:func:`on_user_saved` is a ``post_save`` receiver on the user model that sees
``AbstractBaseUser.set_password()``'s mark (``_password``, set until the save that follows), so it
costs no query.

Every session of the user holds the old hash at that moment, but one: the session of the request
that changed the password, which Django's ``update_session_auth_hash()`` keeps (it runs after the
save, gives the session a new key and the new hash). That session is the one this thread's
request loaded (see ``engine.current_session``) when it belongs to the same user, and is kept;
changing another user's password (the admin) or from the shell keeps nothing. This process's
sessions end at once; the other processes are asked on a thread, so a hung peer never holds the
request.
"""

from __future__ import annotations

from typing import Any

from . import conf
from .engine import AUTH_SESSION_KEY, current_session
from .everywhere import end_user_sessions_in_background
from .logged_in import user_id

__all__ = ["on_user_saved"]


def _current_key(uid: str) -> str | None:
    """The key of the session this request loaded, if it is the same user's."""
    session = current_session.get()
    if session is None or session.session_key is None:
        return None
    data = session.__dict__.get("_session_cache") or {}
    return session.session_key if str(data.get(AUTH_SESSION_KEY)) == uid else None


def on_user_saved(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    if created or getattr(instance, "_password", None) is None:
        return  # not a password change (set_password() was not called before this save)
    if conf.conf.END_SESSIONS_ON_PASSWORD_CHANGE is not True:
        return
    uid = user_id(instance)
    end_user_sessions_in_background(uid, keep=_current_key(uid), reason="password")
