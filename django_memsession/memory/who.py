"""Who is logged in on the memory engine: a user's sessions in this process's store, as the
control channel answers for them (typed records with opaque ids,
:func:`~django_memsession.logged_in.session_id`, never a key) and their ending; and
:class:`EveryProcess`, the engine's user index (see ``engines.Index``), which asks every process.

Knows the store, the messages and the control channel; nothing of requests, and not the
services (they hand :class:`EveryProcess` what it uses).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from .. import control
from ..logged_in import session_id, user_session
from ..messages import Gathered, UserSession
from .store import MemoryStore

__all__ = ["EveryProcess", "end_local", "local_sessions"]

logger = logging.getLogger("django_memsession")


def local_sessions(store: MemoryStore, user: str) -> list[UserSession]:
    """The user's live sessions in this store, most recently used first."""
    pid = os.getpid()
    return [user_session(row, pid) for row in store.user_sessions(user)]


def end_local(
    store: MemoryStore, user: str, *, session_id_: str | None = None, keep: str | None = None
) -> int:
    """End the user's sessions here: only the one with id ``session_id_`` if given (a session
    of another user matches nothing), else all but the one with id ``keep``. How many ended."""
    keys = [
        row.key
        for row in store.user_sessions(user)
        if (session_id(row.key) == session_id_ if session_id_ is not None else True)
        and (keep is None or session_id(row.key) != keep)
    ]
    return store.delete_many(keys) if keys else 0


def _log_errors(gathered: Gathered, what: str) -> None:
    for error in gathered.errors:
        logger.warning("%s: %s", what, error)
    if gathered.problem:
        logger.warning("%s: %s", what, gathered.problem)


class EveryProcess:
    """The memory engine's user index: each process holds its own sessions; ask them all
    through the control channel, all at once, within ``control.REPORT_TIMEOUT`` however many
    hang (this one directly, through ``local_handler``; only this one where the channel is off).
    A process that does not answer is logged and left out."""

    sender = MemoryStore

    def __init__(
        self,
        local_handler: Callable[[], control.Handler | None],
        peek_store: Callable[[], MemoryStore | None],
    ) -> None:
        self.local_handler = local_handler
        self.peek_store = peek_store

    def _gather(self, command: str, fields: control.Fields, *, local: bool = True) -> Gathered:
        return control.fan_out(
            command,
            timeout=control.REPORT_TIMEOUT,
            local=self.local_handler() if local else None,
            fields=fields,
        )

    def sessions(self, uid: str) -> list[UserSession]:
        gathered = self._gather("sessions", {"user": uid})
        _log_errors(gathered, "user_sessions")
        found: list[UserSession] = []
        for report in gathered.processes:
            found += report.sessions
            offset = len(report.sessions)
            while offset < report.sessions_total:  # a process with more: the next pages
                try:
                    page = control.ask(
                        report.pid,
                        "sessions",
                        fields={"user": uid, "offset": offset},
                        timeout=control.REPORT_TIMEOUT,
                        local=self.local_handler(),
                    )
                except control.ChannelError as exc:
                    logger.warning("user_sessions: process %d: %s", report.pid, exc)
                    break
                if not page.sessions:
                    break
                found += page.sessions
                offset += len(page.sessions)
        return found

    def end(self, uid: str, *, session_id_: str | None = None, keep: str | None = None) -> int:
        fields: control.Fields = {"user": uid}
        if session_id_ is not None:
            fields["session_id"] = session_id_
        else:
            fields["keep"] = keep
        gathered = self._gather("end", fields)
        _log_errors(gathered, "end_user_sessions")
        return sum(report.ended for report in gathered.processes)

    def end_in_background(self, uid: str, keep: str | None, done: Any) -> threading.Thread | None:
        """This process's sessions end now; the other processes are asked on a thread."""
        store = self.peek_store()
        here = end_local(store, uid, keep=keep) if store is not None else 0

        def others() -> None:
            gathered = self._gather("end", {"user": uid, "keep": keep}, local=False)
            _log_errors(gathered, "end_user_sessions")
            done(here + sum(report.ended for report in gathered.processes))

        thread = threading.Thread(target=others, name="django_memsession-end", daemon=True)
        thread.start()
        return thread
