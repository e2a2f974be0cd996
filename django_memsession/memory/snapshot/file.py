"""The snapshot's files on disk: the signed snapshot, the journals, the claim.

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
- ``<path>.journal-<epoch>``: the sessions written or deleted since snapshot ``<epoch>`` began,
  as 16-byte keyed hashes (never the keys), appended with one ``write()`` each so that a crash
  (``kill -9``) loses none of those that returned.
- ``<path>.lock``: the claim. The process holding an exclusive ``flock`` on it owns the snapshot:
  it restored it, and only it writes it. Its pid and when it claimed are written in it.
- ``<path>.rejected-<time>``: a snapshot that was refused (tampered, truncated, foreign, of a
  future format, not a private regular file), kept for inspection.

The journals and the claim are opened as the snapshot is (never through a symlink, never
waiting on a FIFO, only a regular file of this user's that no one else may read or write); a
journal that is not a regular file is ignored when read.

Nothing here knows the store; :mod:`~django_memsession.memory.snapshot.writer` joins the two.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
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

__all__ = [
    "Claim",
    "FileProblem",
    "Journal",
    "Snapshot",
    "SnapshotData",
    "SnapshotRefused",
    "UnsafeFile",
    "Written",
    "file_problem",
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
JOURNAL_SALT = "django_memsession.snapshot.journal"
MAC_SIZE = 32
HASH_SIZE = 16
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
class FileProblem:
    """Why a file at one of the snapshot's paths is not one this process made, and what to do."""

    reason: str
    remedy: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.remedy}"


class UnsafeFile(OSError):
    """A journal or the claim file that :func:`file_problem` finds fault with."""

    def __init__(self, path: Path, problem: FileProblem) -> None:
        super().__init__(errno.EPERM, str(problem), str(path))
        self.problem = problem


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


# -- the files' safety ---------------------------------------------------------------------------

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _problem(info: os.stat_result, path: Path, *, private: bool = True) -> FileProblem | None:
    """What is wrong with the file ``info`` describes (an ``lstat``, or an ``fstat`` of the file
    opened), or None. The files this process makes are regular files of its own, ``0600``;
    anything else was put there by someone else: a FIFO would hang the open, a device or a
    symlink would read or write elsewhere, and a file others may read or write gives away the
    session keys in it or lets them choose what is restored (``ssh`` refuses a private key
    others can read). ``private=False``: only the kind is checked."""
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        return FileProblem(
            "it is a symlink (the snapshot's files are never opened through one)",
            f"replace {path} with the file itself (a symlinked directory above it is fine)",
        )
    if not stat.S_ISREG(mode):
        kind = next((name for is_kind, name in _KINDS if is_kind(mode)), "a special file")
        return FileProblem(
            f"it is {kind}, not a regular file",
            f"remove {path}; the server writes a regular file there",
        )
    if not private:
        return None
    uid = os.geteuid()
    if info.st_uid != uid:
        return FileProblem(
            f"it belongs to another user (uid {info.st_uid}; the server runs as uid {uid})",
            f"remove {path}, or chown it to the user the server runs as",
        )
    if stat.S_IMODE(mode) & 0o077:
        return FileProblem(
            f"other users may read or write it (mode {stat.S_IMODE(mode):04o})",
            f"chmod 600 {path}",
        )
    return None


def file_problem(path: Path) -> FileProblem | None:
    """What is wrong with the file at ``path`` itself (a symlink is not followed), or None when
    it will do or there is none."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return _problem(info, path)


def _open_checked(path: Path, flags: int, *, private: bool = True) -> int:
    """``path`` opened, once :func:`file_problem` finds nothing wrong with it; ``UnsafeFile``
    otherwise. Never through a symlink (``O_NOFOLLOW``), never waiting for a FIFO's other end
    (``O_NONBLOCK``: no effect on a regular file's reads and writes), and checked again on the
    file opened (``fstat``), so a file swapped in after the first check is refused too."""
    info = None
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(path)
    problem = _problem(info, path, private=private) if info is not None else None
    if problem is None:
        extra = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
        fd = os.open(path, flags | extra, 0o600)
        try:
            problem = _problem(os.fstat(fd), path, private=private)
        except BaseException:
            os.close(fd)
            raise
        if problem is None:
            return fd
        os.close(fd)
    raise UnsafeFile(path, problem)


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
    private regular file of this user's (see :func:`file_problem`), then a bad signature, before
    anything is parsed. ``FileNotFoundError`` when there is none. The file is opened once: the
    check of the signature and the reading of the records are two passes over the same open
    file, so a file swapped in at the path meanwhile is never read.
    """
    try:
        fd = _open_checked(path, os.O_RDONLY)
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
    signers = [_signer(secret) for secret in _secrets()]
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
        fd = _open_checked(self.file(epoch), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
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
        """Every hash journaled in ``epoch`` or later (a torn last record is ignored).

        A journal that is not a regular file (a FIFO, a symlink) is not one of ours: ignored,
        with a WARNING. One that others may read or write is still read: its hashes only ever
        leave sessions out."""
        found: set[bytes] = set()
        for number in self.existing():
            if number < epoch:
                continue
            try:
                fd = _open_checked(self.file(number), os.O_RDONLY, private=False)
            except UnsafeFile as exc:
                logger.warning(
                    "Session snapshot journal %s ignored: %s.", exc.filename, exc.strerror
                )
                continue
            except OSError:
                continue
            with open(fd, "rb") as journal, contextlib.suppress(OSError):
                data = journal.read()
                found.update(
                    data[i : i + HASH_SIZE] for i in range(0, len(data) - HASH_SIZE + 1, HASH_SIZE)
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
        """Whether this process took the claim; ``OSError`` (``UnsafeFile`` for a symlink, a
        FIFO, another user's file or one open to others) when the file cannot be used."""
        fd = _open_checked(self.path, os.O_RDWR | os.O_CREAT)
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
            fd = _open_checked(self.path, os.O_RDONLY)
            with open(fd, "rb") as claim:
                info = json.loads(claim.read(200))
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
