"""The stats page in a real browser: log in, find it on the admin index, read it, prune."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from django_memsession import SessionStore, prune
from django_memsession.runtime import get_store

if TYPE_CHECKING:
    from browser import SaveScreenshot
    from playwright.sync_api import Page
    from pytest_django.live_server_helper import LiveServer

pytestmark = pytest.mark.heavy


def make_sessions(count: int, expiry: int) -> None:
    for n in range(count):
        session = SessionStore()
        session["cart"] = [{"sku": f"item-{n}", "qty": 1}]
        session.set_expiry(expiry)
        session.save()


def test_log_in_read_the_figures_and_prune_now(
    global_clock,
    control_dir: str,
    live_server: LiveServer,
    admin_user,
    browser_page: Page,
    screenshot: SaveScreenshot,
) -> None:
    # live_server runs in this process: the page shows this store, moved by this clock.
    make_sessions(3, expiry=10)
    make_sessions(2, expiry=3600)
    prune()  # two samples of history for the plot
    global_clock.advance(11)
    prune(dry_run=True)
    page = browser_page

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "password")
    page.click("input[type=submit]")
    page.click("text=Session store")

    assert page.url == f"{live_server.url}/admin/django_memsession/stats/"
    row = page.locator("tr.memsession-process")
    assert row.count() == 1
    shown = int(row.locator("td.entries").inner_text())
    assert shown == get_store().stats()["entries"]  # 5 made + the admin's own session
    assert page.locator("svg.memsession-plot polyline.bytes").count() == 1
    screenshot(page, "stats")

    page.click("#memsession-prune")

    assert page.url == f"{live_server.url}/admin/django_memsession/stats/"
    success = page.locator("ul.messagelist li.success").inner_text()
    assert success.startswith("Pruned 1 process(es): removed 3 sessions")
    assert int(page.locator("tr.memsession-process td.entries").inner_text()) == shown - 3
    screenshot(page, "after-prune")
