"""The stats page on the Redis engine in a real browser: log in, read Redis's figures and this
process's, prune."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from pytest_django.live_server_helper import LiveServer

from django_memsession import runtime
from django_memsession.redis import SessionStore, services

if TYPE_CHECKING:
    from browser import SaveScreenshot
    from playwright.sync_api import Page

pytestmark = [pytest.mark.heavy, pytest.mark.usefixtures("redis_site")]


@pytest.fixture
def redis_live_server(redis_site: str, transactional_db) -> Iterator[LiveServer]:
    """A live server of its own, started once the site is on the Redis engine: pytest-django's
    is built once per run, and its SessionMiddleware keeps the engine it found then."""
    server = LiveServer("localhost")
    server._live_server_modified_settings.enable()
    yield server
    server._live_server_modified_settings.disable()
    server.stop()


def test_log_in_read_redis_and_process_figures_and_prune_now(
    control_dir: str,
    redis_server,
    redis_live_server: LiveServer,
    admin_user,
    browser_page: Page,
    screenshot: SaveScreenshot,
) -> None:
    # The live server runs in this process: the page shows this process's row, and Redis's.
    live_server = redis_live_server
    redis_server.set_maxmemory("16mb", "volatile-ttl")
    for n in range(3):
        session = SessionStore()
        session["cart"] = [{"sku": f"item-{n}", "qty": 1}]
        session.save()
    services.sample_redis()
    page = browser_page

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "password")
    page.click("input[type=submit]")
    services.sample_redis()  # a second sample, with the admin's session in it: a plot
    page.click("text=Session store")

    assert page.url == f"{live_server.url}/admin/django_memsession/stats/"
    redis = page.locator("#memsession-redis")
    assert redis.locator("caption").text_content().startswith("Redis 7.")
    assert int(redis.locator("span.sessions").get_attribute("data-value")) == 4
    assert redis.locator("td.policy").inner_text() == "volatile-ttl"
    row = page.locator("tr.memsession-process")
    assert row.count() == 1
    assert int(row.get_attribute("data-pid")) == runtime.report().pid
    assert int(row.locator("span.hits").get_attribute("data-value")) >= 1
    assert row.locator("span.p99").count() == 1
    assert page.locator("svg.memsession-plot polyline.bytes").count() == 1
    screenshot(page, "redis-stats")

    page.click("#memsession-prune")

    assert page.url == f"{live_server.url}/admin/django_memsession/stats/"
    success = page.locator("ul.messagelist li.success").inner_text()
    assert success.startswith("Redis removes expired sessions itself")
    screenshot(page, "redis-after-prune")
