"""The snapshot file: its format, written atomically, read in a stream after its signature.

Next to ``MEMSESSION_SNAPSHOT_PATH`` (``<path>``):

- ``<path>``: the snapshot. A magic line, a format version, a header (JSON: the journal epoch the
  snapshot began, and when), the records in chunks (each: a count, then every record's segment,
  key length and value length, then the keys, then the values: so a chunk is read with a few
  C-level calls, not a Python loop over fields), an end marker and an HMAC-SHA256 of everything
  before it, keyed from ``SECRET_KEY`` (Django's ``salted_hmac`` with
  a salt of its own). The file holds session keys: it is created ``0600``, written to a
  temporary file in the same directory, fsynced, renamed over the old one, and the directory
  fsynced: a crash, a full disk or a permission error leaves the previous snapshot as it was.
  Reading opens it once and refuses anything but a regular file of this user's that no other
  user may read or write (a FIFO, a symlink, a device, a file others could read or replace the
  contents of), then makes two passes over the open file, each in pieces of ``READ_SIZE``: the
  first checks the MAC, with ``SECRET_KEY`` and each of ``SECRET_KEY_FALLBACKS`` at once (a key
  rotation logs nobody out), before anything is parsed; the second reads the records, a batch
  at a time, so a file of any size is read in bounded memory.
- ``<path>.rejected-<time>``: a snapshot that was refused (tampered, truncated, foreign, of a
  future format, not a private regular file), kept for inspection (and made private).

Beside it: the journals (``journal.py``), the claim (``claim.py``), and what makes a file at
any of these paths safe to use (``safety.py``). Nothing here knows the store;
:mod:`~django_memsession.memory.snapshot.writer` joins the two.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import stat
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from django.conf import settings
from django.utils.crypto import salted_hmac

from .safety import UnsafeFile, open_checked

__all__ = [
    "Snapshot",
    "SnapshotData",
    "SnapshotRefused",
    "Written",
    "open_snapshot",
    "read_snapshot",
    "set_aside",
    "write_snapshot",
]

logger = logging.getLogger("django_memsession")

MAGIC = b"django-memsession snapshot\n"
# 2: a logged-in session's value carries its facts (see index.py). Version 1 files are still
# read: their logged-in sessions are brought to version 2 by the snapshotter.
VERSION = 2
READABLE_VERSIONS = (1, 2)
SALT = "django_memsession.snapshot"
MAC_SIZE = 32
END = 0xFF
RECORD = struct.Struct("<BBI")  # segment, key length, value length
LENGTH = struct.Struct("<I")
CHUNK = struct.Struct("<BI")  # a marker (not END), the records in the chunk
CHUNK_MARK = 0x01
MAX_HEADER = 4096
# A restore reads the file in pieces of at most this many bytes (a larger record alone), and the
# records' sizes this many records at a time: its extra memory does not grow with the file.
READ_SIZE = 1 << 18
BATCH_RECORDS = 4096


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


def secret_keys() -> list[str]:
    """``SECRET_KEY``, then each of ``SECRET_KEY_FALLBACKS``: a key rotation logs nobody out."""
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
    # A file of our own, made now: whatever is at the name (a leftover of a process with our
    # pid, a symlink planted there) is removed, and O_EXCL never follows a symlink.
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
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
    """The whole snapshot at ``path`` in memory (a restore reads it in batches instead, with
    :func:`open_snapshot`); the same refusals."""
    with open_snapshot(path) as snapshot:
        records = [record for batch in snapshot.batches() for record in batch]
        return SnapshotData(
            epoch=snapshot.epoch,
            started_at=snapshot.started_at,
            records=records,
            version=snapshot.version,
        )


@contextlib.contextmanager
def open_snapshot(path: Path) -> Iterator[Snapshot]:
    """The snapshot at ``path``, opened and its signature checked, its records not read yet.

    :class:`SnapshotRefused` for anything this project did not write: a file that is not a
    private regular file of this user's (see :func:`~.safety.file_problem`), then a bad
    signature, before anything is parsed. ``FileNotFoundError`` when there is none. The file is
    opened once: the check of the signature and the reading of the records are two passes over
    the same open file, so a file swapped in at the path meanwhile is never read.
    """
    try:
        fd = open_checked(path, os.O_RDONLY)
    except UnsafeFile as exc:
        raise SnapshotRefused(exc.problem.reason) from None
    try:
        yield _verified(fd)
    finally:
        os.close(fd)


def _read_exact(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    while len(data) < length:  # a pipe or a signal may cut a read short; a regular file's end
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            raise SnapshotRefused("the file changed while it was read")
        data += more
    return data


def _verified(fd: int) -> Snapshot:
    """The first pass: the signature over everything before it, read in pieces of
    ``READ_SIZE`` (with ``SECRET_KEY`` and each fallback at once); then the header."""
    size = os.fstat(fd).st_size
    if not size:
        raise SnapshotRefused("the file is empty")
    if size < len(MAGIC) + 1 + LENGTH.size + 1 + MAC_SIZE:
        raise SnapshotRefused("not a snapshot file, or truncated")
    head = _read_exact(fd, 0, len(MAGIC) + 1)
    if not head.startswith(MAGIC):
        raise SnapshotRefused("not a snapshot file, or truncated")
    version = head[len(MAGIC)]
    if version not in READABLE_VERSIONS:
        raise SnapshotRefused(
            f"format version {version}, this version reads {', '.join(map(str, READABLE_VERSIONS))}"
        )
    end = size - MAC_SIZE
    signers = [_signer(secret) for secret in secret_keys()]
    for offset in range(0, end, READ_SIZE):
        piece = _read_exact(fd, offset, min(READ_SIZE, end - offset))
        for signer in signers:
            signer.update(piece)
    mac = _read_exact(fd, end, MAC_SIZE)
    if not any(hmac.compare_digest(signer.digest(), mac) for signer in signers):
        raise SnapshotRefused("bad signature (tampered, truncated, or another SECRET_KEY)")
    try:
        offset = len(MAGIC) + 1
        (header_length,) = LENGTH.unpack(_read_exact(fd, offset, LENGTH.size))
        offset += LENGTH.size
        if header_length > MAX_HEADER or offset + header_length >= end:
            raise ValueError("header")
        header = json.loads(_read_exact(fd, offset, header_length))
        epoch, started_at = int(header["epoch"]), float(header["started_at"])
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        # Signed by us yet unreadable: a bug, never a crash of the process that restores.
        raise SnapshotRefused(f"signed but malformed ({type(exc).__name__})") from None
    return Snapshot(fd, end, offset + header_length, epoch, started_at, version)


class Snapshot:
    """An open snapshot whose signature matched: its header, and its records (:meth:`batches`)."""

    def __init__(
        self, fd: int, end: int, records_at: int, epoch: int, started_at: float, version: int
    ) -> None:
        self._fd = fd
        self._end = end  # where the signed part ends
        self._records_at = records_at
        self.epoch = epoch
        self.started_at = started_at
        self.version = version
        self.too_large = 0  # records whose value was longer than the reader wanted: not read

    def batches(self, largest_value: int | None = None) -> Iterator[list[tuple[int, str, bytes]]]:
        """The second pass: the records in the order they were written, a batch of at most
        ``BATCH_RECORDS`` records and ``READ_SIZE`` bytes at a time (or one larger record), so
        reading never holds more than that beside what the caller keeps. A record whose value
        is longer than ``largest_value`` is skipped unread and counted in ``too_large``.

        A record is what the file says it is (a segment, a key, a value): whether the value is
        one the store can use is the store's to check. :class:`SnapshotRefused` when the
        chunks themselves do not add up (a signed file: a bug).
        """
        try:
            yield from self._batches(largest_value)
        except (ValueError, struct.error) as exc:
            raise SnapshotRefused(f"signed but malformed ({type(exc).__name__})") from None

    def _batches(self, largest_value: int | None) -> Iterator[list[tuple[int, str, bytes]]]:
        fd, end = self._fd, self._end
        offset = self._records_at
        while True:
            if offset >= end:
                raise ValueError("no end marker")
            if _read_exact(fd, offset, 1)[0] == END:
                if offset + 1 != end:
                    raise ValueError("trailing bytes")
                return
            mark, count = CHUNK.unpack(_read_exact(fd, offset, CHUNK.size))
            if mark != CHUNK_MARK:
                raise ValueError("chunk")
            sizes_at = offset + CHUNK.size
            keys_at = sizes_at + count * RECORD.size
            if keys_at > end:
                raise ValueError("chunk")
            # The chunk's keys come before all of its values: where the values begin is the
            # sum of its key lengths, so its sizes are read twice (a few bytes a record).
            key_total = value_total = 0
            for _, key_lengths, value_lengths in self._sizes(sizes_at, count):
                key_total += sum(key_lengths)
                value_total += sum(value_lengths)
            values_at = keys_at + key_total
            offset = values_at + value_total
            if offset > end:
                raise ValueError("chunk")
            for sizes in self._sizes(sizes_at, count):
                yield from self._cut(sizes, keys_at, values_at, largest_value)
                keys_at += sum(sizes[1])
                values_at += sum(sizes[2])

    def _sizes(
        self, at: int, count: int
    ) -> Iterator[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """The chunk's (segments, key lengths, value lengths), ``BATCH_RECORDS`` at a time."""
        for first in range(0, count, BATCH_RECORDS):
            number = min(BATCH_RECORDS, count - first)
            data = _read_exact(self._fd, at + first * RECORD.size, number * RECORD.size)
            yield tuple(zip(*RECORD.iter_unpack(data), strict=True))  # type: ignore[misc]

    def _cut(
        self,
        sizes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
        keys_at: int,
        values_at: int,
        largest_value: int | None,
    ) -> Iterator[list[tuple[int, str, bytes]]]:
        """The records of ``sizes`` (their keys from ``keys_at``, their values from
        ``values_at``) in batches of at most ``READ_SIZE`` bytes, a larger record alone."""
        _, key_lengths, value_lengths = sizes
        first = held = 0
        for index, (key_length, value_length) in enumerate(
            zip(key_lengths, value_lengths, strict=True)
        ):
            too_large = largest_value is not None and value_length > largest_value
            if first < index and (too_large or held + key_length + value_length > READ_SIZE):
                yield self._read(sizes, first, index, keys_at, values_at)
                keys_at += sum(key_lengths[first:index])
                values_at += sum(value_lengths[first:index])
                first, held = index, 0
            if too_large:
                self.too_large += 1
                keys_at += key_length
                values_at += value_length
                first = index + 1
            else:
                held += key_length + value_length
        if first < len(key_lengths):
            yield self._read(sizes, first, len(key_lengths), keys_at, values_at)

    def _read(
        self,
        sizes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
        first: int,
        stop: int,
        keys_at: int,
        values_at: int,
    ) -> list[tuple[int, str, bytes]]:
        segments, key_lengths, value_lengths = (part[first:stop] for part in sizes)
        # A key that is not ASCII is not one of ours: replaced, the store leaves it out.
        keys = _read_exact(self._fd, keys_at, sum(key_lengths)).decode("ascii", "replace")
        values = _read_exact(self._fd, values_at, sum(value_lengths))
        key_ends = list(accumulate(key_lengths))
        value_ends = list(accumulate(value_lengths))
        return list(
            zip(
                segments,
                [keys[e - n : e] for e, n in zip(key_ends, key_lengths, strict=True)],
                [values[e - n : e] for e, n in zip(value_ends, value_lengths, strict=True)],
                strict=True,
            )
        )


def set_aside(path: Path) -> Path | None:
    """Move a refused snapshot out of the way (not deleted: for inspection); its new path."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.rejected-{stamp}-{os.getpid()}")
    try:
        os.replace(path, target)
    except OSError:
        return None
    # It holds session keys: a file refused for being readable by others stays so no longer.
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(target).st_mode):
            os.chmod(target, 0o600)
    return target
