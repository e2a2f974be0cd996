"""The Redis engine's outage exception. Importing this module does not import redis."""

from __future__ import annotations


class SessionBackendUnavailable(Exception):
    """Redis could not answer: down, unreachable, timing out, read-only, or out of memory.

    The session is neither empty nor lost: the request cannot know what it holds. With
    ``django_memsession.middleware.SessionMiddleware`` the request ends in a 503 with
    ``Retry-After``; without it, in Django's usual 500 (never in a logout). ``reason`` is short
    and names the failure (e.g. ``"TimeoutError: Timeout reading from socket"``); it never holds
    a session key or session data.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"The session store (Redis) is unavailable: {reason}")
