"""Who is logged in, through Django, as every engine keeps it (run on each engine: the ``engine``
fixture of ``engines.py``): the API, logins, password changes, clients, the user's page, and the
admin (user lookup, "Log out everywhere"). One process; the control channel's own tests and the
real servers' cover the others. What is one engine's own is in ``test_who.py`` (memory) and
``test_redis_who.py`` (the Redis index: a logout or an ending is never undone, its TTL, lazy
cleaning, the per-user limit as it counts use)."""

from __future__ import annotations

import asyncio
import logging
import re
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import django
import pytest
from accounts import (
    CHANGE_FORM,
    END_URL,
    PAGE,
    UA,
    USER_URL,
    committed,
    key_of,
    logged_in,
    staff,
    whoami,
)
from asgiref.sync import sync_to_async
from django.contrib.auth import login
from django.contrib.auth.models import User
from django.contrib.auth.tokens import default_token_generator
from django.core.handlers.asgi import ASGIHandler
from django.db import connection
from django.test import Client, RequestFactory, override_settings
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from engines import site_middleware

import django_memsession
from django_memsession.logged_in import session_id
from django_memsession.messages import to_json

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.engines("memory", "redis", "redis-cluster"),
    pytest.mark.usefixtures("engine"),
]


@pytest.fixture(autouse=True)
def _site(engine, request) -> None:
    """On Redis, the test site with this package's SessionMiddleware in the place of Django's
    (the ``redis_site`` fixture)."""
    site_middleware(engine, request)


@pytest.fixture(autouse=True)
def _own_control_dir(control_dir: str) -> None:
    """Every test has its own MEMSESSION_CONTROL_DIR: parallel runs never see each other."""


# -- the API --------------------------------------------------------------------------------------


def test_a_login_lists_the_session_under_its_user_with_an_opaque_id(alice):
    client = logged_in(alice)
    (record,) = django_memsession.user_sessions(alice)
    assert record.id == session_id(key_of(client)) != key_of(client)
    assert record.user == str(alice.pk)
    assert record.created <= record.last_used < record.expires


def test_user_sessions_takes_a_primary_key_and_makes_no_query(alice, django_assert_num_queries):
    logged_in(alice)
    with django_assert_num_queries(0):
        assert len(django_memsession.user_sessions(alice.pk)) == 1
        assert len(django_memsession.user_sessions(alice)) == 1


def test_a_record_as_json_holds_no_session_key(alice):
    client = logged_in(alice)
    (record,) = django_memsession.user_sessions(alice)
    assert key_of(client).encode() not in to_json(record)


def test_end_user_sessions_ends_all_but_keep_and_counts_them(alice, bob):
    keep, other, third = logged_in(alice), logged_in(alice), logged_in(alice)
    bobs = logged_in(bob, "bob password 1")
    assert django_memsession.end_user_sessions(alice, keep=key_of(keep)) == 2
    assert [r.id for r in django_memsession.user_sessions(alice)] == [session_id(key_of(keep))]
    assert other.get("/session/whoami/").json()["user"] is None
    assert third.get("/session/whoami/").json()["user"] is None
    assert bobs.get("/session/whoami/").json()["user"] == str(bob.pk)


def test_end_user_sessions_takes_request_session_as_keep(engine, alice):
    client = logged_in(alice)
    logged_in(alice)
    assert django_memsession.end_user_sessions(alice, keep=engine.SessionStore(key_of(client))) == 1
    assert client.get("/session/whoami/").json()["user"] == str(alice.pk)


def test_end_session_ends_one_session_by_its_id(alice):
    first, second = logged_in(alice), logged_in(alice)
    assert django_memsession.end_session(alice, session_id(key_of(second))) == 1
    assert first.get("/session/whoami/").json()["user"] == str(alice.pk)
    assert second.get("/session/whoami/").json()["user"] is None


def test_an_id_of_another_users_session_ends_nothing(alice, bob, ended_signals, caplog):
    bobs = logged_in(bob, "bob password 1")
    logged_in(alice)
    with caplog.at_level(logging.INFO, logger="django_memsession"):
        assert django_memsession.end_session(alice, session_id(key_of(bobs))) == 0
    assert bobs.get("/session/whoami/").json()["user"] == str(bob.pk)
    assert (ended_signals, "Ended" in caplog.text) == ([], False)  # nothing ended, nothing said


