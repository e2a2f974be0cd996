"""Django's own session tests (``tests/sessions_tests`` of the installed Django) on this engine.

Reviewers hold the engine to Django's ``SessionTestsMixin`` and ``SessionMiddlewareTests``; this
runs them here, for whichever Django the environment has. The suite is fetched once per version
(see ``django_session_suite``); without a network the module skips, or fails under
``MEMSESSION_REQUIRE_DJANGO_SUITE=1``.
"""

from __future__ import annotations

from django_session_suite import django_session_test_cases

from django_memsession.memory.engine import SessionStore

# Tests of Django's that cannot apply to an in-memory engine (skipped, with the reason): none.
# Every test of SessionTestsMixin and SessionMiddlewareTests runs; the two middleware tests that
# read the db engine's table run with that read going through this engine instead.
SKIP: dict[str, str] = {}

# Known failures of this engine against Django's expectations, to be fixed in the engine; strict,
# so a fix shows up as XPASS(strict) until its line goes.
XFAIL: dict[str, str] = {}

globals().update(
    django_session_test_cases(
        SessionStore, prefix="Memsession", engine="django_memsession", xfail=XFAIL, skip=SKIP
    )
)
