"""Who is logged in: the facts of each logged-in session, and the index of each user's sessions.

Facts live in the session's own value, not beside it. A value in the *authenticated* segment of
the store starts with :data:`FACTS` instead of the store's plain header: the same expiry and
journal epoch first (so everything that reads only those reads both kinds alike), then when the
session was created and last used (whole seconds), then the user's id and the client (IP address
and user agent, only with ``MEMSESSION_TRACK_CLIENTS``), then the payload. So a logged-in
session's facts cost its value a few bytes, a snapshot carries them with the value, and an
anonymous session carries nothing.

The index (:class:`UserIndex`) maps each user to their session keys: the key itself while the
user has one session (most users), a ``set`` of keys from the second on. It holds the very key
objects the eviction policy holds (the store re-points it when the policy stores a new one), so a
key costs the index nothing but its slot; the index's own bytes (its table, the user ids, the
sets) are a running total, as the store keeps its own.

Not thread-safe: the store calls it with its lock held. Knows nothing of Django.
"""

from __future__ import annotations

import struct
import sys

from ..logged_in import SessionFacts

__all__ = [
    "FACTS",
    "SessionFacts",
    "UserIndex",
    "facts_value",
    "from_plain",
    "payload_offset",
    "read_facts",
    "user_key",
    "user_of",
    "with_last_used",
]

# expires_at, journal epoch (as the store's HEADER), created, last used (seconds since the epoch),
# the length of the user id, the length of the client text; then the two, then the payload.
FACTS = struct.Struct("<dIIIHH")
FACTS_SIZE = FACTS.size
LAST_USED = struct.Struct("<I")
LAST_USED_AT = 16
LENGTHS = struct.Struct("<HH")
LENGTHS_AT = 20
MAX_FIELD = 0xFFFF


def user_key(user: str) -> int | str:
    """The index's key for a user id as Django stores it (``"42"``): an int for a plain decimal
    (32 bytes instead of a string's 56), else the text itself (a UUID)."""
    if user.isdigit() and user.isascii() and len(user) <= 18 and (user == "0" or user[0] != "0"):
        return int(user)
    return user


def _clip(text: str) -> bytes:
    data = text.encode()
    if len(data) > MAX_FIELD:
        data = data[:MAX_FIELD].decode(errors="ignore").encode()
    return data


def facts_value(
    expires_at: float,
    epoch: int,
    created: int,
    last_used: int,
    user: bytes,
    client: bytes,
    payload: bytes,
) -> bytes:
    """A logged-in session's value (``user`` and ``client`` already encoded, see
    :func:`encode`)."""
    return (
        FACTS.pack(expires_at, epoch, created, last_used, len(user), len(client))
        + user
        + client
        + payload
    )


def encode(text: str | None) -> bytes:
    if not text:
        return b""
    data = text.encode()
    return data if len(data) <= MAX_FIELD else _clip(text)


def from_plain(value: bytes, user: str | None, seconds: int) -> bytes:
    """A logged-in session's value written before facts existed (a version 1 snapshot: the
    plain header, then the payload) with its facts: ``user`` as read from the payload (None:
    unknown, not indexed), created and last used at ``seconds`` (the snapshot's time)."""
    expires_at, epoch = struct.unpack_from("<dI", value)
    return facts_value(expires_at, epoch, seconds, seconds, encode(user), b"", value[12:])


def payload_offset(value: bytes) -> int:
    user_length, client_length = LENGTHS.unpack_from(value, LENGTHS_AT)
    return FACTS_SIZE + user_length + client_length


def user_of(value: bytes) -> bytes:
    """The user id of a facts value, encoded (empty: logged in, but the id was not given)."""
    (user_length,) = struct.unpack_from("<H", value, LENGTHS_AT)
    return value[FACTS_SIZE : FACTS_SIZE + user_length]


