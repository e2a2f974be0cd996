"""Who is logged in, in a real browser, on the Redis engine: the same user page and admin action
as test_who_browser.py, with the sessions and the index in a real Redis."""

# ruff: noqa: F401 (the tests are collected again here, with the Redis engine)

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_who_browser import (
    test_a_user_sees_their_sessions_and_ends_another,
    test_staff_log_selected_users_out_everywhere,
)

pytestmark = pytest.mark.heavy

MIDDLEWARE_STATE = (
    "_middleware_chain",
    "_view_middleware",
    "_template_response_middleware",
    "_exception_middleware",
)


@pytest.fixture
def live_server(live_server, redis_site: str) -> Iterator:
    """pytest-django's live server (one for the whole run) serving with the Redis engine: its
    middleware is built again from the Redis settings (Django's SessionMiddleware picks its
    engine when it is built), and put back as it was afterwards."""
    handlers = [live_server.thread.httpd.get_app()]
    while hasattr(handlers[-1], "application"):
        handlers.append(handlers[-1].application)
    saved = [{name: getattr(handler, name) for name in MIDDLEWARE_STATE} for handler in handlers]
    for handler in handlers:  # each wrapper is a WSGIHandler with a middleware chain of its own
        handler.load_middleware()
    yield live_server
    for handler, state in zip(handlers, saved, strict=True):
        for name, value in state.items():
            setattr(handler, name, value)
