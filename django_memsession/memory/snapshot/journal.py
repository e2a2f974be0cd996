"""The journals beside a snapshot, ``<path>.journal-<epoch>``: the sessions written or deleted
since snapshot ``<epoch>`` began, as 16-byte keyed hashes (never the keys), appended with one
``write()`` each so that a crash (``kill -9``) loses none of those that returned. A restore
leaves out every session journaled since its snapshot began.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from .file import secret_keys
from .safety import UnsafeFile, open_checked

__all__ = ["HASH_SIZE", "Journal", "key_hash"]

logger = logging.getLogger("django_memsession")

JOURNAL_SALT = "django_memsession.snapshot.journal"
HASH_SIZE = 16


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
        fd = open_checked(self.file(epoch), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
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
                fd = open_checked(self.file(number), os.O_RDONLY, private=False)
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
        journal_keys = [_journal_key(secret) for secret in secret_keys()]
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
