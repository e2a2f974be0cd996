"""The snapshot's files on disk: the signed snapshot, the journals, the claim.

Next to ``MEMSESSION_SNAPSHOT_PATH`` (``<path>``):

- ``<path>``: the snapshot. A magic line, a format version, a header (JSON: the journal epoch the
  snapshot began, and when), the records in chunks (each: a count, then every record's segment,
  key length and value length, then the keys, then the values: so a chunk is read with a few
  C-level calls, not a Python loop over fields), an end marker and an HMAC-SHA256 of everything
  before it, keyed from ``SECRET_KEY`` (Django's ``salted_hmac`` with
  a salt of its own). Reading checks the MAC over the raw bytes before anything is parsed, with
  ``SECRET_KEY`` and then each of ``SECRET_KEY_FALLBACKS`` (a key rotation logs nobody out). The
  file holds session keys: it is created ``0600``, written to a temporary file in the same
  directory, fsynced, renamed over the old one, and the directory fsynced: a crash, a full disk
  or a permission error leaves the previous snapshot as it was.
- ``<path>.journal-<epoch>``: the sessions written or deleted since snapshot ``<epoch>`` began,
  as 16-byte keyed hashes (never the keys), appended with one ``write()`` each so that a crash
  (``kill -9``) loses none of those that returned.
- ``<path>.lock``: the claim. The process holding an exclusive ``flock`` on it owns the snapshot:
  it restored it, and only it writes it. Its pid and when it claimed are written in it.
- ``<path>.rejected-<time>``: a snapshot that was refused (tampered, truncated, foreign, of a
  future format), kept for inspection.

Nothing here knows the store; :mod:`~django_memsession.snapshotter` joins the two.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from django.conf import settings
from django.utils.crypto import salted_hmac

__all__ = [
    "Claim",
    "Journal",
    "SnapshotData",
    "SnapshotRefused",
    "Written",
    "read_snapshot",
    "set_aside",
    "write_snapshot",
]

MAGIC = b"django-memsession snapshot\n"
# 2: a logged-in session's value carries its facts (see users.py). Version 1 files are still
# read: their logged-in sessions are brought to version 2 by the snapshotter.
VERSION = 2
READABLE_VERSIONS = (1, 2)
SALT = "django_memsession.snapshot"
JOURNAL_SALT = "django_memsession.snapshot.journal"
MAC_SIZE = 32
HASH_SIZE = 16
END = 0xFF
RECORD = struct.Struct("<BBI")  # segment, key length, value length
LENGTH = struct.Struct("<I")
CHUNK = struct.Struct("<BI")  # a marker (not END), the records in the chunk
CHUNK_MARK = 0x01
MAX_HEADER = 4096


class SnapshotRefused(Exception):
    """A snapshot file that is not one this project wrote; the message is safe to log."""


@dataclass(frozen=True)
class Written:
    sessions: int
    bytes: int


@dataclass(frozen=True)
class SnapshotData:
    epoch: int
    started_at: float
    records: list[tuple[int, str, bytes]]
    version: int = VERSION


def _secrets() -> list[str]:
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def _signer(secret: str) -> hmac.HMAC:
    return salted_hmac(SALT, b"", secret=secret, algorithm="sha256")


# -- the snapshot --------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(
    path: Path,
    chunks: Iterable[list[tuple[int, str, bytes]]],
    *,
    epoch: int,
    started_at: float,
) -> Written:
    """Write the records to ``path`` atomically; raises ``OSError`` with the old file intact."""
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    signer = _signer(settings.SECRET_KEY)
    sessions = 0
    size = 0
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:

            def put(data: bytes) -> None:
                nonlocal size
                out.write(data)
                signer.update(data)
                size += len(data)

            header = json.dumps({"epoch": epoch, "started_at": started_at}).encode()
            put(MAGIC + bytes([VERSION]) + LENGTH.pack(len(header)) + header)
            pack = RECORD.pack
            for chunk in chunks:
                keys = [key.encode() for _, key, _ in chunk]
                values = [value for _, _, value in chunk]
                sizes = b"".join(
                    [
                        pack(segment, len(key), len(value))
                        for (segment, _, value), key in zip(chunk, keys, strict=True)
                    ]
                )
                put(CHUNK.pack(CHUNK_MARK, len(chunk)) + sizes + b"".join(keys) + b"".join(values))
                sessions += len(chunk)
            put(bytes([END]))
            out.write(signer.digest())
            size += MAC_SIZE
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _fsync_dir(path.parent)
    return Written(sessions=sessions, bytes=size)


def read_snapshot(path: Path) -> SnapshotData:
    """The snapshot at ``path``; :class:`SnapshotRefused` for anything this project did not
    write, before any of it is parsed. ``FileNotFoundError`` when there is none."""
    data = path.read_bytes()
    if not data:
        raise SnapshotRefused("the file is empty")
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 1 + LENGTH.size + 1 + MAC_SIZE:
        raise SnapshotRefused("not a snapshot file, or truncated")
    version = data[len(MAGIC)]
    if version not in READABLE_VERSIONS:
        raise SnapshotRefused(
            f"format version {version}, this version reads {', '.join(map(str, READABLE_VERSIONS))}"
        )
    body, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
    for secret in _secrets():
        signer = _signer(secret)
        signer.update(body)
        if hmac.compare_digest(signer.digest(), mac):
            break
    else:
        raise SnapshotRefused("bad signature (tampered, truncated, or another SECRET_KEY)")
    try:
        return _parse(memoryview(body), version)
    except (ValueError, KeyError, TypeError, IndexError, struct.error, UnicodeDecodeError) as exc:
        # Signed by us yet unreadable: a bug, never a crash of the process that restores.
        raise SnapshotRefused(f"signed but malformed ({type(exc).__name__})") from None


def _parse(body: memoryview, version: int) -> SnapshotData:
    offset = len(MAGIC) + 1
    (header_length,) = LENGTH.unpack_from(body, offset)
    if header_length > MAX_HEADER:
        raise ValueError("header")
    offset += LENGTH.size
    header = json.loads(bytes(body[offset : offset + header_length]))
    offset += header_length
    epoch, started_at = int(header["epoch"]), float(header["started_at"])
    records: list[tuple[int, str, bytes]] = []
    end = len(body)
    while body[offset] != END:
        mark, count = CHUNK.unpack_from(body, offset)
        if mark != CHUNK_MARK:
            raise ValueError("chunk")
        offset += CHUNK.size
        sizes_end = offset + count * RECORD.size
        segments, key_lengths, value_lengths = (
            zip(*RECORD.iter_unpack(body[offset:sizes_end]), strict=True) if count else ((), (), ())
        )
        keys_end = sizes_end + sum(key_lengths)
        values_end = keys_end + sum(value_lengths)
        if values_end > end or max(segments, default=0) > 2:
            raise ValueError("chunk")
        keys = str(body[sizes_end:keys_end], "ascii")
        values = bytes(body[keys_end:values_end])
        key_ends = list(accumulate(key_lengths))
        value_ends = list(accumulate(value_lengths))
        records.extend(
            zip(
                segments,
                [keys[e - n : e] for e, n in zip(key_ends, key_lengths, strict=True)],
                [values[e - n : e] for e, n in zip(value_ends, value_lengths, strict=True)],
                strict=True,
            )
        )
        offset = values_end
    if offset + 1 != end:
        raise ValueError("trailing bytes")
    return SnapshotData(epoch=epoch, started_at=started_at, records=records, version=version)


def set_aside(path: Path) -> Path | None:
    """Move a refused snapshot out of the way (not deleted: for inspection); its new path."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.rejected-{stamp}-{os.getpid()}")
    try:
        os.replace(path, target)
    except OSError:
        return None
    return target


