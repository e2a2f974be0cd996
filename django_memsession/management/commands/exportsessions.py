"""``manage.py exportsessions REDIS_URL``: copy every live session of the memory engine into Redis,
and keep Redis in step until the restart onto the Redis engine (see README, "Moving to Redis")."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from argparse import RawDescriptionHelpFormatter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_memsession import control, mirror, runtime
from django_memsession.management.fanout import (
    EXIT_NONE_REACHED,
    EXIT_REDIS_FAILED,
    EXIT_SOME_UNREACHABLE,
    Progress,
    none_found,
    seconds,
)
from django_memsession.memory.export import expiry_of, latest, session_of
from django_memsession.memory.lru import AUTHENTICATED
from django_memsession.memory.snapshot.file import SnapshotRefused, open_snapshot
from django_memsession.memory.snapshot.journal import Journal
from django_memsession.messages import ExportedSession, ProcessReport

if TYPE_CHECKING:
    from django_memsession.redis.importer import Importer, Outcome, Write

BATCH = 1000  # sessions written to Redis in one pipelined round trip

HELP = (
    "Copy every live session of every running server process of this project (reached through "
    "the control channel), or of a snapshot file (--from-snapshot), into the Redis server at "
    "REDIS_URL, in the Redis engine's format, with its remaining time to live and its logged-in "
    "state. A copy already in Redis that expires as late or later (newer), or a logout there, "
    "is never overwritten.\n\n"
    "Before it reads their sessions, the command turns mirroring on in every running process: "
    "from then until they restart onto the Redis engine, each of their writes and deletes is "
    "sent to Redis too, so a change or a logout made meanwhile survives the switch. "
    "--stop-mirroring turns it off; --status shows it.\n\n"
    f"Exit status: 0 when every process found was copied; {EXIT_NONE_REACHED} when no running "
    f"process was found (or a bad argument, setting or snapshot); {EXIT_SOME_UNREACHABLE} when "
    "some process could not be reached or refused (it did not answer within --timeout, or the "
    f"control directory was refused); {EXIT_REDIS_FAILED} when Redis could not be reached or "
    "failed part-way (run the command again: it copies nothing twice)."
)


@dataclass
class Row:
    """What was copied from one process (or the snapshot)."""

    source: str
    sessions: int = 0
    logged_in: int = 0
    written: int = 0
    kept_newer: int = 0
    kept_logout: int = 0
    expired: int = 0
    left_out: int = 0  # --from-snapshot: changed or deleted since the snapshot began
    unreadable: int = 0  # --from-snapshot: records that are not whole sessions of ours
    complete: bool = True
    redis_failed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sessions": self.sessions,
            "logged_in": self.logged_in,
            "written": self.written,
            "kept_newer": self.kept_newer,
            "kept_logout": self.kept_logout,
            "expired": self.expired,
            "left_out": self.left_out,
            "unreadable": self.unreadable,
            "complete": self.complete,
        }


TOTALS = (
    "sessions",
    "logged_in",
    "written",
    "kept_newer",
    "kept_logout",
    "expired",
    "left_out",
    "unreadable",
)


class RedisFailed(Exception):
    """Redis stopped answering part-way; the message is safe to show."""


class Command(BaseCommand):
    help = HELP

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "redis_url",
            nargs="?",
            help="The Redis server the Redis engine will use, e.g. redis://127.0.0.1:6379/0 "
            "(MEMSESSION_REDIS_URL after the switch).",
        )
        parser.add_argument(
            "--from-snapshot",
            metavar="PATH",
            help="Copy the sessions of this snapshot file (MEMSESSION_SNAPSHOT_PATH) instead of "
            "the running processes' (when they are stopped). Sessions changed or deleted after "
            "the snapshot began (its journal) are left out.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be copied; write nothing, turn no mirroring on.",
        )
        parser.add_argument(
            "--stop-mirroring",
            action="store_true",
            help="Stop mirroring to Redis in every running process (after the switch, or to "
            "call the move off).",
        )
        parser.add_argument(
            "--status", action="store_true", help="Show each running process's mirroring."
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the results as one JSON object."
        )
        parser.add_argument(
            "--timeout",
            type=seconds,
            default=control.PRUNE_TIMEOUT,
            help="Seconds to wait for the processes, for each request "
            f"(default: {control.PRUNE_TIMEOUT:g}).",
        )

    # -- the entry point ------------------------------------------------------------------------

    def handle(self, *args: Any, **options: Any) -> None:
        if options["stop_mirroring"] or options["status"]:
            return self.mirroring(options)
        url = options["redis_url"]
        if not url:
            raise CommandError("Give the Redis server's URL, e.g. redis://127.0.0.1:6379/0.")
        self.check_url(url)
        importer = self.importer(url)
        try:
            try:
                importer.ping()
            except Exception as exc:
                raise CommandError(
                    f"Redis at {self.shown(url)} cannot be reached: {exc}. Nothing was copied.",
                    returncode=EXIT_REDIS_FAILED,
                ) from None
            if options["from_snapshot"]:
                rows, errors = self.from_snapshot(importer, Path(options["from_snapshot"]), options)
                mirroring = False
            else:
                rows, errors = self.from_processes(importer, url, options)
                mirroring = not options["dry_run"]
        finally:
            importer.close()
        self.summary(url, rows, errors, mirroring, options)
        if any(row.redis_failed for row in rows):
            raise CommandError(
                "Redis failed part-way: the sessions above were copied, the rest were not. "
                "Run the command again (it copies nothing twice).",
                returncode=EXIT_REDIS_FAILED,
            )
        if errors:
            raise CommandError(
                f"{len(errors)} process(es) or places could not be copied.",
                returncode=EXIT_SOME_UNREACHABLE,
            )

    def check_url(self, url: str) -> None:
        """A URL redis-py would refuse (or misread) is a one-line error, before anything is done."""
        from django_memsession.redis.conf import URL_EXAMPLE, url_problem

        problem = url_problem(url)
        if problem is not None:
            raise CommandError(
                f"{self.shown(url)!r} is not a Redis URL: {problem}. Give the Redis server's "
                f"URL, {URL_EXAMPLE}."
            )

    def importer(self, url: str) -> Importer:
        try:
            from django_memsession.redis.importer import importer_for
        except ImportError:
            raise CommandError(
                'redis-py is not installed: pip install "django-memsession[redis]".'
            ) from None
        try:
            return importer_for(url)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None

    @staticmethod
    def shown(url: str) -> str:
        from django_memsession.redis.conf import redacted

        return redacted(url)

    # -- from the running processes ---------------------------------------------------------

    def from_processes(
        self, importer: Importer, url: str, options: dict[str, Any]
    ) -> tuple[list[Row], list[str]]:
        dry_run, timeout = options["dry_run"], options["timeout"]
        if not dry_run:
            # Before any process is asked: a process that starts meanwhile mirrors too.
            try:
                mirror.write_marker(url)
            except mirror.MarkerError as exc:
                raise CommandError(f"Mirroring cannot be turned on: {exc}.") from None
        gathered = runtime.gather("report" if dry_run else "mirror", timeout=timeout)
        errors = list(gathered.errors)
        if gathered.problem:
            errors.append(gathered.problem)
        ready: list[ProcessReport] = []
        for report in gathered.processes:
            if not dry_run and (report.mirror is None or not report.mirror.on):
                errors.append(
                    f"process {report.pid} did not turn mirroring on: "
                    f"{report.refused or 'no answer about it'}"
                )
            else:
                ready.append(report)
        if not gathered.processes and not errors:
            if not dry_run:
                mirror.remove_marker()
            raise CommandError(
                none_found(gathered)
                + " To copy a stopped server's sessions, use --from-snapshot PATH.",
                returncode=EXIT_NONE_REACHED,
            )
        progress = Progress(self.stderr, "sessions")
        # Every process's first page first: the progress bar then knows the whole.
        started = []
        for report in ready:
            run = secrets.token_hex(8)
            row = Row(source=f"pid {report.pid}")
            first = self.page(report.pid, run, 0, options, row, errors)
            if first is not None:
                progress.add_total(first.export_total)
            started.append((report.pid, run, row, first))
        rows = []
        for pid, run, row, first in started:
            rows.append(row)
            page, offset = first, 0
            while page is not None:
                sessions = page.exported
                if not self.copy(importer, sessions, row, dry_run, errors):
                    progress.finish()
                    return rows, errors
                offset += len(sessions)
                progress.advance(len(sessions))
                if not sessions or offset >= page.export_total:
                    break
                page = self.page(pid, run, offset, options, row, errors)
        progress.finish()
        return rows, errors

    def page(
        self,
        pid: int,
        run: str,
        offset: int,
        options: dict[str, Any],
        row: Row,
        errors: list[str],
    ) -> ProcessReport | None:
        """One page of a process's sessions; None (with the error noted) when it cannot say."""
        try:
            report = runtime.ask(
                pid,
                "export",
                fields={"run": run, "offset": offset},
                timeout=options["timeout"],
                dry_run=options["dry_run"],
            )
        except control.ChannelError as exc:
            errors.append(f"process {pid} did not answer: {exc}")
            row.complete = False
            return None
        if report.refused:
            errors.append(f"process {pid} refused: {report.refused}")
            row.complete = False
            return None
        return report

    def copy(
        self,
        importer: Importer,
        sessions: list[ExportedSession],
        row: Row,
        dry_run: bool,
        errors: list[str],
    ) -> bool:
        """Write one page into Redis; False when Redis failed (noted in ``errors``)."""
        from django_memsession.redis.importer import Kind, Write

        try:
            writes = [
                Write(Kind.EXPORT, s.key, base64.b64decode(s.payload, validate=True), s.expires_at)
                for s in sessions
            ]
        except (binascii.Error, ValueError):
            errors.append(f"{row.source}: a malformed page (a bug); its sessions were not copied")
            row.complete = False
            return True
        row.sessions += len(sessions)
        row.logged_in += sum(1 for s in sessions if s.logged_in)
        return dry_run or self.write(importer, writes, row, errors)

    def write(self, importer: Importer, writes: list[Write], row: Row, errors: list[str]) -> bool:
        from django_memsession.redis.exceptions import SessionBackendUnavailable

        for start in range(0, len(writes), BATCH):
            try:
                outcomes = importer.write(writes[start : start + BATCH])
            except SessionBackendUnavailable as exc:
                errors.append(f"Redis failed part-way: {exc}")
                row.complete, row.redis_failed = False, True
                return False
            self.tally(row, outcomes)
        return True

    @staticmethod
    def tally(row: Row, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            name = outcome.value
            setattr(row, name, getattr(row, name) + 1)

    # -- from a snapshot file -----------------------------------------------------------------

    def from_snapshot(
        self, importer: Importer, path: Path, options: dict[str, Any]
    ) -> tuple[list[Row], list[str]]:
        from django_memsession.redis.importer import Kind, Write

        try:
            # Read in batches into one copy per key (a later copy wins), not whole into memory.
            with open_snapshot(path) as snapshot:
                copies = latest(record for batch in snapshot.batches() for record in batch)
                epoch, version = snapshot.epoch, snapshot.version
        except FileNotFoundError:
            raise CommandError(f"No snapshot at {path}.") from None
        except SnapshotRefused as exc:
            raise CommandError(f"The snapshot {path} was refused: {exc}.") from None
        except OSError as exc:
            raise CommandError(f"Cannot read the snapshot {path}: {exc.strerror}.") from None
        journal = Journal(path)
        changed = journal.keys_matching(copies, journal.hashes_since(epoch))
        row = Row(source=f"snapshot {path}")
        row.left_out = len(changed)
        now = time.time()
        writes: list[Write] = []
        for key, (segment, value) in copies.items():
            if key in changed:
                continue
            expires_at = expiry_of(segment, value, version)
            if expires_at is None:
                row.unreadable += 1  # a record that is not a whole session: treated as absent
                continue
            if expires_at <= now:
                row.expired += 1
                continue
            expires_at, payload = session_of(segment, value, version)
            writes.append(Write(Kind.EXPORT, key, payload, expires_at))
            row.logged_in += segment == AUTHENTICATED
        row.sessions = len(writes)
        errors: list[str] = []
        progress = Progress(self.stderr, "sessions")
        progress.add_total(len(writes))
        if not options["dry_run"]:
            for start in range(0, len(writes), BATCH):
                batch = writes[start : start + BATCH]
                if not self.write(importer, batch, row, errors):
                    break
                progress.advance(len(batch))
        progress.finish()
        return [row], errors

    # -- mirroring: status and stop -----------------------------------------------------------

    def mirroring(self, options: dict[str, Any]) -> None:
        stopping = options["stop_mirroring"]
        if stopping:
            mirror.remove_marker()
        gathered = runtime.gather("mirror" if stopping else "report", timeout=options["timeout"])
        errors = list(gathered.errors)
        if gathered.problem:
            errors.append(gathered.problem)
        rows = []
        for report in gathered.processes:
            state = report.mirror
            rows.append(
                {
                    "pid": report.pid,
                    "mirroring": state is not None and state.on,
                    "url": state.url if state else None,
                    "queued": state.queued if state else 0,
                    "mirrored": state.mirrored if state else 0,
                    "failures": state.failures if state else 0,
                    "lost": state.lost if state else 0,
                    "last_error": state.last_error if state else None,
                    "refused": report.refused,
                }
            )
        if options["json"]:
            payload = {"processes": rows, "errors": errors, "marker": mirror_marker_exists()}
            self.stdout.write(json.dumps(payload, indent=2))
        else:
            for row in rows:
                self.stdout.write(self.mirror_line(row))
            state = "on" if mirror_marker_exists() else "off"
            self.stdout.write(f"mirroring for processes started from now on: {state}")
            for error in errors:
                self.stderr.write(self.style.ERROR(error))
        if errors:
            raise CommandError(
                f"{len(errors)} process(es) could not be reached.",
                returncode=EXIT_SOME_UNREACHABLE,
            )
        if not rows and not stopping:
            raise CommandError(none_found(gathered), returncode=EXIT_NONE_REACHED)
        # --stop-mirroring with no memory process left (all restarted onto Redis): done.

    @staticmethod
    def mirror_line(row: dict[str, Any]) -> str:
        if row["refused"]:
            return f"pid {row['pid']}: mirroring off: {row['refused']}"
        if not row["mirroring"]:
            return f"pid {row['pid']}: mirroring off"
        line = (
            f"pid {row['pid']}: mirroring to {row['url']}: {row['mirrored']} writes sent, "
            f"{row['queued']} queued, {row['failures']} failed attempts, {row['lost']} lost"
        )
        if row["last_error"]:
            line += f" (last error: {row['last_error']})"
        return line

    # -- the summary ----------------------------------------------------------------------------

    def summary(
        self,
        url: str,
        rows: list[Row],
        errors: list[str],
        mirroring: bool,
        options: dict[str, Any],
    ) -> None:
        total = {name: sum(getattr(row, name) for row in rows) for name in TOTALS}
        dry_run = options["dry_run"]
        if options["json"]:
            payload = {
                "dry_run": dry_run,
                "redis": self.shown(url),
                "mirroring": mirroring,
                "sources": [row.as_json() for row in rows],
                "total": total,
                "errors": errors,
            }
            self.stdout.write(json.dumps(payload, indent=2))
            return
        for row in rows:
            self.stdout.write(f"{row.source}: {self.counts(row.__dict__, dry_run)}")
        if rows:
            self.stdout.write(
                self.style.SUCCESS(
                    f"total over {len(rows)} source(s): {self.counts(total, dry_run)}"
                )
            )
        if mirroring and not errors:
            self.stdout.write(
                "Mirroring is on: every later write and logout goes to Redis too. Now set "
                "SESSION_ENGINE = 'django_memsession.redis' and MEMSESSION_REDIS_URL, and "
                "restart the servers."
            )
        for error in errors:
            self.stderr.write(self.style.ERROR(error))

    @staticmethod
    def counts(figures: dict[str, Any], dry_run: bool) -> str:
        found = f"{figures['sessions']} sessions ({figures['logged_in']} logged in)"
        if dry_run:
            text = f"would copy {found}"
        else:
            text = (
                f"{found}: {figures['written']} copied to Redis, {figures['kept_newer']} kept "
                f"(a newer copy in Redis), {figures['kept_logout']} kept (logged out in Redis), "
                f"{figures['expired']} expired"
            )
        if figures["left_out"]:
            text += f"; {figures['left_out']} left out (changed or deleted after the snapshot)"
        if figures.get("unreadable"):
            text += f"; {figures['unreadable']} left out (not whole sessions: unreadable records)"
        return text


def mirror_marker_exists() -> bool:
    return mirror.marker_path().exists()
