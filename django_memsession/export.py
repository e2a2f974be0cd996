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
import time
from collections.abc import Iterable

from .lru import AUTHENTICATED
from .messages import EXPORT_PAGE_BYTES, ExportedSession
from .store import HEADER, HEADER_SIZE, MemoryStore
from .users import FACTS, FACTS_SIZE

__all__ = ["IDLE_TIMEOUT", "ExportRun", "session_of"]

IDLE_TIMEOUT = 300.0


def session_of(segment: int, value: bytes, version: int = 2) -> tuple[float, bytes]:
    """A stored value's expiry and serialized session. A logged-in session's value carries its
    facts (user, client, times) before the payload; a version 1 snapshot's does not."""
    if segment == AUTHENTICATED and version >= 2:
        expires_at, _, _, _, user_length, client_length = FACTS.unpack_from(value)
        return expires_at, value[FACTS_SIZE + user_length + client_length :]
    return HEADER.unpack_from(value)[0], value[HEADER_SIZE:]


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
        for key, (segment, value) in copied.items():
            if HEADER.unpack_from(value)[0] > now:
                self._records.append((key, segment, value))
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
