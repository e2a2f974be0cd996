"""The memory store's record format: one ``bytes`` value per session, whose first 12 bytes are
its expiry time and its journal epoch (:data:`HEADER`); a logged-in session's value carries its
facts after them (see ``index.py``, ``FACTS``). And the check that a record read back from a
snapshot is one the store wrote, whole (:func:`record_expiry`).

No version number (issue 24, concurrent saves merged): a save compares the payload its request
loaded with the payload stored now (``store._holds``: a length check and a memcmp), which is the
question a version answers ("did anybody save since?") without the ABA case: a payload written
back unchanged merges to the same result as no write at all. So records, snapshot files and the
journal keep their format, and a snapshot restores across a deploy in both directions.
"""

from __future__ import annotations

import math
import struct

from .index import FACTS, FACTS_SIZE
from .lru import AUTHENTICATED, SEGMENT_NAMES

__all__ = ["CARRIED", "HEADER", "HEADER_SIZE", "NOT_JOURNALED", "TIMES", "record_expiry"]

# expires_at (seconds since the epoch, on the store's clock); the journal epoch of the entry's
# last journaled write (NOT_JOURNALED: none).
HEADER = struct.Struct("<dI")
HEADER_SIZE = HEADER.size
NOT_JOURNALED = 0

# Parts of a logged-in session's facts (see index.FACTS): created and the two lengths; expiry,
# epoch, created and last use.
CARRIED = struct.Struct("<I4xHH")
TIMES = struct.Struct("<dIII")


_SEGMENTS = frozenset(range(len(SEGMENT_NAMES)))


def record_expiry(index: int, key: str, value: bytes) -> float | None:
    """The expiry of a record read back from a snapshot, or None when it is not one the store
    wrote, whole: a segment it does not have, a key that is not ASCII (every key it accepts
    is), a value too short for its header, an expiry that is not a time, a logged-in session's
    value too short for its facts. Such a record is treated as absent, never half used."""
    if len(value) < HEADER_SIZE or not key.isascii() or index not in _SEGMENTS:
        return None
    expires_at = HEADER.unpack_from(value)[0]
    if not math.isfinite(expires_at):
        return None
    if index == AUTHENTICATED:
        if len(value) < FACTS_SIZE:
            return None
        *_, user_length, client_length = FACTS.unpack_from(value)
        if FACTS_SIZE + user_length + client_length > len(value):
            return None
    return expires_at
