"""Exceptions a user of the engine can meet."""

from django.core.exceptions import BadRequest

from .sizing import format_size


class SessionTooLarge(BadRequest):
    """A session is larger than ``MEMSESSION_MAX_SESSION_SIZE``: it is refused, not stored.

    A subclass of Django's ``BadRequest``, so the request ends in a logged 400 rather than a 500.
    The previous version of the session, and every other session, stay as they were.
    """

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"Session of {format_size(size)} ({size} bytes) is larger than "
            f"MEMSESSION_MAX_SESSION_SIZE ({format_size(limit)}, {limit} bytes); it was not saved. "
            "Keep large data out of the session, or raise MEMSESSION_MAX_SESSION_SIZE."
        )


class SnapshotsOff(Exception):
    """Asked for a snapshot where there is none to write: ``MEMSESSION_SNAPSHOT_PATH`` is not set,
    this process serves no requests, or the engine keeps no snapshots (Redis)."""
