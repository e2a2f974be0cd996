"""The Redis engine's record format: what a session key holds.

One of:

* a session record: a kind byte + its expiry (15 digits, ms since the epoch on the web server's
  clock) + the serialized session. ``b"S"`` (settled): its TTL is the rest of the session's age.
  ``b"P"`` (on probation): a new anonymous session, stored with the shorter probation TTL until
  it comes back or logs in. The kind is in the value, not guessed from the TTL, so a load of a
  settled session (nearly every load) is one plain ``GET``;
* a tombstone, ``b"T"``, written by a delete (logout, ``flush()``, ``cycle_key()``), so that a
  concurrent save can never bring the session back.

Anything else (a key of another Redis type, a string in no format of ours) is no session
(:func:`foreign`). The Lua scripts read the same format (``lua/header_of.lua``).
"""

from __future__ import annotations

__all__ = [
    "HEADER_SIZE",
    "PROBATION",
    "RECORD_KINDS",
    "SESSION",
    "TOMBSTONE",
    "Loaded",
    "foreign",
    "pack",
    "unpack",
]

SESSION = b"S"  # a settled session: its TTL is the rest of its age
PROBATION = b"P"  # a new anonymous session, on its probation TTL until it comes back
TOMBSTONE = b"T"
RECORD_KINDS = (SESSION, PROBATION)
PROBATION_BYTE = PROBATION[0]
SESSION_BYTE = SESSION[0]
EXPIRY_DIGITS = 15  # ms since the epoch: enough until the year 33658
HEADER_SIZE = 1 + EXPIRY_DIGITS


class Loaded:
    """A live session as loaded: its serialized data and its expiry."""

    __slots__ = ("expires_at", "payload")

    def __init__(self, payload: bytes, expires_at: float) -> None:
        self.payload = payload
        self.expires_at = expires_at  # seconds since the epoch, on the store's clock


def pack(payload: bytes, expires_at: float, settled: bool = True) -> bytes:
    """A session record: its kind (settled, or on probation), its expiry, its data."""
    return b"%c%0*d" % (83 if settled else 80, EXPIRY_DIGITS, int(expires_at * 1000)) + payload


def unpack(record: bytes | None, now: float) -> Loaded | None:
    """A live session from a stored value; None for nothing, a tombstone, an expired session or
    a value that is not ours (see :func:`foreign`)."""
    if not record or record[:1] not in RECORD_KINDS or len(record) < HEADER_SIZE:
        return None
    expiry = record[1:HEADER_SIZE]
    if not expiry.isdigit():  # ASCII digits only: int() would also take " 1", "+1" or "1_0"
        return None
    expires_at = int(expiry) / 1000
    if expires_at <= now:
        return None
    return Loaded(record[HEADER_SIZE:], expires_at)


def foreign(value: bytes) -> bool:
    """Whether a string under a session key is none of ours: neither a tombstone nor a record
    (its kind, then its expiry in 15 ASCII digits). Every release wrote only these: the first
    one ``S`` records and tombstones, ``P`` records since. Scripts read it as
    ``lua/header_of.lua`` does."""
    return value != TOMBSTONE and not (
        value[:1] in RECORD_KINDS and len(value) >= HEADER_SIZE and value[1:HEADER_SIZE].isdigit()
    )
