"""What both engines (memory and Redis) add to Django's ``SessionBase``: fast, valid keys and
lazy loading without an exception per request. Imports neither store."""

from __future__ import annotations

import collections
import contextvars
import os
import re
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import VALID_KEY_CHARS, CreateError, SessionBase
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

__all__ = [
    "AUTH_SESSION_KEY",
    "KEY_LENGTH",
    "FastSessionBase",
    "current_session",
    "new_session_key",
]

# django.contrib.auth.SESSION_KEY, spelled out: importing django.contrib.auth here would make the
# engines depend on the app registry.
AUTH_SESSION_KEY = "_auth_user_id"

KEY_LENGTH = 32  # of the keys the engines make: Django's length and alphabet

_KEY_ALPHABET = VALID_KEY_CHARS.encode("ascii")
_KEY_TABLE = bytes(_KEY_ALPHABET[byte % len(_KEY_ALPHABET)] for byte in range(256))
# Bytes >= 252 (= 7 x 36) are dropped so every character is equally likely.
_KEY_REJECT = bytes(range(256 - 256 % len(_KEY_ALPHABET), 256))
# What _validate_session_key accepts: 8-64 characters of the alphabet (a compiled pattern is
# about 80 ns quicker than str.strip() with the alphabet, on every request).
_valid_key = re.compile(f"[{re.escape(VALID_KEY_CHARS)}]{{8,64}}").fullmatch


# Keys are made a batch at a time, from one read of the OS CSPRNG: a read costs about 0.5 µs
# however few bytes it returns, which was most of a key's cost, paid on every create. A deque's
# popleft is atomic, so no two threads take one key; a forked child drops its parent's batch (it
# would hand out the keys its parent and siblings hand out).
_KEY_BATCH = 64
_keys: collections.deque[str] = collections.deque()


def _make_keys() -> list[str]:
    raw = os.urandom((KEY_LENGTH + 2) * _KEY_BATCH).translate(_KEY_TABLE, _KEY_REJECT)
    text = raw.decode("ascii")
    return [
        text[start : start + KEY_LENGTH]
        for start in range(0, len(raw) - KEY_LENGTH + 1, KEY_LENGTH)
    ]


def new_session_key() -> str:
    """A 32-character key of ``[a-z0-9]``, like Django's, from the OS CSPRNG.

    Django's ``get_random_string(32)`` costs ~20 µs (32 calls into ``secrets.choice``); this costs
    about 0.1 µs with the same alphabet, length and unpredictability (the keys of a batch are
    independent: each is 32 characters of uniformly random bytes, none shared).
    """
    while True:
        try:
            return _keys.popleft()
        except IndexError:
            _keys.extend(_make_keys())


os.register_at_fork(after_in_child=_keys.clear)


# The logged-in session the current request (thread or task) loaded or logged in last, on either
# engine: after a password change, the one that update_session_auth_hash() keeps (see
# password.py). A ContextVar, so that it follows the request into sync_to_async threads and
# stays apart between greenlets and tasks. Forgotten when each request starts and ends.
current_session: contextvars.ContextVar[FastSessionBase | None] = contextvars.ContextVar(
    "django_memsession_current_session", default=None
)


# settings.SESSION_COOKIE_AGE, read once: every save of a session without its own expiry needs
# it, and reading a setting through Django's lazy settings costs about 0.3 µs. When a test changes
# it, setting_changed makes the next save read it again.
_cookie_age: int | None = None


def _cookie_age_changed(*, setting: str, **kwargs: Any) -> None:
    global _cookie_age
    if setting == "SESSION_COOKIE_AGE":
        _cookie_age = None


setting_changed.connect(_cookie_age_changed)


class FastSessionBase(SessionBase):
    """Django's ``SessionBase`` with what every request of both engines does made cheap."""

    def __init__(self, session_key: str | None = None) -> None:
        # What SessionBase.__init__ does, minus import_string(SESSION_SERIALIZER) on every
        # request: load() and save() use the cached codec (which still follows the setting).
        # SessionBase's _session_key setter, without its property call (on every request).
        self._SessionBase__session_key = (
            session_key if self._validate_session_key(session_key) else None
        )
        self.accessed = False
        self.modified = False
        # The stored form this session was loaded from or last saved as (None: neither), which a
        # save writes onto or merges from (see merge.py). Set here, first, so every instance
        # adds its attributes in one order and keeps CPython's compact shared-key __dict__
        # (set first in load(), it cost about 2 % of a load-modify-save).
        self._base: bytes | None = None

    @property
    def serializer(self) -> Any:  # SessionBase.encode()/decode() use it
        return import_string(settings.SESSION_SERIALIZER)

    # SessionBase's lazy loading, without raising and catching an AttributeError on the first
    # access of every request (about 0.4 µs, a tenth of a whole load from the memory store).

    # The session key as SessionBase keeps it, read as an attribute where every request reads
    # it: the session_key property is a Python call each time (about 0.05 µs, several a save).
    _SessionBase__session_key: str | None

    def _get_session(self, no_load: bool = False) -> dict[str, Any]:
        self.accessed = True
        cache: dict[str, Any] | None = self.__dict__.get("_session_cache")
        if cache is None:
            cache = self._session_cache = (
                {} if self._SessionBase__session_key is None or no_load else self.load()
            )
        return cache

    async def _aget_session(self, no_load: bool = False) -> dict[str, Any]:
        # Also SessionBase's own on Django 5.0+; Django 4.2 has none.
        self.accessed = True
        cache: dict[str, Any] | None = self.__dict__.get("_session_cache")
        if cache is None:
            cache = self._session_cache = (
                {} if self.session_key is None or no_load else await self.aload()
            )
        return cache

    _session = property(_get_session)

    def _validate_session_key(self, key: Any) -> bool:
        """Only keys these engines could have made: 8-64 characters of ``[a-z0-9]``.

        Anything else (overlong, non-ASCII, NUL, separators) is no session, without a lookup.
        """
        return isinstance(key, str) and _valid_key(key) is not None

    def get_session_cookie_age(self) -> int:
        global _cookie_age
        age = _cookie_age
        if age is None:
            age = _cookie_age = settings.SESSION_COOKIE_AGE
        return age

    def _get_new_session_key(self) -> str:
        # No exists() round trip: a collision of 165 random bits is caught by create() anyway.
        return new_session_key()

    async def _aget_new_session_key(self) -> str:
        return new_session_key()

    def _set_new_key(self, key: str) -> None:
        """A new key, validated unless it is one of new_session_key()'s (valid as made: the
        check is a regex match, on every create)."""
        cls = type(self)
        if (
            cls._get_new_session_key is FastSessionBase._get_new_session_key
            and cls._aget_new_session_key is FastSessionBase._aget_new_session_key
        ):
            self._SessionBase__session_key = key
        else:
            self._session_key = key

    def create(self) -> None:
        for _ in range(100):
            self._set_new_key(self._get_new_session_key())
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
        raise RuntimeError("Unable to create a new session key.")

    async def acreate(self) -> None:
        for _ in range(100):
            self._set_new_key(await self._aget_new_session_key())
            try:
                await self.asave(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
        raise RuntimeError("Unable to create a new session key.")
