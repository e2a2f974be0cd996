"""System checks: a bad ``MEMSESSION_*`` setting is an error at startup saying what to write (the
problems come from ``conf``, which raises the same text as ``ImproperlyConfigured`` where checks
never run); warnings about where the memory engine would not work as users expect. The Redis
engine's checks are in ``redis/checks.py``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from django.core.checks import CheckMessage, Error, Warning

from . import conf, control, engines
from .conf import Problem
from .memory.snapshot.claim import Claim
from .memory.snapshot.safety import file_problem


def errors(found: list[Problem]) -> list[CheckMessage]:
    """The settings' problems as system-check errors: the text ``ImproperlyConfigured`` gives."""
    return [
        Error(problem.msg, hint=problem.hint, id=problem.id, obj="settings") for problem in found
    ]


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The ``MEMSESSION_*`` settings (the memory engine's and those both engines read): run for
    either engine, as both read the shared ones."""
    return errors(conf.problems())


def _workers_from_environment() -> tuple[int, str] | None:
    """How many worker processes the environment asks for, and where it says so."""
    concurrency = os.environ.get("WEB_CONCURRENCY", "").strip()
    if concurrency.isdigit() and int(concurrency) > 1:
        return int(concurrency), f"WEB_CONCURRENCY={concurrency}"
    args = os.environ.get("GUNICORN_CMD_ARGS", "")
    match = re.search(r"(?:--workers[=\s]+|-w\s*)(\d+)", args)
    if match and int(match.group(1)) > 1:
        return int(match.group(1)), f"GUNICORN_CMD_ARGS={args!r}"
    return None


def check_deployment(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Warnings about where this engine would not work as users expect."""
    if engines.configured() != "memory":
        return []
    found: list[CheckMessage] = []
    workers = _workers_from_environment()
    if workers is not None:
        count, source = workers
        found.append(
            Warning(
                f"{source} asks for {count} worker processes, but django_memsession keeps "
                "sessions in the memory of one process: users whose requests reach another "
                "worker look logged out.",
                hint="Run one worker with threads (gunicorn --workers 1 --threads 8), or use a "
                "shared session engine (database or cache) for several processes.",
                id="memsession.W001",
            )
        )
    if conf.conf.CONTROL is True and not control.available():
        found.append(
            Warning(
                "This platform has no Unix sockets: the control channel is off, so "
                "prunesessions, clearsessions and the admin page reach only their own process.",
                hint="Set MEMSESSION_CONTROL = False to silence this warning; the pruner "
                "thread still removes expired sessions.",
                id="memsession.W002",
            )
        )
    found += _snapshot_file_warnings()
    return found


def _snapshot_file_warnings() -> list[CheckMessage]:
    """The snapshot and its lock file as a serving process would find them: what it would
    refuse (see :func:`~django_memsession.memory.snapshot.safety.file_problem`)."""
    setting = conf.conf.SNAPSHOT_PATH
    if not (isinstance(setting, (str, os.PathLike)) and os.path.isabs(setting)):
        return []  # none, or E010
    path = Path(setting)
    found: list[CheckMessage] = []
    for file, consequence in (
        (path, "the server will set it aside and start with an empty store"),
        (Claim(path).path, "the server will take no snapshots"),
    ):
        try:
            problem = file_problem(file)
        except OSError:
            continue  # an unreadable directory: E011
        if problem is not None:
            found.append(
                Warning(
                    f"{file} will not be used: {problem.reason}; {consequence}.",
                    hint=f"To fix it: {problem.remedy}. The snapshot holds session keys "
                    "(credentials): it and the files beside it are used only as regular "
                    "files of the server's user that no other user may read or write, as ssh "
                    "refuses a private key others can read.",
                    id="memsession.W003",
                )
            )
    return found
