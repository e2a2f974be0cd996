"""Floods of anonymous sessions do not evict logged-in users (expressjs/session#128, Django
CVE-2015-5143): new sessions wait in a probation segment that is evicted first."""

from __future__ import annotations

import pytest
from django.test import override_settings

from django_memsession import SessionStore, stats

AUTH = {
    "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
    "_auth_user_hash": "0f3b5c1d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c",
}


def log_in(user_id: int) -> str:
    session = SessionStore()
    session.update({**AUTH, "_auth_user_id": str(user_id), "cart": ["tea"]})
    session.save()
    return session.session_key


def anonymous_visits(count: int) -> None:
    """``count`` new visitors, each given a session (a CSRF token, a language choice...)."""
    for _ in range(count):
        session = SessionStore()
        session["django_language"] = "en"
        session.save()


@pytest.mark.heavy
@override_settings(MEMSESSION_MAX_SIZE="2M")
def test_a_million_anonymous_sessions_do_not_evict_a_thousand_logged_in_users():
    keys = [log_in(user_id) for user_id in range(1000)]
    anonymous_visits(1_000_000)
    assert stats()["evictions"] > 900_000
    logged_in = [SessionStore(key).get("_auth_user_id") for key in keys]
    assert logged_in == [str(user_id) for user_id in range(1000)]


@override_settings(MEMSESSION_MAX_SIZE="256K")
def test_anonymous_sessions_do_not_evict_logged_in_users_while_those_fit():
    keys = [log_in(user_id) for user_id in range(100)]
    anonymous_visits(20_000)
    assert stats()["evictions"] > 15_000
    assert all(SessionStore(key).get("_auth_user_id") for key in keys)
