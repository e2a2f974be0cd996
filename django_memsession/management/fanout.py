"""What ``prunesessions`` and ``snapshotsessions`` share: ask every running server process of
this project through the control channel, print a line per process and a total (or ``--json``),
and exit with a status a script can act on."""

from __future__ import annotations

import json
import math
import time
from argparse import ArgumentTypeError, RawDescriptionHelpFormatter
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.template.defaultfilters import filesizeformat

from django_memsession import runtime
from django_memsession.control import PRUNE_TIMEOUT
from django_memsession.messages import Gathered, ProcessReport, split_warning

EXIT_NONE_REACHED = 1
EXIT_SOME_UNREACHABLE = 2
EXIT_REDIS_FAILED = 3  # exportsessions: Redis could not be reached, or failed part-way

EXIT_STATUS_HELP = (
    "Exit status: 0 when every process found {verb}; 1 when no running process was found; "
    f"{EXIT_SOME_UNREACHABLE} when some process could not be reached (it did not answer within "
    "--timeout, or the control directory was refused)."
)


def seconds(text: str) -> float:
    """``--timeout``'s type: a positive number of seconds, refused by the parser otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ArgumentTypeError(f"{text!r} is not a positive number of seconds (e.g. 30)")
    return value


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
            type=seconds,
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


class Progress:
    """Progress of a long command on stderr, never on stdout (which holds only the summary).

    On a terminal, one bar redrawn in place (at most ten times a second) once the work is
    ``min_total`` items or more; elsewhere (a log, a pipe), a plain line every ``every`` seconds,
    so a short run prints nothing.
    """

    def __init__(
        self,
        stream: OutputWrapper,
        noun: str,
        *,
        min_total: int = 1000,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.noun = noun
        self.tty = stream.isatty()
        self.min_total = min_total
        self.every = every
        self.clock = clock
        self.total = 0
        self.done = 0
        self._last = clock()
        self._drawn = False

    def add_total(self, count: int) -> None:
        self.total += count

    def advance(self, count: int) -> None:
        self.done += count
        now = self.clock()
        if self.tty:
            due = now - self._last >= 0.1 or self.done >= self.total
            if self.total >= self.min_total and due:
                self._last = now
                self._write("\r" + self._bar(), ending="")
                self._drawn = True
        elif now - self._last >= self.every:
            self._last = now
            self._write(self._text())

    def finish(self) -> None:
        if self._drawn:
            self._write("\r" + self._bar())

    def _text(self) -> str:
        share = f" ({100 * self.done // self.total}%)" if self.total else ""
        return f"{self.done} of {self.total} {self.noun}{share}"

    def _bar(self) -> str:
        width = 30
        filled = width * self.done // self.total if self.total else width
        return f"[{'#' * filled}{'.' * (width - filled)}] {self._text()}"

    def _write(self, text: str, ending: str = "\n") -> None:
        self.stream.write(text, style_func=lambda plain: plain, ending=ending)
        self.stream.flush()
