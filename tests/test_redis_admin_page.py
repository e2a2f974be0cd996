"""The admin stats page on the Redis engine, through Django's test client: Redis's figures, each
process's own, the history, "Prune now", the JSON, and a Redis that does not answer."""

from __future__ import annotations

import pytest
from django.contrib.admin import site
from django.contrib.auth.models import User
from django.test import Client
from redis_server import RedisServer
from test_redis_stats import make_sessions

import django_memsession
from django_memsession import runtime
from django_memsession.admin import StatsAdmin
from django_memsession.models import Stats
from django_memsession.redis import SessionStore, services

STATS_URL = "/admin/django_memsession/stats/"
PRUNE_URL = "/admin/django_memsession/stats/prune/"
JSON_URL = "/admin/django_memsession/stats/json/"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_site", "control_dir")]


@pytest.fixture
def admin() -> Client:
    """A superuser logged in on the Redis engine (the redis_site fixture comes first)."""
    user = User.objects.create_superuser("boss", password="pw")
    client = Client()
    client.force_login(user)
    return client


def test_the_page_shows_redis_figures_and_this_process_row(admin: Client, redis_server):
    redis_server.set_maxmemory("32mb", "volatile-ttl")
    make_sessions(3)

    response = admin.get(STATS_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="memsession-redis"' in html
    assert 'class="sessions" data-value="4"' in html  # 3 made + the admin's own
    assert "volatile-ttl" in html
    assert 'data-max="33554432"' in html
    assert f'data-pid="{runtime.report().pid}"' in html
    assert 'class="p50"' in html


def test_the_page_on_redis_is_no_memory_store_page(admin: Client):
    html = admin.get(STATS_URL).content.decode()

    assert 'class="low-water"' not in html
    assert "memory used / budget" not in html


def test_a_small_database_is_counted_and_a_large_one_is_marked_an_estimate(
    admin: Client, monkeypatch
):
    from django_memsession.redis import info

    assert "an estimate" not in admin.get(STATS_URL).content.decode()

    monkeypatch.setattr(info, "EXACT_LIMIT", 0)

    assert "an estimate" in admin.get(STATS_URL).content.decode()


def test_the_history_of_redis_is_plotted_once_there_are_two_samples(admin: Client):
    make_sessions(2)
    services.sample_redis()
    make_sessions(2)
    services.sample_redis()

    html = admin.get(STATS_URL).content.decode()

    assert html.count('<polyline class="bytes"') == 1
    assert html.count('<polyline class="entries"') == 1


def test_info_refused_shows_the_reason_and_still_the_process_figures(
    admin: Client, redis_server: RedisServer
):
    """A managed Redis may refuse INFO to the application's user: sessions work, figures not."""
    client = redis_server.client()
    client.execute_command("ACL", "SETUSER", "default", "-info")
    try:
        response = admin.get(STATS_URL)
    finally:
        client.execute_command("ACL", "SETUSER", "default", "+@all")
        client.close()

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="memsession-redis-problem"' in html
    assert "NoPermissionError" in html
    assert 'id="memsession-redis"' not in html
    assert f'data-pid="{runtime.report().pid}"' in html


def test_redis_gone_while_the_page_renders_shows_a_message_and_the_process_figures(
    redis_server: RedisServer, rf
):
    """Redis stops answering after the admin's session was loaded: no 500."""
    user = User.objects.create_superuser("boss", password="pw")
    make_sessions(1)
    redis_server.kill()
    request = rf.get(STATS_URL)
    request.user = user

    response = StatsAdmin(Stats, site).stats_view(request)

    assert response.status_code == 200
    html = response.render().content.decode()
    assert "Redis did not give its figures: ConnectionError" in html
    assert f'data-pid="{runtime.report().pid}"' in html


def test_redis_gone_before_the_admin_session_loads_is_a_503_not_a_500(
    admin: Client, redis_server: RedisServer
):
    redis_server.kill()

    assert admin.get(STATS_URL).status_code == 503


def test_prune_now_on_redis_runs_the_engines_clean_up(admin: Client, monkeypatch):
    ran = []
    monkeypatch.setattr(SessionStore, "clear_expired", classmethod(lambda cls: ran.append(cls)))

    response = admin.post(PRUNE_URL, follow=True)

    assert ran == [SessionStore]
    texts = [str(message) for message in response.context["messages"]]
    assert texts[0].startswith("Redis removes expired sessions itself")


def test_json_on_redis_has_redis_and_process_figures_and_no_session_key(admin: Client):
    keys = make_sessions(3)
    for key in keys:
        SessionStore(key).load()

    response = admin.get(JSON_URL)

    data = response.json()
    assert data["engine"] == "redis"
    assert data["redis"]["sessions"] == 4
    (process,) = data["processes"]
    assert process["hits"] >= 3
    text = response.content.decode()
    assert not any(key in text for key in keys)
    assert admin.cookies["sessionid"].value not in text


def test_with_a_near_cache_the_page_shows_l1_and_l2_hits_and_invalidations(settings):
    settings.MEMSESSION_REDIS_NEAR_CACHE = "1M"
    user = User.objects.create_superuser("near", password="pw")
    client = Client()
    client.force_login(user)  # saved (and kept in L1) through the near cache's store
    assert client.get(STATS_URL).status_code == 200  # a load answered by L1
    html = client.get(STATS_URL).content.decode()
    l1 = int(html.split('class="l1-hits" data-value="')[1].split('"')[0])
    assert l1 >= 1
    assert 'class="invalidations"' in html
    figures = django_memsession.stats()
    assert figures["near"]["l1_hits"] >= l1


def test_without_a_near_cache_the_page_has_no_near_cache_column(admin: Client):
    html = admin.get(STATS_URL).content.decode()
    assert "near cache:" not in html
    assert django_memsession.stats()["near"] is None
