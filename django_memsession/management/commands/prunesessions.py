"""``manage.py prunesessions``: prune expired sessions in every running server of this project;
on the Redis engine, clean the user index of sessions that are gone."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from django_memsession import engines, runtime
from django_memsession.management.fanout import (
    EXIT_NONE_REACHED,
    EXIT_STATUS_HELP,
    FanOutCommand,
    size,
)
from django_memsession.messages import Gathered, ProcessReport
from django_memsession.redis.exceptions import SessionBackendUnavailable


class Command(FanOutCommand):
    command = "prune"
    totals = ("removed", "bytes_freed", "entries", "bytes")
    help = (
        "Remove expired sessions from the memory of every running server process of this "
        "project (reached through the control channel), and bring over-full stores down to "
        "MEMSESSION_LOW_WATER.\n\n"
        "On the Redis engine, Redis expires sessions itself: the command removes from the user "
        "index (one small hash per logged-in user) the sessions that are gone, scanning it in "
        "bounded batches; it exits 1 when Redis cannot be reached.\n\n"
        + EXIT_STATUS_HELP.format(verb="was pruned")
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be removed without removing anything.",
        )
        super().add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        engine = engines.current()
        if not engine.shared:
            return super().handle(*args, **options)  # each process prunes its own: ask them
        # Sessions every process shares (Redis): one pass over the shared user index.
        try:
            result = engine.prune_shared(dry_run=options["dry_run"])
        except SessionBackendUnavailable as exc:
            raise CommandError(
                f"Redis could not be reached: {exc.reason}", returncode=EXIT_NONE_REACHED
            ) from None
        if options["json"]:
            payload = {
                "engine": engine.name,
                "dry_run": result.dry_run,
                "users": result.users,
                "removed": result.removed,
                "sessions": result.sessions,
                "errors": [],
            }
            self.stdout.write(json.dumps(payload, indent=2))
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"{engine.name}: {self._verb(options)} {result.removed} ended or expired "
                f"session(s) from the index of {result.users} user(s); {result.sessions} "
                "logged-in session(s) indexed"
            )
        )

    def gather(self, options: dict[str, Any]) -> Gathered:
        return runtime.gather("prune", dry_run=options["dry_run"], timeout=options["timeout"])

    def extra_json(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"dry_run": options["dry_run"]}

    def row(self, report: ProcessReport, options: dict[str, Any]) -> dict[str, Any]:
        result = report.result
        if result is None:
            # A process on the Redis engine says why it prunes nothing of its own.
            why = report.refused or "it answered without a prune result"
            raise CommandError(f"process {report.pid} did not prune: {why}")
        assert report.stats is not None  # a process that pruned holds a store
        entries, bytes_left = report.stats.entries, report.stats.bytes
        if result.dry_run:
            # Nothing was removed: show what would be left.
            entries, bytes_left = entries - result.removed, bytes_left - result.bytes_freed
        return {
            "pid": report.pid,
            "removed": result.removed,
            "bytes_freed": result.bytes_freed,
            "entries": entries,
            "bytes": bytes_left,
        }

    @staticmethod
    def _verb(options: dict[str, Any]) -> str:
        return "would remove" if options["dry_run"] else "removed"

    def line(self, row: dict[str, Any], options: dict[str, Any]) -> str:
        return (
            f"pid {row['pid']}: {self._verb(options)} {row['removed']} sessions "
            f"({size(row['bytes_freed'])}); {row['entries']} sessions ({size(row['bytes'])}) left"
        )

    def total_line(
        self, rows: list[dict[str, Any]], total: dict[str, Any], options: dict[str, Any]
    ) -> str:
        return (
            f"total over {len(rows)} process(es): {self._verb(options)} {total['removed']} "
            f"sessions ({size(total['bytes_freed'])}); {total['entries']} sessions "
            f"({size(total['bytes'])}) left"
        )
