"""Who is logged in, in a real browser, on each engine (memory, and Redis with the sessions and the
index in a real Redis): the user's own page (end one, end the others, CSRF, another user's id)
and the admin's "Log out everywhere"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.test import Client

import django_memsession
from django_memsession.logged_in import session_id

if TYPE_CHECKING:
    from browser import SaveScreenshot
    from playwright.sync_api import Page
    from pytest_django.live_server_helper import LiveServer

pytestmark = [pytest.mark.heavy, pytest.mark.engines("memory", "redis")]

MIDDLEWARE_STATE = (
    "_middleware_chain",
    "_view_middleware",
    "_template_response_middleware",
    "_exception_middleware",
)


@pytest.fixture
def live_server(live_server, engine, request) -> Iterator:
    """pytest-django's live server (one for the whole run) serving with the test's engine. On
    Redis (the ``redis_site`` fixture) its middleware is built again from the Redis settings
    (Django's SessionMiddleware picks its engine when it is built), and put back as it was
    afterwards."""
    if not engine.redis:
        yield live_server
        return
    request.getfixturevalue("redis_site")
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


def log_in(page: Page, base: str, username: str, password: str, start: str) -> None:
    page.goto(f"{base}{start}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("input[type=submit]")


def other_session(user: User, password: str) -> Client:
    client = Client()
    assert client.login(username=user.username, password=password)
    return client


def browser_key(page: Page) -> str:
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "sessionid"]
    return cookie["value"]


def test_a_user_sees_their_sessions_and_ends_another(
    live_server: LiveServer, browser_page: Page, screenshot: SaveScreenshot
) -> None:
    alice = User.objects.create_user("alice", password="alice pw 1")
    bob = User.objects.create_user("bob", password="bob pw 1")
    phone = other_session(alice, "alice pw 1")
    bobs = other_session(bob, "bob pw 1")
    page = browser_page

    # settings.LOGIN_URL, then back to the page.
    log_in(page, live_server.url, "alice", "alice pw 1", "/account/sessions/")
    assert page.url == f"{live_server.url}/account/sessions/"
    rows = page.locator("tr.memsession-session")
    assert rows.count() == 2
    mine = session_id(browser_key(page))
    assert page.locator("tr.memsession-current").get_attribute("data-session") == mine
    html = page.content()
    for key in (browser_key(page), phone.session.session_key, bobs.session.session_key):
        assert key not in html
    screenshot(page, "sessions")

    other = page.locator("tr.memsession-session:not(.memsession-current)")
    other.locator("button.memsession-end").click()
    assert page.locator("tr.memsession-session").count() == 1
    assert "The session was logged out." in page.content()
    assert phone.get("/session/whoami/").json()["user"] is None

    # A forged form naming bob's session: a 404, and bob stays logged in.
    with page.expect_navigation() as navigation:
        page.evaluate(
            "id => { const f = document.querySelector('tr.memsession-current form');"
            " f.querySelector('[name=session]').value = id; f.submit(); }",
            session_id(bobs.session.session_key),
        )
    assert navigation.value.status == 404
    assert bobs.get("/session/whoami/").json()["user"] == str(bob.pk)

    # A form without its CSRF token is refused.
    page.goto(f"{live_server.url}/account/sessions/")
    other_session(alice, "alice pw 1")
    page.reload()
    page.evaluate(
        "document.querySelector('#memsession-others [name=csrfmiddlewaretoken]')?.remove()"
    )
    with page.expect_navigation() as navigation:
        page.click("#memsession-log-out-others")
    assert navigation.value.status == 403
    assert len(django_memsession.user_sessions(alice)) == 2

    page.goto(f"{live_server.url}/account/sessions/")
    page.click("#memsession-log-out-others")
    assert "Logged out 1 other session(s)." in page.content()
    assert [r.id for r in django_memsession.user_sessions(alice)] == [mine]
    screenshot(page, "after")


def test_staff_log_selected_users_out_everywhere(
    live_server: LiveServer, admin_user: User, browser_page: Page, screenshot: SaveScreenshot
) -> None:
    alice = User.objects.create_user("alice", password="alice pw 1")
    laptop, phone = other_session(alice, "alice pw 1"), other_session(alice, "alice pw 1")
    page = browser_page
    log_in(page, live_server.url, "admin", "password", "/admin/login/?next=/admin/auth/user/")
    page.locator(f"input[name=_selected_action][value='{alice.pk}']").check()
    page.select_option("select[name=action]", "logout_everywhere")
    with page.expect_navigation():
        page.click("button[name=index]")
    assert "Ended 2 session(s) of 1 user(s) in every process." in page.content()
    assert django_memsession.user_sessions(alice) == []
    assert laptop.get("/session/whoami/").json()["user"] is None
    assert phone.get("/session/whoami/").json()["user"] is None
    screenshot(page, "action")

    # The stats page leads to a user's sessions.
    page.goto(f"{live_server.url}/admin/django_memsession/stats/")
    page.click("#memsession-find-user-link")
    page.fill("#memsession-q", "admin")
    page.click("#memsession-find-user input[type=submit]")
    assert "1 live session(s) of admin" in page.content()
