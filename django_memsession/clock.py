"""The one clock both engines read: ``time.time()``, looked up when called."""

from __future__ import annotations

import time

__all__ = ["wall_clock"]


def wall_clock() -> float:
    """``time.time()``, looked up when called: freezegun and time-machine move it, as they move
    the expiries of Django's own engines."""
    return time.time()
