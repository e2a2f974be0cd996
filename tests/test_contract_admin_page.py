"""The admin stats page on each engine (memory, redis), through Django's test client: where it
is, who may see it, who may prune, and the JSON's permission. The figures each engine shows are
its own: ``test_admin_page.py`` (memory) and ``test_redis_admin_page.py``."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

STATS_URL = "/admin/django_memsession/stats/"
PRUNE_URL = "/admin/django_memsession/stats/prune/"
JSON_URL = "/admin/django_memsession/stats/json/"

pytestmark = [pytest.mark.django_db, pytest.mark.engines("memory", "redis")]


@pytest.fixture(autouse=True)
def _site(engine, control_dir: str, request) -> None:
    """Every test has its own MEMSESSION_CONTROL_DIR (parallel runs never see each other); on
    Redis, the site with this package's SessionMiddleware (the ``redis_site`` fixture)."""
    if engine.redis:
        request.getfixturevalue("redis_site")


def staff_client(*permissions: str) -> Client:
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def test_listed_on_the_admin_index(admin_client):
    assert f'href="{STATS_URL}"' in admin_client.get("/admin/").content.decode()


@pytest.mark.parametrize("url", [STATS_URL, JSON_URL])
def test_anonymous_users_go_to_the_admin_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", [STATS_URL, JSON_URL])
def test_staff_without_permission_get_403(url):
    assert staff_client().get(url).status_code == 403


def test_staff_with_view_permission_see_the_page_without_the_prune_button():
    response = staff_client("view_stats").get(STATS_URL)
    assert response.status_code == 200
    assert "Prune now" not in response.content.decode()


def test_staff_with_change_permission_see_the_prune_button():
    response = staff_client("change_stats").get(STATS_URL)
    assert 'value="Prune now"' in response.content.decode()


def test_prune_needs_a_csrf_token():
    user = User.objects.create_superuser("root", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(PRUNE_URL).status_code == 403


def test_json_view_for_a_view_only_user():
    assert staff_client("view_stats").get(JSON_URL).status_code == 200
