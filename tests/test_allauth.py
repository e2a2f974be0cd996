"""django-allauth's ``usersessions`` on this engine, one process: it lists a user's sessions
(``exists()`` and a load) and ends them (``delete()``) through the engine.

Runs where allauth is installed (the ``py311-django52`` tox environment), in a subprocess with
``testsite.settings_allauth`` (allauth's apps, middleware and table beside the suite's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from processes import TESTS_DIR

pytest.importorskip("allauth.usersessions", reason="django-allauth is not installed")

SCRIPT = """
import json
from django.contrib.auth.models import User
from django.test import Client
from allauth.usersessions.models import UserSession
import django_memsession

user = User.objects.create_user("alice", password="pw")
laptop, phone = Client(), Client()
for client in (laptop, phone):
    assert client.login(username="alice", password="pw")
    client.get("/session/whoami/")  # allauth's middleware records the session
listed = UserSession.objects.purge_and_list(user)
ours = django_memsession.user_sessions(user)
phone_row = UserSession.objects.get(session_key=phone.session.session_key)
phone_row.end()
after_end = {
    "phone": phone.get("/session/whoami/").json()["user"],
    "laptop": laptop.get("/session/whoami/").json()["user"],
    "listed": len(UserSession.objects.purge_and_list(user)),
    "ours": len(django_memsession.user_sessions(user)),
}
django_memsession.end_user_sessions(user)
print("RESULT " + json.dumps({
    "listed": len(listed),
    "ours": len(ours),
    "after_end": after_end,
    "after_ours": len(UserSession.objects.purge_and_list(user)),
}))
"""


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "django", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_allauth_usersessions_lists_and_ends_sessions_on_this_engine(
    tmp_path: Path, control_dir: str
) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testsite.settings_allauth",
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        "MEMSESSION_TEST_DB": str(tmp_path / "allauth.sqlite3"),
        "MEMSESSION_CONTROL_DIR": control_dir,
    }
    manage("migrate", "--no-input", env=env)
    output = manage("shell", "-c", SCRIPT, env=env).stdout
    (line,) = [line for line in output.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result == {
        "listed": 2,
        "ours": 2,
        "after_end": {"phone": None, "laptop": "1", "listed": 1, "ours": 1},
        "after_ours": 0,
    }