# -- the journals --------------------------------------------------------------------------------


def _journal_key(secret: str) -> bytes:
    return hashlib.sha256(f"{JOURNAL_SALT}\0{secret}".encode()).digest()


def key_hash(key: str, journal_key: bytes) -> bytes:
    return hashlib.blake2b(key.encode(), digest_size=HASH_SIZE, key=journal_key).digest()


class Journal:
    """Appends the hashes of sessions written or deleted since each snapshot began."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal_key = _journal_key(settings.SECRET_KEY)
        self._fds: dict[int, int] = {}

    def file(self, epoch: int) -> Path:
        return self.path.with_name(f"{self.path.name}.journal-{epoch}")

    def open(self, epoch: int) -> None:
        """Start the journal of ``epoch`` (before the store starts journaling under it)."""
        fd = os.open(self.file(epoch), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fds[epoch] = fd

    def append(self, key: str, epoch: int) -> bool:
        """One ``write()``: in the operating system's hands (so it survives ``kill -9``) before
        the change is made. False when there is no journal for ``epoch`` (this process does
        not own the snapshot, or forked)."""
        fd = self._fds.get(epoch)
        if fd is None:
            return False
        os.write(fd, key_hash(key, self.journal_key))
        return True

    def existing(self) -> list[int]:
        prefix = f"{self.path.name}.journal-"
        epochs = []
        with contextlib.suppress(OSError):
            for name in os.listdir(self.path.parent):
                if name.startswith(prefix) and name[len(prefix) :].isdigit():
                    epochs.append(int(name[len(prefix) :]))
        return sorted(epochs)

    def hashes_since(self, epoch: int) -> set[bytes]:
        """Every hash journaled in ``epoch`` or later (a torn last record is ignored)."""
        found: set[bytes] = set()
        for number in self.existing():
            if number >= epoch:
                with contextlib.suppress(OSError):
                    data = self.file(number).read_bytes()
                    found.update(
                        data[i : i + HASH_SIZE]
                        for i in range(0, len(data) - HASH_SIZE + 1, HASH_SIZE)
                    )
        return found

    def keys_matching(self, keys: Iterable[str], hashes: set[bytes]) -> set[str]:
        """Which of ``keys`` were journaled, with this key or any fallback key's hash."""
        if not hashes:
            return set()
        journal_keys = [_journal_key(secret) for secret in _secrets()]
        return {key for key in keys if any(key_hash(key, jk) in hashes for jk in journal_keys)}

    def remove_before(self, epoch: int) -> None:
        """Drop journals older than ``epoch`` (a snapshot that began at ``epoch`` is on disk)."""
        for number in self.existing():
            if number < epoch:
                fd = self._fds.pop(number, None)
                if fd is not None:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    self.file(number).unlink()

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


# -- the claim --------------------------------------------------------------------------------


class Claim:
    """An exclusive ``flock`` on ``<path>.lock``: the process holding it owns the snapshot."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(f"{path.name}.lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_take(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "claimed_at": time.time()}).encode())
        self._fd = fd
        return True

    def holder(self) -> tuple[int, float] | None:
        """(pid, when it claimed) of the process holding the claim, as it wrote them."""
        try:
            info = json.loads(self.path.read_bytes()[:200])
            return int(info["pid"]), float(info["claimed_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def release(self) -> None:
        """Close our descriptor: the flock goes with the last one (a forked child's copy
        closed leaves the parent's claim as it was)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
