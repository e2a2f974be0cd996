"""The demo site (``testproject``) works on the engine: checks, migrate, and a visitor's session.

``testproject`` sits at the repository's top level and is not importable from the suite, so each
test drives it the way a developer would: ``python manage.py ...`` in a subprocess, against a
throwaway SQLite file. Browser-like visits run inside ``manage.py shell`` with Django's test
client, CSRF checks on, so every form must carry its token.

Set ``DEMO_SESSION_ENGINE`` to run these against another engine (e.g. signed cookies).
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import django
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_MARK = "DEMO-RESULT "

# Runs before each script, inside the demo process.
CLIENT_PRELUDE = f"""
import json
import re

from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()  # allows the "testserver" host and records templates' context
client = Client(enforce_csrf_checks=True)


def csrf_token(response):
    html = response.content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def post(response, path, **data):
    # Submit a form found on ``response``'s page, as a browser would: token included.
    return client.post(path, {{"csrfmiddlewaretoken": csrf_token(response), **data}}, follow=True)


def observe(response):
    context = response.context
    return {{
        "status": response.status_code,
        "visits": context["visits"],
        "key_prefix": context["session_key_prefix"],
        "session_cookie": client.cookies["sessionid"].value,
        "expiry_age": context["expiry_age"],
        "expire_at_browser_close": context["expire_at_browser_close"],
        "cart": {{line.product.slug: line.quantity for line in context["cart_lines"]}},
        "user": context["user"].get_username(),
        "signed_in_banner": "Signed in as" in response.content.decode(),
    }}


def report(**observations):
    print({RESULT_MARK!r} + json.dumps(observations))
"""


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment for ``manage.py``: a migrated throwaway database, its own control dir."""
    tmp = tmp_path_factory.mktemp("demo-site")
    env = {
        **os.environ,
        # pytest-django exported the suite's settings; the demo must use its own.
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "DEMO_DB_PATH": str(tmp / "db.sqlite3"),
        "MEMSESSION_CONTROL_DIR": str(tmp / "control"),
    }
    run_manage("migrate", "--no-input", env=env)
    yield env


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"manage.py {' '.join(args)} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result


