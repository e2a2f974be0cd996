"""``manage.py snapshotsessions``: every running server of this project writes its snapshot now
(``MEMSESSION_SNAPSHOT_PATH``), e.g. before a deploy or a backup."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from django_memsession.management.fanout import (
    EXIT_NONE_REACHED,
    EXIT_STATUS_HELP,
    FanOutCommand,
    size,
)
from django_memsession.messages import ProcessReport


class Command(FanOutCommand):
    command = "snapshot"
    totals = ("sessions", "bytes")
    help = (
        "Ask every running server process of this project (through the control channel) to "
        "write its session snapshot to MEMSESSION_SNAPSHOT_PATH now. A process that does not "
        "own the snapshot file (another process claimed it) says so and writes nothing.\n\n"
        + EXIT_STATUS_HELP.format(verb="answered")
        + " Also 1 when no process wrote a snapshot (snapshots are off in every one)."
    )

    def check_rows(self, rows: list[dict[str, Any]]) -> None:
        if not any(row["written"] for row in rows):
            raise CommandError(
                "No process wrote a snapshot: " + "; ".join(sorted({r["refused"] for r in rows})),
                returncode=EXIT_NONE_REACHED,
            )

    def row(self, report: ProcessReport, options: dict[str, Any]) -> dict[str, Any]:
        written = report.written
        return {
            "pid": report.pid,
            "written": written is not None,
            "path": report.snapshot.path if report.snapshot is not None else None,
            "sessions": written.sessions if written else 0,
            "bytes": written.bytes if written else 0,
            "duration": written.duration if written else None,
            "refused": report.refused,
        }

    def line(self, row: dict[str, Any], options: dict[str, Any]) -> str:
        if not row["written"]:
            return f"pid {row['pid']}: nothing written: {row['refused']}"
        return (
            f"pid {row['pid']}: wrote {row['sessions']} sessions ({size(row['bytes'])}) to "
            f"{row['path']} in {row['duration'] * 1000:.0f} ms"
        )

    def total_line(
        self, rows: list[dict[str, Any]], total: dict[str, Any], options: dict[str, Any]
    ) -> str:
        written = sum(1 for row in rows if row["written"])
        return (
            f"total over {len(rows)} process(es): {written} wrote {total['sessions']} sessions "
            f"({size(total['bytes'])})"
        )
