"""System checks: a bad ``MEMSESSION_*`` setting is an error at startup saying what to write."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error

from . import conf


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [
        Error(problem.msg, hint=problem.hint, id=problem.id, obj="settings")
        for problem in conf.problems()
    ]