def test_an_ending_is_logged_once_without_a_key_and_signalled(alice, bob, caplog, ended_signals):
    clients = [logged_in(alice), logged_in(alice)]
    with caplog.at_level(logging.INFO, logger="django_memsession"):
        django_memsession.end_user_sessions(alice, by=bob)
    (line,) = [r.getMessage() for r in caplog.records if "Ended" in r.getMessage()]
    assert line == f"Ended 2 session(s) of user {alice.pk} (ended) by user {bob.pk}."
    assert not any(key_of(client) in caplog.text for client in clients)
    assert ended_signals[-1] == {
        "sender": ended_signals[-1]["sender"],
        "user": str(alice.pk),
        "count": 2,
        "reason": "ended",
        "by": str(bob.pk),
    }


# -- password changes -----------------------------------------------------------------------------


@committed
def test_with_atomic_requests_the_others_end_at_the_commit_keeping_the_new_key(alice, monkeypatch):
    """ATOMIC_REQUESTS commits after the view, when update_session_auth_hash() has given the
    request's session a new key: that key is the one kept."""
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    changer, _ = logged_in(alice), logged_in(alice)  # and another session of hers
    response = changer.post("/accounts/password/", CHANGE_FORM)
    assert response.status_code == 302
    assert [r.id for r in django_memsession.user_sessions(alice)] == [session_id(key_of(changer))]
    assert changer.get(PAGE).status_code == 200


@committed
@pytest.mark.parametrize(
    "view",
    [
        "/password/hash-first/",  # update_session_auth_hash() before the save
        "/password/and-login/",  # login() with the new password
    ],
)
def test_a_view_that_keeps_its_session_in_another_way_keeps_it(alice, view):
    changer, _ = logged_in(alice), logged_in(alice)  # and another session of hers
    response = changer.post(view, {"password": "a new password 2"})
    assert response.status_code == 200
    assert [r.id for r in django_memsession.user_sessions(alice)] == [session_id(key_of(changer))]
    assert changer.get(PAGE).status_code == 200  # Django accepts it: it has the new hash


@committed
def test_a_password_reset_that_logs_in_keeps_the_new_session_and_ends_the_others(alice):
    logged_in(alice), logged_in(alice)
    alice.refresh_from_db()  # the reset token covers the last login
    browser = Client()
    uid = urlsafe_base64_encode(force_bytes(alice.pk))
    token = default_token_generator.make_token(alice)
    form = browser.get(f"/accounts/reset/{uid}/{token}/")  # to the URL without the token
    response = browser.post(
        form["Location"], {"new_password1": "reset 5 pw", "new_password2": "reset 5 pw"}
    )
    assert response.status_code == 302
    assert [r.id for r in django_memsession.user_sessions(alice)] == [session_id(key_of(browser))]
    assert browser.get(PAGE).status_code == 200


@committed
def test_a_view_that_keeps_no_session_answers_and_its_session_ends_when_django_rejects_it(alice):
    """Without update_session_auth_hash() the request's own session keeps the old hash: it is
    kept (ending it would make the response's save of it a 400), and Django rejects it on its
    next request, which ends it."""
    changer, _ = logged_in(alice), logged_in(alice)  # and another session of hers
    response = changer.post("/password/only/", {"password": "a new password 2"})
    assert response.status_code == 200
    assert [r.id for r in django_memsession.user_sessions(alice)] == [session_id(key_of(changer))]
    assert changer.get(PAGE).status_code == 302  # rejected by Django: to the login page
    assert django_memsession.user_sessions(alice) == []


@committed
def test_a_password_change_rolled_back_ends_nothing(alice):
    logged_in(alice), logged_in(alice)
    changer = logged_in(alice)
    response = changer.post("/password/rolled-back/", {"password": "a new password 2"})
    assert response.status_code == 200
    assert len(django_memsession.user_sessions(alice)) == 3


