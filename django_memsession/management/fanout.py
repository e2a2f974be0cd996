"""What ``prunesessions`` and ``snapshotsessions`` share: ask every running server process of
this project through the control channel, print a line per process and a total (or ``--json``),
and exit with a status a script can act on."""

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

EXIT_STATUS_HELP = (
    "Exit status: 0 when every process found {verb}; 1 when no running process was found; "
    f"{EXIT_SOME_UNREACHABLE} when some process could not be reached (it did not answer within "
    "--timeout, or the control directory was refused)."
)


def size(value: int) -> str:
    return str(filesizeformat(value)).replace("\xa0", " ")


class FanOutCommand(BaseCommand):
    """A command that asks every process for ``command``; subclasses say what a row is."""

    command = ""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter  # keep the paragraph break
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
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

    def gather(self, options: dict[str, Any]) -> Gathered:
        return runtime.gather(self.command, timeout=options["timeout"])

    def row(self, report: ProcessReport, options: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def line(self, row: dict[str, Any], options: dict[str, Any]) -> str:
        raise NotImplementedError

    def total_line(
        self, rows: list[dict[str, Any]], total: dict[str, Any], options: dict[str, Any]
    ) -> str:
        raise NotImplementedError

    totals: tuple[str, ...] = ()

    def extra_json(self, options: dict[str, Any]) -> dict[str, Any]:
        return {}

    def handle(self, *args: Any, **options: Any) -> None:
        gathered = self.gather(options)
        rows = [self.row(report, options) for report in gathered.processes]
        total = {key: sum(row[key] for row in rows) for key in self.totals}
        errors = list(gathered.errors)
        if gathered.problem:
            errors.append(gathered.problem)
        if options["json"]:
            payload = {
                **self.extra_json(options),
                "processes": rows,
                "total": total,
                "errors": errors,
                "split": gathered.split,
            }
            self.stdout.write(json.dumps(payload, indent=2))
        else:
            for row in rows:
                self.stdout.write(self.line(row, options))
            if rows:
                self.stdout.write(self.style.SUCCESS(self.total_line(rows, total, options)))
            if gathered.split:
                self.stderr.write(self.style.WARNING(f"Warning: {split_warning(len(rows))}"))
            for error in errors:
                self.stderr.write(self.style.ERROR(error))
        if errors:
            raise CommandError(
                f"{len(errors)} process(es) or places could not be reached.",
                returncode=EXIT_SOME_UNREACHABLE,
            )
        if not rows:
            raise CommandError(none_found(gathered), returncode=EXIT_NONE_REACHED)
        self.check_rows(rows)

    def check_rows(self, rows: list[dict[str, Any]]) -> None:
        """Raise ``CommandError`` when what the processes answered is a failure as a whole."""


def none_found(gathered: Gathered) -> str:
    if not gathered.channel_on:
        return (
            "No running server reached: the control channel is off (MEMSESSION_CONTROL = False, "
            "or no Unix sockets on this platform), so only this process could be asked, and it "
            "holds no sessions."
        )
    return (
        f"No running server of this project found in {gathered.searched}. Likely causes: "
        "no server is running, or it has not served a session since it started; the server "
        "runs with a different MEMSESSION_CONTROL_DIR or SECRET_KEY; or it has a private /tmp "
        "(systemd PrivateTmp=yes), in which case set MEMSESSION_CONTROL_DIR to a directory both "
        "can see."
    )
