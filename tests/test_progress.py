"""The progress of a long command (exportsessions): on stderr only, a bar on a terminal, plain
lines now and then elsewhere; time moved by a fake clock."""

from __future__ import annotations

import io

from django.core.management.base import OutputWrapper

from django_memsession.management.fanout import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_a_plain_line_every_few_seconds_and_a_short_run_none():
    out, clock = io.StringIO(), Clock()
    progress = Progress(OutputWrapper(out), "sessions", every=5.0, clock=clock)
    progress.add_total(200)
    progress.advance(50)
    assert out.getvalue() == ""
    clock.now = 6.0
    progress.advance(50)
    progress.finish()
    assert out.getvalue() == "100 of 200 sessions (50%)\n"


def test_a_terminal_gets_one_bar_redrawn_in_place():
    out, clock = Terminal(), Clock()
    progress = Progress(OutputWrapper(out), "sessions", min_total=100, clock=clock)
    progress.add_total(100)
    clock.now = 1.0
    progress.advance(50)
    clock.now = 2.0
    progress.advance(50)
    progress.finish()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("100 of 100 sessions (100%)\n")
    assert "[###############...............] 50 of 100 sessions (50%)" in text


def test_a_terminal_gets_no_bar_for_a_small_store():
    out = Terminal()
    progress = Progress(OutputWrapper(out), "sessions", min_total=1000, clock=Clock())
    progress.add_total(10)
    progress.advance(10)
    progress.finish()
    assert out.getvalue() == ""
