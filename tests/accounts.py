"""Users, logged-in browsers and staff the "who is logged in" tests share (a pytest plugin, see
``conftest.py``): the ``alice``, ``bob`` and ``ended_signals`` fixtures, and plain helpers."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from django_memsession.signals import user_sessions_ended

PAGE = "/account/sessions/"

# The sessions end when the password's save is committed (transaction.on_commit): tests of
# password changes run in autocommit, as a site does, not inside a test transaction that never
# commits.
committed = pytest.mark.django_db(transaction=True)

CHANGE_FORM = {
    "old_password": "old password 1",
    "new_password1": "a new password 2",
    "new_password2": "a new password 2",
}

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

USER_URL = "/admin/django_memsession/stats/users/"
END_URL = "/admin/django_memsession/stats/users/end/"


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="old password 1")


@pytest.fixture
def bob() -> User:
    return User.objects.create_user("bob", password="bob password 1")


@pytest.fixture
def ended_signals():
    received = []

    def receiver(**kwargs):
        received.append({k: v for k, v in kwargs.items() if k != "signal"})

    user_sessions_ended.connect(receiver)
    yield received
    user_sessions_ended.disconnect(receiver)


def logged_in(user: User, password: str = "old password 1", **extra: str) -> Client:
    """A browser that logged in through the login form (user_logged_in, cycle_key)."""
    client = Client(**extra)
    response = client.post("/accounts/login/", {"username": user.username, "password": password})
    assert response.status_code == 302, response.content
    return client


def key_of(client: Client) -> str:
    return client.cookies["sessionid"].value


def whoami(client: Client) -> str | None:
    return client.get("/session/whoami/").json()["user"]


def staff(*permissions: str) -> Client:
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client