async def asgi_post(path: str, data: dict[str, str], client: Client) -> tuple[int, str | None]:
    """POST through Django's own ASGIHandler, as uvicorn or daphne call it (the test clients
    run a request's parts on other threads than a server does); the status, and the session
    cookie it set, if any."""
    body = urlencode(data).encode()
    cookie = f"sessionid={key_of(client)}".encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
            (b"cookie", cookie),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()  # no disconnect: the handler cancels this wait
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    await ASGIHandler()(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    cookies = SimpleCookie()
    for name, value in start["headers"]:
        if name.lower() == b"set-cookie":
            cookies.load(value.decode())
    new_key = cookies["sessionid"].value if "sessionid" in cookies else None
    return start["status"], new_key


@pytest.mark.skipif(django.VERSION < (5, 0), reason="aupdate_session_auth_hash is Django 5.0+")
@committed
async def test_an_async_password_change_keeps_this_session_and_ends_the_others(alice):
    changer = await sync_to_async(logged_in)(alice)
    await sync_to_async(logged_in)(alice)  # another session of hers
    status, new_key = await asgi_post("/password/async/", {"password": "a new password 2"}, changer)
    assert status == 200
    records = await sync_to_async(django_memsession.user_sessions)(alice)
    assert [r.id for r in records] == [session_id(new_key)]


@committed
async def test_a_password_saved_on_another_thread_keeps_this_session_for_the_response(alice):
    """The save runs on a thread that is not the request's (thread_sensitive=False): the
    request's session is still known there, kept, and saved after the view (no 400)."""
    changer = await sync_to_async(logged_in)(alice)
    await sync_to_async(logged_in)(alice)  # another session of hers
    status, _ = await asgi_post(
        "/password/another-thread/", {"password": "a new password 2"}, changer
    )
    assert status == 200
    records = await sync_to_async(django_memsession.user_sessions)(alice)
    assert [r.id for r in records] == [session_id(key_of(changer))]


@committed
def test_a_password_set_outside_a_request_ends_every_session(alice):
    logged_in(alice), logged_in(alice)
    alice.set_password("set in the shell 3")
    alice.save()
    assert django_memsession.user_sessions(alice) == []


@committed
def test_a_password_set_by_an_admin_ends_only_that_users_sessions(alice, bob):
    logged_in(alice)
    admins = logged_in(bob, "bob password 1")
    User.objects.filter(pk=bob.pk).update(is_staff=True, is_superuser=True)
    response = admins.post(
        f"/admin/auth/user/{alice.pk}/password/",
        {"password1": "chosen by bob 4", "password2": "chosen by bob 4", "usable_password": "true"},
    )
    assert response.status_code == 302, response.content
    assert django_memsession.user_sessions(alice) == []
    assert len(django_memsession.user_sessions(bob)) == 1


@committed
def test_an_admin_changing_their_own_password_keeps_their_session(bob):
    admins, _ = logged_in(bob, "bob password 1"), logged_in(bob, "bob password 1")
    User.objects.filter(pk=bob.pk).update(is_staff=True, is_superuser=True)
    response = admins.post(
        f"/admin/auth/user/{bob.pk}/password/",
        {"password1": "own new 4 pw", "password2": "own new 4 pw", "usable_password": "true"},
    )
    assert response.status_code == 302, response.content
    assert [r.id for r in django_memsession.user_sessions(bob)] == [session_id(key_of(admins))]


@committed
def test_a_save_that_does_not_change_the_password_ends_nothing(alice):
    logged_in(alice)
    alice.first_name = "Alice"
    alice.save()
    assert len(django_memsession.user_sessions(alice)) == 1


@committed
@override_settings(MEMSESSION_END_SESSIONS_ON_PASSWORD_CHANGE=False)
def test_ending_on_password_change_can_be_turned_off(alice):
    logged_in(alice)
    alice.set_password("set in the shell 3")
    alice.save()
    assert len(django_memsession.user_sessions(alice)) == 1


# -- clients --------------------------------------------------------------------------------------


def test_clients_are_not_tracked_by_default(alice):
    logged_in(alice, HTTP_USER_AGENT=UA, REMOTE_ADDR="203.0.113.5")
    (record,) = django_memsession.user_sessions(alice)
    assert (record.ip, record.user_agent) == (None, None)


@override_settings(MEMSESSION_TRACK_CLIENTS=True)
def test_the_client_is_noted_at_login(alice):
    logged_in(alice, HTTP_USER_AGENT=UA + "x" * 500, REMOTE_ADDR="203.0.113.5")
    (record,) = django_memsession.user_sessions(alice)
    assert record.ip == "203.0.113.5"
    assert record.user_agent == (UA + "x" * 500)[:200]


@override_settings(MEMSESSION_TRACK_CLIENTS=True, MEMSESSION_CLIENT_IP="HTTP_X_FORWARDED_FOR")
def test_behind_a_proxy_the_address_the_proxy_saw_is_noted(alice):
    logged_in(alice, HTTP_X_FORWARDED_FOR="10.9.9.9, 198.51.100.7", REMOTE_ADDR="127.0.0.1")
    assert django_memsession.user_sessions(alice)[0].ip == "198.51.100.7"


def test_a_change_of_address_is_noted_by_the_middleware(alice, settings):
    settings.MEMSESSION_TRACK_CLIENTS = True
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django_memsession.clients.TrackClientsMiddleware"]
    client = logged_in(alice, REMOTE_ADDR="203.0.113.5")
    client.get("/session/whoami/", REMOTE_ADDR="203.0.113.99")
    assert django_memsession.user_sessions(alice)[0].ip == "203.0.113.99"


# -- the user's page ------------------------------------------------------------------------------


def test_anonymous_visitors_go_to_the_login_url(client):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={PAGE}"


@override_settings(MEMSESSION_TRACK_CLIENTS=True)
def test_the_page_lists_the_users_sessions_marks_this_one_and_shows_no_key(alice, bob):
    mine = logged_in(alice, HTTP_USER_AGENT=UA)
    other = logged_in(alice)
    bobs = logged_in(bob, "bob password 1")
    html = mine.get(PAGE).content.decode()
    assert html.count('class="memsession-session') == 2
    assert f'memsession-current" data-session="{session_id(key_of(mine))}"' in html
    assert "Firefox on Linux" in html
    assert session_id(key_of(bobs)) not in html
    assert not any(key_of(c) in html for c in (mine, other, bobs))


def test_ending_another_users_session_is_a_404_and_ends_nothing(alice, bob):
    bobs = logged_in(bob, "bob password 1")
    mine = logged_in(alice)
    response = mine.post(PAGE, {"session": session_id(key_of(bobs))})
    assert response.status_code == 404
    assert bobs.get("/session/whoami/").json()["user"] == str(bob.pk)


def test_a_user_ends_one_of_their_other_sessions(alice):
    mine, other = logged_in(alice), logged_in(alice)
    response = mine.post(PAGE, {"session": session_id(key_of(other))})
    assert (response.status_code, response["Location"]) == (302, PAGE)
    assert other.get("/session/whoami/").json()["user"] is None
    assert mine.get("/session/whoami/").json()["user"] == str(alice.pk)


def test_log_out_all_other_sessions(alice):
    mine, others = logged_in(alice), [logged_in(alice), logged_in(alice)]
    mine.post(PAGE, {"action": "others"})
    assert [c.get("/session/whoami/").json()["user"] for c in others] == [None, None]
    assert "Logged out 2 other session(s)." in mine.get(PAGE).content.decode()


def test_ending_this_session_logs_out(alice):
    mine = logged_in(alice)
    mine.post(PAGE, {"session": session_id(key_of(mine))})
    assert mine.get("/session/whoami/").json()["user"] is None


def test_ending_needs_a_csrf_token(alice):
    other = logged_in(alice)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post(PAGE, {"action": "others"}).status_code == 403
    assert other.get("/session/whoami/").json()["user"] == str(alice.pk)


@pytest.mark.parametrize("action", ["others", "one"])
def test_ending_needs_a_csrf_token_without_the_csrf_middleware(alice, settings, action):
    # Some API-first sites remove CsrfViewMiddleware: the page protects itself.
    settings.MIDDLEWARE = [
        name for name in settings.MIDDLEWARE if name != "django.middleware.csrf.CsrfViewMiddleware"
    ]
    other = logged_in(alice)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    data = {"action": "others"} if action == "others" else {"session": session_id(key_of(other))}
    assert strict.post(PAGE, data).status_code == 403
    assert other.get("/session/whoami/").json()["user"] == str(alice.pk)


def test_the_page_still_takes_a_valid_token_without_the_csrf_middleware(alice, settings):
    settings.MIDDLEWARE = [
        name for name in settings.MIDDLEWARE if name != "django.middleware.csrf.CsrfViewMiddleware"
    ]
    other = logged_in(alice)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    html = strict.get(PAGE).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert strict.post(PAGE, {"action": "others", "csrfmiddlewaretoken": token}).status_code == 302
    assert other.get("/session/whoami/").json()["user"] is None


# -- the admin ------------------------------------------------------------------------------------


def test_staff_find_a_user_by_username_and_see_their_sessions(alice):
    logged_in(alice), logged_in(alice)
    client = staff("view_stats")
    html = client.get(USER_URL, {"q": "alice"}).content.decode()
    assert "2 live session(s) of alice" in html
    assert 'value="End"' not in html  # viewing needs no change permission; ending does


def test_staff_find_a_user_by_primary_key(alice):
    logged_in(alice)
    html = staff("view_stats").get(USER_URL, {"q": str(alice.pk)}).content.decode()
    assert "1 live session(s) of alice" in html


def test_staff_with_change_permission_end_one_session(alice):
    first, second = logged_in(alice), logged_in(alice)
    client = staff("change_stats")
    client.post(END_URL, {"user": alice.pk, "session": session_id(key_of(second))})
    assert first.get("/session/whoami/").json()["user"] == str(alice.pk)
    assert second.get("/session/whoami/").json()["user"] is None


def test_staff_with_change_permission_end_all_sessions(alice):
    clients = [logged_in(alice), logged_in(alice)]
    staff("change_stats").post(END_URL, {"user": alice.pk})
    assert [c.get("/session/whoami/").json()["user"] for c in clients] == [None, None]


def test_ending_needs_the_change_permission(alice):
    mine = logged_in(alice)
    assert staff("view_stats").post(END_URL, {"user": alice.pk}).status_code == 403
    assert mine.get("/session/whoami/").json()["user"] == str(alice.pk)


def test_log_out_everywhere_on_the_admin_user_list(admin_client, alice, bob):
    clients = [logged_in(alice), logged_in(bob, "bob password 1")]
    response = admin_client.post(
        "/admin/auth/user/",
        {"action": "logout_everywhere", "_selected_action": [alice.pk, bob.pk]},
    )
    assert response.status_code == 302
    assert [c.get("/session/whoami/").json()["user"] for c in clients] == [None, None]
    assert admin_client.get("/admin/").status_code == 200  # the admin is still logged in


# -- written once for both engines ----------------------------------------------------------------


def test_login_cycles_the_key_and_the_index_follows(engine, alice):
    request = RequestFactory().get("/")
    request.session = engine.SessionStore()
    request.session["cart"] = ["tea"]
    request.session.save()
    anonymous_key = request.session.session_key
    login(request, alice, backend="django.contrib.auth.backends.ModelBackend")
    request.session.save()
    (record,) = django_memsession.user_sessions(alice)
    assert record.id == session_id(request.session.session_key)
    assert request.session.session_key != anonymous_key
    assert not engine.SessionStore().exists(anonymous_key)


@committed
def test_a_password_change_keeps_this_session_and_ends_the_others_at_once(engine, alice):
    changer, other = logged_in(alice), logged_in(alice)
    response = changer.post("/accounts/password/", CHANGE_FORM)
    assert response.status_code == 302
    # The other session left the store before it came back (Django would reject it only then).
    assert [r.id for r in django_memsession.user_sessions(alice)] == [session_id(key_of(changer))]
    assert not engine.SessionStore().exists(key_of(other))
    assert whoami(changer) == str(alice.pk)
    assert changer.get(PAGE).status_code == 200  # Django accepts it: it has the new hash
