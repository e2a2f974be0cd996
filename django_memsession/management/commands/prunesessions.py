"""``manage.py prunesessions``: prune expired sessions in every running server of this project."""

from __future__ import annotations

import json
from argparse import RawDescriptionHelpFormatter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.template.defaultfilters import filesizeformat

from django_memsession import runtime
from django_memsession.control import PRUNE_TIMEOUT
from django_memsession.messages import Gathered, ProcessReport, split_warning

EXIT_NONE_REACHED = 1
EXIT_SOME_UNREACHABLE = 2


def _size(value: int) -> str:
    return str(filesizeformat(value)).replace("\xa0", " ")


class Command(BaseCommand):
    help = (
        "Remove expired sessions from the memory of every running server process of this "
        "project (reached through the control channel), and bring over-full stores down to "
        "MEMSESSION_LOW_WATER.\n\n"
        "Exit status: 0 when every process found was pruned; 1 when no running process was "
        f"found; {EXIT_SOME_UNREACHABLE} when some process could not be reached (it did not "
        "answer within --timeout, or the control directory was refused)."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter  # keep the paragraph break
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be removed without removing anything.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the results as one JSON object."
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=PRUNE_TIMEOUT,
            help="Seconds to wait for the processes, all asked at once "
            f"(default: {PRUNE_TIMEOUT:g}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run: bool = options["dry_run"]
        gathered = runtime.gather("prune", dry_run=dry_run, timeout=options["timeout"])
        rows = [_row(report) for report in gathered.processes]
        total = {
            key: sum(row[key] for row in rows)
            for key in ("removed", "bytes_freed", "entries", "bytes")
        }
        errors = list(gathered.errors)
        if gathered.problem:
            errors.append(gathered.problem)
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "dry_run": dry_run,
                        "processes": rows,
                        "total": total,
                        "errors": errors,
                        "split": gathered.split,
                    },
                    indent=2,
                )
            )
        else:
            self._print_text(rows, total, errors, dry_run, gathered.split)
        if errors:
            raise CommandError(
                f"{len(errors)} process(es) or places could not be reached.",
                returncode=EXIT_SOME_UNREACHABLE,
            )
        if not rows:
            raise CommandError(_none_found(gathered), returncode=EXIT_NONE_REACHED)

    def _print_text(
        self,
        rows: list[dict[str, int]],
        total: dict[str, int],
        errors: list[str],
        dry_run: bool,
        split: bool,
    ) -> None:
        verb = "would remove" if dry_run else "removed"
        for row in rows:
            self.stdout.write(
                f"pid {row['pid']}: {verb} {row['removed']} sessions "
                f"({_size(row['bytes_freed'])}); {row['entries']} sessions "
                f"({_size(row['bytes'])}) left"
            )
        if rows:
            self.stdout.write(
                self.style.SUCCESS(
                    f"total over {len(rows)} process(es): {verb} {total['removed']} sessions "
                    f"({_size(total['bytes_freed'])}); {total['entries']} sessions "
                    f"({_size(total['bytes'])}) left"
                )
            )
        if split:
            self.stderr.write(self.style.WARNING(f"Warning: {split_warning(len(rows))}"))
        for error in errors:
            self.stderr.write(self.style.ERROR(error))


def _row(report: ProcessReport) -> dict[str, int]:
    result = report.result
    if result is None:
        raise CommandError(f"process {report.pid} answered without a prune result")
    entries, size = report.stats.entries, report.stats.bytes
    if result.dry_run:
        # Nothing was removed: show what would be left.
        entries, size = entries - result.removed, size - result.bytes_freed
    return {
        "pid": report.pid,
        "removed": result.removed,
        "bytes_freed": result.bytes_freed,
        "entries": entries,
        "bytes": size,
    }


def _none_found(gathered: Gathered) -> str:
    if not gathered.channel_on:
        return (
            "No running server reached: the control channel is off (MEMSESSION_CONTROL = False, "
            "or no Unix sockets on this platform), so only this process could be pruned, and it "
            "holds no sessions."
        )
    return (
        f"No running server of this project found in {gathered.searched}. Likely causes: "
        "no server is running, or it has not served a session since it started; the server "
        "runs with a different MEMSESSION_CONTROL_DIR or SECRET_KEY; or it has a private /tmp "
        "(systemd PrivateTmp=yes), in which case set MEMSESSION_CONTROL_DIR to a directory both "
        "can see."
    )
