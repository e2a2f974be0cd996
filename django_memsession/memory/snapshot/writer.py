"""Sessions survive restarts: the snapshot writer, handed its store and its path.

- **Restore**, on the first use of the store, before the process serves a session: claim the
  snapshot (:class:`~django_memsession.memory.snapshot.claim.Claim`), read it, leave out every
  session journaled since it began (written or deleted after its copy may have been taken: never a
  rolled-back version, never an undone logout), put the rest back (:meth:`MemoryStore.restore`). If
  another process holds the claim and claimed it before this process started (the old worker of a
  graceful reload, finishing its requests and about to write its final snapshot), wait for it, up to
  ``HANDOFF_TIMEOUT``; if it claimed after (a sibling worker), start empty: each session lives in
  one process only.
- **Write**: at shutdown, every ``MEMSESSION_SNAPSHOT_INTERVAL`` seconds (a thread), and on
  demand. A write starts a new journal epoch, copies the store in chunks while requests go on,
  writes the file outside the store's lock, and then drops the journals the new file makes
  obsolete.
- Only the process holding the claim writes; a process that forks (gunicorn's master) gives its
  claim up and never writes.

A refused file (tampered, truncated, foreign, future format; not a regular file, a symlink,
another user's, open to other users) is logged once at WARNING with the word "snapshot", set
aside for inspection, and the process starts empty. A record in it that the store cannot use is
left out, counted in one WARNING (never with its key). A write that fails
(full disk, permissions) is logged and the previous snapshot stays; the process goes on.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ...messages import RestoreReport, SnapshotReport, SnapshotState
from ..index import from_plain
from ..lru import AUTHENTICATED
from ..store import HEADER_SIZE, MemoryStore
from .claim import Claim
from .file import SnapshotRefused, open_snapshot, set_aside, write_snapshot
from .journal import Journal

__all__ = ["HANDOFF_TIMEOUT", "NotOwner", "Snapshotter"]

logger = logging.getLogger("django_memsession")

# Seconds a new process waits for the process it replaces to write its final snapshot. An old
# gunicorn worker told to stop finishes its requests and exits within a second or two; a sibling
# worker that claimed the file before this one started (a recycled worker under --max-requests
# with several workers) never lets go, and this is what its first request waits.
HANDOFF_TIMEOUT = 10.0
HANDOFF_POLL = 0.05
# After the handoff wait, how long (and how often) a thread keeps trying to claim the snapshot.
LATE_CLAIM_WINDOW = 600.0
LATE_CLAIM_POLL = 0.5
LATE = object()  # _take_claim: the predecessor still holds it


class NotOwner(Exception):
    """This process does not own the snapshot file (another process claimed it)."""


# When this process started serving this code: when the package was imported, or when the
# process was forked from one that had imported it (gunicorn --preload). Exact to the
# millisecond, where /proc's start time is only as exact as the boot time's whole seconds.
_started_at = time.time()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a snapshot is read and restored: a million
    records are millions of new tuples and strings, and each collection would walk them all
    again (a restore of 1M sessions took 20 s with it, a few without)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _note_fork() -> None:
    global _started_at
    _started_at = time.time()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_note_fork)


class Snapshotter:
    """One process's snapshot: its claim, its journals, its writes and their records."""

    def __init__(self, store: MemoryStore, path: Path) -> None:
        self.store = store
        self.path = path
        self.claim = Claim(path)
        self.journal = Journal(path)
        self._lock = threading.Lock()  # one write at a time
        self._state_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._interval = 0.0
        self._wanted_interval = 0.0
        self._closing = threading.Event()  # shutdown, abandon, fork: no late claim any more
        self.last: SnapshotReport | None = None
        self.restored: RestoreReport | None = None
        self.failures = 0
        self.holder: int | None = None  # the pid that owns the file, when not this process
        # The user id in a session's payload (version 1 files only; the payload is the
        # engine's serialization, which this module does not know).
        self.user_of_payload: Callable[[bytes], str | None] | None = None

    # -- restore ---------------------------------------------------------------------------------

    def restore(self) -> RestoreReport | None:
        """Claim the snapshot and put its sessions back; None when another process owns it.

        If the process this one replaces still holds it after ``HANDOFF_TIMEOUT`` (a request
        running longer than that), this process starts serving empty and a thread keeps
        trying, for ``LATE_CLAIM_WINDOW``: when the old process has written its final snapshot
        and gone, its sessions are put back beside the ones made meanwhile.
        """
        claimed = self._take_claim()
        if claimed is LATE:
            threading.Thread(
                target=self._claim_late, name="django_memsession-snapshot-claim", daemon=True
            ).start()
            return None
        if not claimed:
            return None
        return self._restore_claimed()

    def _claim_late(self) -> None:
        deadline = time.monotonic() + LATE_CLAIM_WINDOW
        while time.monotonic() < deadline and not self._closing.is_set():
            time.sleep(LATE_CLAIM_POLL)
            try:
                if not self.claim.try_take():
                    continue
            except OSError:
                return
            self.holder = None
            try:
                self._restore_claimed()
                self.start(self._wanted_interval)
            except Exception:
                logger.exception("Session snapshot: restoring after a late claim failed.")
            return

    def _restore_claimed(self) -> RestoreReport | None:
        self._remove_stale_temporaries()
        epoch = max([0, *self.journal.existing()])
        started = time.perf_counter()
        with _gc_paused():
            snapshot_epoch, report = self._read_and_restore(started)
        # Journal from now on under a new epoch; the old journals stay until a newer snapshot.
        self._begin_epoch(max(epoch, snapshot_epoch) + 1)
        with self._state_lock:
            self.restored = report
        return report

    def _read_and_restore(self, started: float) -> tuple[int, RestoreReport | None]:
        """The snapshot's epoch (0: none read) and what its restore put back.

        Read in batches straight into :meth:`MemoryStore.restore`, which keeps what fits as it
        goes: a file larger than the budget never has to fit in memory. A file refused midway
        (signed, yet its chunks do not add up) leaves the store as it was."""
        try:
            with open_snapshot(self.path) as snapshot:
                journaled = 0
                hashes = self.journal.hashes_since(snapshot.epoch)

                def records() -> Iterator[tuple[int, str, bytes]]:
                    nonlocal journaled
                    for batch in snapshot.batches(self.store.limits.max_session_bytes):
                        if hashes:
                            changed = self.journal.keys_matching((k for _, k, _ in batch), hashes)
                            journaled += len(changed)
                            batch = [record for record in batch if record[1] not in changed]
                        if snapshot.version == 1:
                            batch = self._upgrade(batch, int(snapshot.started_at))
                        yield from batch

                result = self.store.restore(records())
                epoch, started_at, too_large = (
                    snapshot.epoch,
                    snapshot.started_at,
                    snapshot.too_large,
                )
        except FileNotFoundError:
            return 0, None
        except SnapshotRefused as exc:
            aside = set_aside(self.path)
            logger.warning(
                "Session snapshot %s refused: %s. Starting with an empty store; the file was "
                "moved to %s for inspection.",
                self.path,
                exc,
                aside or "(could not be moved)",
            )
            return 0, None
        except OSError as exc:
            logger.warning(
                "Session snapshot %s could not be read (%s); starting with an empty store.",
                self.path,
                exc.strerror,
            )
            return 0, None
        left_out = result.left_out + too_large
        if result.unreadable:
            # Once, with a count: never a key (keys are credentials).
            logger.warning(
                "Session snapshot %s: %d sessions could not be unpacked and were left out.",
                self.path,
                result.unreadable,
            )
        report = RestoreReport(
            at=self.store.clock(),
            sessions=result.sessions,
            expired=result.expired,
            journaled=journaled,
            left_out=left_out,
            duration=time.perf_counter() - started,
            snapshot_started_at=started_at,
        )
        logger.info(
            "Session snapshot restored: %d sessions (%d expired, %d changed after it began, "
            "%d over the budget left out).",
            result.sessions,
            result.expired,
            journaled,
            left_out,
        )
        return epoch, report

    def _upgrade(
        self, records: list[tuple[int, str, bytes]], seconds: int
    ) -> list[tuple[int, str, bytes]]:
        """Version 1 records: logged-in sessions get their facts, the user read from the
        payload by ``user_of_payload`` (the services hand the session codec's). A value too
        short for the plain header is left as it is: the store leaves it out."""
        reader = self.user_of_payload
        upgraded = []
        for segment, key, value in records:
            if segment == AUTHENTICATED and len(value) >= HEADER_SIZE:
                user = reader(value[HEADER_SIZE:]) if reader is not None else None
                value = from_plain(value, user, seconds)
            upgraded.append((segment, key, value))
        return upgraded

    def _take_claim(self) -> bool | object:
        """True: claimed. False: a sibling holds it for good. ``LATE``: the process this one
        replaces still held it when the wait ran out."""
        try:
            if self.claim.try_take():
                return True
        except OSError as exc:
            logger.warning(
                "Session snapshots off: cannot use %s (%s).", self.claim.path, exc.strerror
            )
            return False
        holder = self.claim.holder()
        # Claimed before this process started: the process this one replaces (a graceful
        # reload), about to write its final snapshot. Claimed after: a sibling, for good.
        predecessor = holder is not None and holder[1] < _started_at
        if predecessor:
            deadline = time.monotonic() + HANDOFF_TIMEOUT
            while time.monotonic() < deadline:
                time.sleep(HANDOFF_POLL)
                if self.claim.try_take():
                    return True
                current = self.claim.holder()
                if current is not None and current[1] >= _started_at:
                    holder, predecessor = current, False  # a sibling took it meanwhile
                    break
        self.holder = holder[0] if holder else None
        logger.warning(
            "Session snapshot %s belongs to process %s%s: this process starts with an empty "
            "store%s.",
            self.path,
            self.holder if self.holder is not None else "?",
            f" (still there after {HANDOFF_TIMEOUT:g} s)" if predecessor else "",
            "; its sessions are put back when that process has gone"
            if predecessor
            else " and writes no snapshot (sessions are split between processes)",
        )
        return LATE if predecessor else False

    def _remove_stale_temporaries(self) -> None:
        """Temporary files left by a writer that died mid-write hold session keys: remove them
        (only the owner writes, so none of them is being written now)."""
        for leftover in self.path.parent.glob(f"{self.path.name}.tmp-*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _begin_epoch(self, epoch: int) -> None:
        self.journal.open(epoch)
        self.store.begin_epoch(epoch)

    # -- write -----------------------------------------------------------------------------------

    def write(self, reason: str = "on demand") -> SnapshotReport:
        """Write the snapshot now; raises :class:`NotOwner`, or ``OSError`` (logged, and the
        previous snapshot intact)."""
        if not self.claim.held:
            raise NotOwner(f"the snapshot belongs to process {self.holder}")
        with self._lock:
            started_at = self.store.clock()
            started = time.perf_counter()
            epoch = self.store.epoch + 1
            self._begin_epoch(epoch)
            try:
                with _gc_paused():  # the copy is a million short-lived tuples
                    written = write_snapshot(
                        self.path, self.store.copy_chunks(), epoch=epoch, started_at=started_at
                    )
            except OSError as exc:
                with self._state_lock:
                    self.failures += 1
                logger.error(
                    "Session snapshot not written to %s (%s); the previous one is kept.",
                    self.path,
                    exc.strerror or exc,
                )
                raise
            self.journal.remove_before(epoch)
            report = SnapshotReport(
                started_at=started_at,
                duration=time.perf_counter() - started,
                sessions=written.sessions,
                bytes=written.bytes,
                reason=reason,
            )
            with self._state_lock:
                self.last = report
        logger.debug("Session snapshot written (%s): %d sessions.", reason, written.sessions)
        return report

    def journal_write(self, key: str, epoch: int) -> bool:
        """The store's ``on_journal`` callback: whether the change is journaled."""
        try:
            return self.journal.append(key, epoch)
        except OSError as exc:
            logger.error(
                "Session snapshot journal not written (%s): after a crash, this session may "
                "come back as it was at the last snapshot.",
                exc.strerror,
            )
            return False

    # -- the thread ------------------------------------------------------------------------------

    def _loop(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                self.write("periodic")
            except Exception:
                logger.exception("Session snapshot: a periodic write failed; the next one runs.")

    def start(self, interval: float) -> None:
        """Write every ``interval`` seconds on a thread (0: only at shutdown and on demand)."""
        self._wanted_interval = interval
        self.stop_thread()
        if interval <= 0 or not self.claim.held:
            return
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(
            target=self._loop,
            args=(self._stop, interval),
            name="django_memsession-snapshot",
            daemon=True,
        )
        self._thread.start()

    def stop_thread(self, timeout: float = 5.0) -> None:
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread() and timeout:
            thread.join(timeout)

    # -- process events ------------------------------------------------------------------------

    def shutdown(self) -> None:
        """The final snapshot, then the claim goes: the next process restores it."""
        self._closing.set()
        self.stop_thread()
        if self.claim.held:
            with contextlib.suppress(Exception):
                self.write("shutdown")
        self.journal.close()
        self.claim.release()

    def abandon(self) -> None:
        """This process forked (it is a master, not a server): give the claim up, write
        nothing. Its children inherited its sessions; they drop them (see ``forget``)."""
        self._closing.set()
        self.stop_thread(timeout=0)
        self.journal.close()
        self.claim.release()

    def forget(self) -> None:
        """In a forked child: the claim and the journals are the parent's. Closing our copies
        of their descriptors leaves the parent's as they are."""
        self._closing.set()
        self._thread = None
        self.journal.close()
        self.claim.release()

    def state(self) -> SnapshotState:
        with self._state_lock:
            return SnapshotState(
                path=str(self.path),
                owner=self.claim.held,
                holder=self.holder,
                interval=self._interval if self._thread is not None else None,
                last=self.last,
                restored=self.restored,
                failures=self.failures,
            )
