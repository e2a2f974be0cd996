"""Who is logged in on the memory engine, through Django: what is its own (most recently used
first as it counts use, the per-user and whole-store limits, distinct users in its stats, a
password change in the request that logged in). What every engine keeps (the API, logins,
password changes, clients, the user's page, the admin) is in ``test_contract_who.py``."""

from __future__ import annotations

import logging

import pytest
from accounts import PAGE, committed, key_of, logged_in
from django.contrib import admin
from django.contrib.auth import login
from django.contrib.auth.models import User
from django.test import Client, RequestFactory, override_settings
from django.utils.crypto import salted_hmac

import django_memsession
from django_memsession import SessionStore
from django_memsession import admin as memsession_admin
from django_memsession.logged_in import ID_SALT, session_id

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_control_dir(control_dir: str) -> None:
    """Every test has its own MEMSESSION_CONTROL_DIR: parallel runs never see each other."""


# -- the API --------------------------------------------------------------------------------------


def test_the_id_is_django_salted_hmac_of_the_key_with_a_salt_of_its_own():
    key = "k" * 32
    assert session_id(key) == salted_hmac(ID_SALT, key, algorithm="sha256").hexdigest()[:32]


def test_most_recently_used_first(alice, global_clock):
    first = logged_in(alice)
    global_clock.advance(5)
    second = logged_in(alice)
    global_clock.advance(5)
    first.get("/session/whoami/")
    ids = [record.id for record in django_memsession.user_sessions(alice)]
    assert ids == [session_id(key_of(first)), session_id(key_of(second))]


def test_stats_count_distinct_logged_in_users(alice, bob):
    logged_in(alice), logged_in(alice), logged_in(bob, "bob password 1")
    Client().get("/session/make/")  # anonymous
    assert django_memsession.stats()["users"] == 2


# -- limits ---------------------------------------------------------------------------------------


@override_settings(MEMSESSION_MAX_SESSIONS_PER_USER=2)
def test_a_login_beyond_the_per_user_limit_ends_the_least_recently_used(
    alice, global_clock, ended_signals, caplog
):
    first = logged_in(alice)
    global_clock.advance(1)
    second = logged_in(alice)
    global_clock.advance(1)
    first.get("/session/whoami/")  # second is now the least recently used
    with caplog.at_level(logging.INFO, logger="django_memsession"):
        third = logged_in(alice)
    users = [c.get("/session/whoami/").json()["user"] for c in (first, second, third)]
    assert users == [str(alice.pk), None, str(alice.pk)]
    assert [(s["count"], s["reason"]) for s in ended_signals] == [(1, "limit")]
    assert "over MEMSESSION_MAX_SESSIONS_PER_USER (2)" in caplog.text


@override_settings(MEMSESSION_MAX_SESSIONS=5)
def test_the_session_cap_holds_through_requests():
    for _ in range(8):
        Client().get("/session/make/")
    assert django_memsession.stats()["entries"] == 5


# -- password changes -----------------------------------------------------------------------------


@committed
def test_a_password_change_in_the_request_that_logged_in_keeps_that_session(alice):
    other = logged_in(alice)
    visitor = SessionStore()
    visitor["cart"] = 1
    visitor.create()  # an anonymous session, loaded by the request below before it logs in
    request = RequestFactory().post("/")
    request.session = SessionStore(visitor.session_key)
    login(request, alice)
    request.session.save()
    alice.set_password("a new password 2")
    alice.save()
    assert [r.id for r in django_memsession.user_sessions(alice)] == [
        session_id(request.session.session_key)
    ]
    assert not SessionStore().exists(key_of(other))


# -- the user's page ------------------------------------------------------------------------------


def test_the_templates_need_no_project_base_template(alice):
    html = logged_in(alice).get(PAGE).content.decode()
    assert html.startswith("<!DOCTYPE html>") and "<h1>Your sessions</h1>" in html


# -- the admin ------------------------------------------------------------------------------------


def test_the_stats_page_shows_logged_in_users(admin_client, alice):
    logged_in(alice)
    html = admin_client.get("/admin/django_memsession/stats/").content.decode()
    assert 'class="users" data-value="2"' in html  # alice and the admin


def test_the_action_is_added_to_a_custom_user_admin():
    class CustomUserAdmin(admin.ModelAdmin):
        actions = ["some_action"]

        @admin.action(description="Something")
        def some_action(self, request, queryset):
            pass

    site = admin.AdminSite(name="custom")
    site.register(User, CustomUserAdmin)
    assert memsession_admin.add_logout_everywhere(site)
    assert site._registry[User].actions == ["some_action", memsession_admin.logout_everywhere]
