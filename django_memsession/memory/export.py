"""What a memory process hands ``exportsessions``: its live sessions, page by page.

The first page of a run copies the store with ``MemoryStore.copy_chunks()`` (the store's lock
held one chunk at a time, as for a snapshot; the values are shared, not copied) into an
:class:`ExportRun`, which later pages are cut from, each within
:data:`~django_memsession.messages.EXPORT_PAGE_BYTES`. The export turns mirroring on before the
first page, so a session written or deleted after the copy was taken reaches Redis through the
mirror, and the export's copy (older) cannot overwrite it there (see
:mod:`~django_memsession.redis.importer`).

A process holds one run at a time: a new run replaces it, the last page ends it, and a run left
unfinished (the command was killed) is dropped after :data:`IDLE_TIMEOUT` seconds, at the next
request on the control channel.
"""

from __future__ import annotations

import base64
import logging
import math
import time
from collections.abc import Iterable

from ..messages import EXPORT_PAGE_BYTES, ExportedSession
from .index import FACTS, FACTS_SIZE
from .lru import AUTHENTICATED
from .store import HEADER, HEADER_SIZE, MemoryStore

__all__ = ["IDLE_TIMEOUT", "ExportRun", "expiry_of", "session_of"]

IDLE_TIMEOUT = 300.0

logger = logging.getLogger("django_memsession")


def _parts(segment: int, value: bytes, version: int) -> tuple[float, int] | None:
    """A stored value's expiry and where its payload starts; None unless it is a whole value of
    ours: long enough for its header, its facts' lengths within it, a finite expiry."""
    if segment == AUTHENTICATED and version >= 2:
        if len(value) < FACTS_SIZE:
            return None
        expires_at, _, _, _, user_length, client_length = FACTS.unpack_from(value)
        start = FACTS_SIZE + user_length + client_length
    else:
        if len(value) < HEADER_SIZE:
            return None
        expires_at, start = HEADER.unpack_from(value)[0], HEADER_SIZE
    if start > len(value) or not math.isfinite(expires_at):
        return None
    return expires_at, start


def expiry_of(segment: int, value: bytes, version: int = 2) -> float | None:
    """A stored value's expiry; None for a value that is not a whole session of ours (cut
    short, or its facts' lengths past its end, or an expiry that is not a number): an export
    leaves it out."""
    parts = _parts(segment, value, version)
    return None if parts is None else parts[0]


def session_of(segment: int, value: bytes, version: int = 2) -> tuple[float, bytes]:
    """A stored value's expiry and serialized session. A logged-in session's value carries its
    facts (user, client, times) before the payload; a version 1 snapshot's does not. Raises
    ValueError for a value that is not whole (see :func:`expiry_of`), never a part of one."""
    parts = _parts(segment, value, version)
    if parts is None:
        raise ValueError("not a whole session value")
    expires_at, start = parts
    return expires_at, value[start:]


def latest(records: Iterable[tuple[int, str, bytes]]) -> dict[str, tuple[int, bytes]]:
    """Each key once, its last copy (a session written during the copy appears twice, the later
    copy being the newer)."""
    return {key: (segment, value) for segment, key, value in records}


class ExportRun:
    """One export's copy of this process's sessions, served in pages."""

    def __init__(self, run: str, store: MemoryStore, page_bytes: int | None = None) -> None:
        self.run = run
        self.page_bytes = EXPORT_PAGE_BYTES if page_bytes is None else page_bytes
        copied = latest(record for chunk in store.copy_chunks() for record in chunk)
        now = store.clock()
        self._records: list[tuple[str, int, bytes]] = []
        broken = 0
        for key, (segment, value) in copied.items():
            expires_at = expiry_of(segment, value)
            if expires_at is None:
                broken += 1
            elif expires_at > now:
                self._records.append((key, segment, value))
        if broken:
            # Never the keys: they are the visitors' credentials.
            logger.warning(
                "Export: %d stored value(s) were not whole sessions and were left out.", broken
            )
        self.touched = time.monotonic()

    @property
    def total(self) -> int:
        return len(self._records)

    @property
    def idle(self) -> bool:
        return time.monotonic() - self.touched > IDLE_TIMEOUT

    def page(self, offset: int) -> list[ExportedSession]:
        """The sessions from ``offset``: at least one (while any is left), at most
        ``page_bytes`` of keys and base64 payloads."""
        self.touched = time.monotonic()
        page: list[ExportedSession] = []
        used = 0
        records = self._records
        for index in range(max(0, offset), len(records)):  # no slice: a page costs its own size
            key, segment, value = records[index]
            expires_at, payload = session_of(segment, value)
            encoded = base64.b64encode(payload).decode("ascii")
            used += len(encoded) + len(key) + 64
            if page and used > self.page_bytes:
                break
            page.append(ExportedSession(key, encoded, expires_at, segment == AUTHENTICATED))
        return page
