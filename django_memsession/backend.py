"""What the engine asks of a store: the interface the memory store implements, and a store on
another medium (Redis) can implement too.

A store keeps opaque payloads (the engine serializes) under session keys, with an expiry in
seconds since the epoch on the store's ``clock``. It owns its eviction policy; the engine only
tells it whether a session is logged in (``authenticated``), which the policy protects longest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .memory.store import PutResult

__all__ = ["SessionBackend"]


@runtime_checkable
class SessionBackend(Protocol):
    """The request path of a session store, sync and async."""

    clock: Callable[[], float]

    def get(self, key: str) -> bytes | None:
        """The payload of a live session (and it counts as used), or None."""

    def exists(self, key: str) -> bool:
        """Whether a live session has this key; no change of recency."""

    def put(
        self,
        key: str,
        payload: bytes,
        expires_at: float,
        *,
        authenticated: bool,
        create: bool,
        user: str | None = None,
        client: str | None = None,
    ) -> PutResult:
        """Store a session: ``EXISTS`` for a create of a present key, ``MISSING`` for an update
        of a deleted one (a logout is never undone), ``RESTORED`` for an update of an evicted
        one (eviction is not logout). A logged-in session is indexed under ``user`` (Django's
        ``_auth_user_id``), with ``client`` (opaque text; None keeps the one noted)."""

    def note_client(self, key: str, client: str) -> bool:
        """Note a logged-in session's client if it changed; whether it did."""

    def delete(self, key: str) -> bool:
        """Remove a session for good; whether it was there."""

    async def aget(self, key: str) -> bytes | None: ...

    async def aexists(self, key: str) -> bool: ...

    async def aput(
        self,
        key: str,
        payload: bytes,
        expires_at: float,
        *,
        authenticated: bool,
        create: bool,
        user: str | None = None,
        client: str | None = None,
    ) -> PutResult: ...

    async def adelete(self, key: str) -> bool: ...

    def stats(self) -> dict[str, object]:
        """This process's figures (see README, "Stats")."""