def run_visit(script: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``script`` with the test client in the demo process; return what it ``report``-ed."""
    # Django 5.2's shell imports every model first unless told not to; 4.2 has no such flag.
    no_imports = ["--no-imports"] if django.VERSION >= (5, 2) else []
    result = run_manage("shell", *no_imports, "-c", CLIENT_PRELUDE + dedent(script), env=env)
    reports = [line for line in result.stdout.splitlines() if line.startswith(RESULT_MARK)]
    assert reports, f"the script reported nothing\n{result.stdout}\n{result.stderr}"
    return json.loads(reports[-1].removeprefix(RESULT_MARK))


def test_demo_site_passes_system_checks_without_warnings(demo_env: dict[str, str]) -> None:
    run_manage("check", "--fail-level", "WARNING", env=demo_env)


def test_migrate_creates_each_demo_user_once(demo_env: dict[str, str]) -> None:
    run_manage("migrate", "--no-input", env=demo_env)  # a second time: must not duplicate

    observed = run_visit(
        """
        from django.contrib.auth import authenticate, get_user_model

        users = get_user_model().objects.order_by("username")
        report(
            users=[(u.username, u.is_staff, u.is_superuser) for u in users],
            admin_password_ok=authenticate(username="admin", password="admin") is not None,
            demo_password_ok=authenticate(username="demo", password="demo") is not None,
        )
        """,
        demo_env,
    )

    assert observed == {
        "users": [["admin", True, True], ["demo", False, False]],
        "admin_password_ok": True,
        "demo_password_ok": True,
    }


def test_home_page_counts_each_visit_in_the_session(demo_env: dict[str, str]) -> None:
    observed = run_visit(
        """
        first = observe(client.get("/"))
        second = observe(client.get("/"))
        report(first=first, second=second)
        """,
        demo_env,
    )

    assert observed["first"]["status"] == observed["second"]["status"] == 200
    assert (observed["first"]["visits"], observed["second"]["visits"]) == (1, 2)
    assert len(observed["second"]["key_prefix"]) == 6


def test_cart_adds_removes_and_clears_items(demo_env: dict[str, str]) -> None:
    observed = run_visit(
        """
        page = client.get("/")
        page = post(page, "/cart/tea/add/", quantity=3)
        page = post(page, "/cart/mug/add/", quantity=1)
        after_adding = observe(page)
        page = post(page, "/cart/tea/remove/", quantity="1")
        page = post(page, "/cart/mug/remove/", quantity="all")
        after_removing = observe(page)
        page = post(page, "/cart/clear/")
        report(
            after_adding=after_adding,
            after_removing=after_removing,
            after_clearing=observe(page),
            unknown_product=client.post(
                "/cart/caviar/add/", {"csrfmiddlewaretoken": csrf_token(page), "quantity": 1}
            ).status_code,
            without_csrf_token=client.post("/cart/tea/add/", {"quantity": 1}).status_code,
        )
        """,
        demo_env,
    )

    assert observed["after_adding"]["cart"] == {"tea": 3, "mug": 1}
    assert observed["after_removing"]["cart"] == {"tea": 2}
    assert observed["after_clearing"]["cart"] == {}
    assert observed["unknown_product"] == 404
    assert observed["without_csrf_token"] == 403


def test_expiry_buttons_set_the_sessions_expiry(demo_env: dict[str, str]) -> None:
    observed = run_visit(
        """
        page = client.get("/")
        browser_close = observe(post(page, "/session/expiry/", expiry="browser-close"))
        five_minutes = observe(post(page, "/session/expiry/", expiry="five-minutes"))
        default = observe(post(page, "/session/expiry/", expiry="default"))
        report(browser_close=browser_close, five_minutes=five_minutes, default=default)
        """,
        demo_env,
    )

    assert observed["browser_close"]["expire_at_browser_close"] is True
    assert observed["five_minutes"]["expire_at_browser_close"] is False
    assert observed["five_minutes"]["expiry_age"] == 300
    assert observed["default"]["expire_at_browser_close"] is False
    assert observed["default"]["expiry_age"] == 1_209_600  # Django's SESSION_COOKIE_AGE


def test_login_keeps_the_cart_under_a_new_key_and_logout_ends_the_session(
    demo_env: dict[str, str],
) -> None:
    observed = run_visit(
        """
        page = client.get("/")
        page = post(page, "/cart/teapot/add/", quantity=1)
        before_login = observe(page)
        login_page = client.get("/accounts/login/")
        after_login = observe(
            post(login_page, "/accounts/login/", username="demo", password="demo")
        )
        logout_by_get = client.get("/accounts/logout/").status_code
        after_logout = observe(post(client.get("/"), "/accounts/logout/"))
        report(
            login_page=login_page.status_code,
            before_login=before_login,
            after_login=after_login,
            logout_by_get=logout_by_get,
            after_logout=after_logout,
        )
        """,
        demo_env,
    )

    before, after_login, after_logout = (
        observed["before_login"],
        observed["after_login"],
        observed["after_logout"],
    )
    assert observed["login_page"] == 200
    assert (before["user"], before["signed_in_banner"]) == ("", False)
    assert (after_login["user"], after_login["signed_in_banner"]) == ("demo", True)
    assert after_login["cart"] == {"teapot": 1}
    assert after_login["session_cookie"] != before["session_cookie"]  # cycle_key on login
    assert observed["logout_by_get"] == 405
    assert (after_logout["user"], after_logout["signed_in_banner"]) == ("", False)
    assert after_logout["cart"] == {}
    assert after_logout["visits"] == 1  # a fresh session


def test_a_signed_in_visitor_finds_their_sessions_page(demo_env: dict[str, str]) -> None:
    observed = run_visit(
        """
        login_page = client.get("/accounts/login/")
        home = post(login_page, "/accounts/login/", username="demo", password="demo")
        sessions = client.get("/account/sessions/")
        report(
            linked='href="/account/sessions/"' in home.content.decode(),
            status=sessions.status_code,
            rows=sessions.content.decode().count('class="memsession-session'),
            marked="this session" in sessions.content.decode(),
        )
        """,
        demo_env,
    )
    assert observed == {"linked": True, "status": 200, "rows": 1, "marked": True}


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Visitor:
    """A browser's cookies and forms, over real HTTP."""

    def __init__(self, base: str) -> None:
        import http.cookiejar
        import urllib.request

        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=15) as response:
            return response.read().decode()

    def post(self, path: str, page: str, **data: str) -> str:
        import re
        import urllib.parse

        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **data}).encode()
        request = urllib.request.Request(self.base + path, data=body)
        request.add_header("Referer", self.base + "/")
        with self.opener.open(request, timeout=15) as response:
            return response.read().decode()


@pytest.mark.heavy
def test_runserver_reload_keeps_the_cart(demo_env: dict[str, str], tmp_path: Path) -> None:
    """A real ``manage.py runserver`` with its autoreloader: a touched source file restarts the
    serving process, and the visitor's cart is still there (the demo keeps a snapshot)."""
    import re
    import time

    port = _free_port()
    log_path = tmp_path / "runserver.log"
    watched = REPO_ROOT / "testproject" / "shop" / "views.py"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}"],
            cwd=REPO_ROOT,
            env=demo_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            visitor = _Visitor(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 60
            while True:
                try:
                    page = visitor.get("/")
                    break
                except OSError:
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.2)
            visitor.post("/cart/tea/add/", page, quantity="2")
            starts = log_path.read_text().count("Starting development server")
            # As an editor's save would; again every second until the server restarts: the
            # reloader notices a change only against the times it recorded on its first pass,
            # which under load may come after a single early touch.
            touched = 0.0
            while log_path.read_text().count("Starting development server") == starts:
                assert time.monotonic() < deadline, log_path.read_text()
                if time.monotonic() - touched >= 1.0:
                    os.utime(watched)
                    touched = time.monotonic()
                time.sleep(0.2)
            while True:
                try:
                    page = visitor.get("/")
                    break
                except OSError:
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.2)
        finally:
            server.terminate()
            server.wait(20)
    cart = page.split('<section id="cart">', 1)[1]
    row = re.search(r"<td>Green tea, 100 g</td>\s*<td class=\"num\">(\d+)</td>", cart)
    assert row is not None, cart
    assert row.group(1) == "2"
