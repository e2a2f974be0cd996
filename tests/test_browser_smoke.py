"""A real browser runs in the suite: headless Chromium renders a page that live_server serves."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from browser import SaveScreenshot
    from playwright.sync_api import Page
    from pytest_django.live_server_helper import LiveServer

pytestmark = pytest.mark.heavy


def test_chromium_renders_the_admin_login_page(
    live_server: LiveServer, browser_page: Page, screenshot: SaveScreenshot
) -> None:
    browser_page.goto(f"{live_server.url}/admin/login/")

    assert browser_page.title().startswith("Log in")
    assert browser_page.locator("input[name=username]").is_visible()
    assert screenshot(browser_page, "admin-login").stat().st_size > 0
