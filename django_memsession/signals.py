"""Signals sent when sessions leave the store other than by ``delete()``.

Sent once per batch (one save that evicts three sessions sends one signal), after the store's
lock is released, with ``sender`` the store class and keyword arguments:

- ``count``: how many sessions;
- ``bytes``: how many accounted bytes they freed;
- ``reason``: ``"write"`` (a save needed room), ``"load"`` (found expired on load), ``"prune"``
  (a prune pass) or ``"shrink"`` (brought down to the low-water mark).

No session key or data is ever passed.

``session_conflict`` is sent when two requests of one session saved it at once and both changed
the same top-level key to different values (see ``merge.py``): the later save's value was kept.
Keyword arguments: ``user`` (the user's id as Django keeps it in the session, None when
anonymous) and ``keys`` (a sorted tuple of the key names, never their values). ``sender`` is the
engine's ``SessionStore`` class; the session key is never passed.

``user_sessions_ended`` is sent once for each ending of a user's sessions, with ``sender`` the
store class and keyword arguments ``user`` (the user's id as Django keeps it in the session),
``count``, ``reason`` (``"ended"`` by ``end_user_sessions``/``end_session``, ``"password"``
after a password change, ``"limit"`` over ``MEMSESSION_MAX_SESSIONS_PER_USER``, or what the
caller said) and ``by`` (the id of the user who ended them, or None).
"""

from django.dispatch import Signal

sessions_evicted = Signal()
sessions_expired = Signal()
user_sessions_ended = Signal()
session_conflict = Signal()
