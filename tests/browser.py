"""Browser tests' helpers: a real headless Chromium driven by sync Playwright.

``tests/conftest.py`` loads this module as a plugin (``pytest_plugins = ["browser"]``); a test then
asks for ``browser_page`` (usually beside pytest-django's ``live_server``) and ``screenshot``::

    @pytest.mark.heavy
    def test_stats_page(live_server, admin_client, browser_page, screenshot):
        browser_page.goto(f"{live_server.url}/admin/")
        screenshot(browser_page, "admin-index")

The browser is Debian's Chromium (``apt-get install chromium``): ``playwright install`` cannot
download browsers on our machines. Without Chromium or Playwright the browser tests skip, unless
``MEMSESSION_REQUIRE_BROWSER=1`` (as CI sets): then they fail, so a broken install cannot pass.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO_ROOT = Path(__file__).resolve().parent.parent
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")

# Root in CI needs --no-sandbox. The machines reach no network beyond loopback and the package
# registries: without the background-networking flags Chromium keeps dialling Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DEFAULT_TIMEOUT_MS = 15_000

SaveScreenshot = Callable[["Page", str], Path]


def chromium_path() -> str | None:
    """Debian's Chromium, or any ``chromium`` on PATH; None when there is none."""
    if DEBIAN_CHROMIUM.is_file():
        return str(DEBIAN_CHROMIUM)
    return shutil.which("chromium")


def artifacts_dir() -> Path:
    """Where screenshots go: ``$MEMSESSION_ARTIFACTS``, else ``<repo>/artifacts/`` (gitignored)."""
    path = Path(os.environ.get("MEMSESSION_ARTIFACTS") or REPO_ROOT / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG of ``page`` as ``<artifacts>/<name>.png`` and return its path."""
    file_name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "screenshot"
    path = artifacts_dir() / f"{file_name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _browser_unavailable(reason: str) -> NoReturn:
    if os.environ.get("MEMSESSION_REQUIRE_BROWSER") == "1":
        pytest.fail(
            f"{reason}. MEMSESSION_REQUIRE_BROWSER=1 demands a real browser: install Debian's "
            "Chromium (apt-get install -y chromium) and the test extra (pip install '.[test]').",
            pytrace=False,
        )
    pytest.skip(f"{reason} (set MEMSESSION_REQUIRE_BROWSER=1 to fail instead)")


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Page]:
    """A fresh page in a fresh headless Chromium, closed after the test."""
    executable = chromium_path()
    if executable is None:
        _browser_unavailable("Chromium not found at /usr/bin/chromium nor on PATH")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_unavailable("Playwright is not installed")

    # While sync Playwright runs, its event loop counts as running in this thread, so Django
    # refuses ORM calls from the test body and pytest-django's fixtures (SynchronousOnlyOperation).
    # Allowed for this test only, and Playwright stops with it: other tests keep Django's check,
    # and their asyncio/async_to_sync calls do not meet a stray running loop.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(DEFAULT_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> SaveScreenshot:
    """``screenshot(page, label)`` saves ``<artifacts>/<test name>-<label>.png``."""

    def save(page: Page, label: str) -> Path:
        return save_screenshot(page, f"{request.node.name}-{label}")

    return save
