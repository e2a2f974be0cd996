"""Signals sent when sessions leave the store other than by ``delete()``.

Sent once per batch (one save that evicts three sessions sends one signal), after the store's
lock is released, with ``sender`` the store class and keyword arguments:

- ``count``: how many sessions;
- ``bytes``: how many accounted bytes they freed;
- ``reason``: ``"write"`` (a save needed room), ``"load"`` (found expired on load), ``"prune"``
  (a prune pass) or ``"shrink"`` (brought down to the low-water mark).

No session key or data is ever passed.
"""

from django.dispatch import Signal

sessions_evicted = Signal()
sessions_expired = Signal()