def carried(value: bytes) -> tuple[bytes, int, bytes]:
    """(user, created, client) of a facts value: what a save of the same user keeps."""
    _, _, created, _, user_length, client_length = FACTS.unpack_from(value)
    start = FACTS_SIZE + user_length
    return value[FACTS_SIZE:start], created, value[start : start + client_length]


def last_used_of(value: bytes) -> int:
    return LAST_USED.unpack_from(value, LAST_USED_AT)[0]


def with_last_used(value: bytes, seconds: int) -> bytes:
    """The same value, used at ``seconds`` (same length: the store's accounting is unchanged)."""
    copy = bytearray(value)
    LAST_USED.pack_into(copy, LAST_USED_AT, seconds)
    return bytes(copy)


def read_facts(key: str, value: bytes) -> SessionFacts:
    expires_at, _, created, last_used, user_length, client_length = FACTS.unpack_from(value)
    start = FACTS_SIZE + user_length
    client = value[start : start + client_length]
    return SessionFacts(
        key=key,
        user=value[FACTS_SIZE:start].decode(errors="replace"),
        created=created,
        last_used=last_used,
        expires_at=expires_at,
        client=client.decode(errors="replace") if client else None,
    )


def _align(size: int) -> int:
    return (size + 7) // 8 * 8


def _object_size(obj: object) -> int:
    """What ``pympler.asizeof`` charges for a user id (an int or a str) or a set of keys whose
    keys are shared with the store (counted there)."""
    return _align(sys.getsizeof(obj))


class UserIndex:
    """user id -> the key of their one session, or a set of the keys of their sessions."""

    __slots__ = ("bytes", "users")

    def __init__(self) -> None:
        self.users: dict[int | str, str | set[str]] = {}
        self.bytes = sys.getsizeof(self.users)

    def __len__(self) -> int:
        return len(self.users)

    def count(self, user: int | str) -> int:
        held = self.users.get(user)
        if held is None:
            return 0
        return 1 if type(held) is str else len(held)

    def keys(self, user: int | str) -> list[str]:
        held = self.users.get(user)
        if held is None:
            return []
        return [held] if type(held) is str else list(held)

    def add(self, user: int | str, key: str) -> int:
        """Index ``key`` (the object the store holds) under ``user``; their number of sessions."""
        users = self.users
        held = users.get(user)
        if held is None:
            before = sys.getsizeof(users)
            users[user] = key
            self.bytes += sys.getsizeof(users) - before + _object_size(user)
            return 1
        if type(held) is str:
            if held == key:
                users[user] = key
                return 1
            keys = {held, key}
            users[user] = keys
            self.bytes += _object_size(keys)
            return 2
        assert isinstance(held, set)
        before = _object_size(held)
        held.discard(key)  # a key object replaced by an equal one: re-pointed
        held.add(key)
        self.bytes += _object_size(held) - before
        return len(held)

    def remove(self, user: int | str, key: str) -> None:
        users = self.users
        held = users.get(user)
        if held is None:
            return
        if type(held) is str:
            if held == key:
                del users[user]  # a dict never shrinks on delete: its size stays as measured
                self.bytes -= _object_size(user)
            return
        assert isinstance(held, set)
        if key not in held:
            return
        self.bytes -= _object_size(held)
        held.discard(key)
        if len(held) == 1:
            (users[user],) = held  # the object the set held: still the store's
        else:
            self.bytes += _object_size(held)

    def stored(self, user: int | str, key: str) -> str | None:
        """The key object indexed under ``user`` equal to ``key`` (O(their sessions))."""
        held = self.users.get(user)
        if held is None:
            return None
        if type(held) is str:
            return held if held == key else None
        return next((stored for stored in held if stored == key), None)

    def measure(self) -> int:
        """The running total measured afresh (O(n): tests and after a fork)."""
        total = sys.getsizeof(self.users)
        for user, held in self.users.items():
            total += _object_size(user)
            if type(held) is not str:
                total += _object_size(held)
        return total
