"""Every bad ``MEMSESSION_*`` setting is a system-check error that says what to write instead,
and the same text stops the store from being built where checks never run."""

from __future__ import annotations

import ast
import os
import re
import threading
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

import django_memsession
from django_memsession import conf
from django_memsession.checks import check_settings
from django_memsession.conf.memory import MemsessionSettings
from django_memsession.conf.redis import RedisSettings


def ids() -> list[str]:
    return [message.id for message in check_settings()]


def test_default_settings_pass():
    assert check_settings() == []


@pytest.mark.parametrize("value", ["64X", "-1M", 0, -5, "lots", True, None, "1.2.3G"])
def test_max_size_that_does_not_parse_is_e001(value):
    with override_settings(MEMSESSION_MAX_SIZE=value):
        assert ids() == ["memsession.E001"]


@pytest.mark.parametrize("value", ["4M", "512k", "64MiB", "1g", "64MB", "1.5G", 1048576, "2 M"])
def test_max_size_spellings_are_accepted(value):
    with override_settings(MEMSESSION_MAX_SIZE=value):
        assert ids() == []


def test_max_size_error_says_what_to_write():
    with override_settings(MEMSESSION_MAX_SIZE="64X"):
        (message,) = check_settings()
    assert "'64M'" in message.hint


def test_bad_max_session_size_is_e002():
    with override_settings(MEMSESSION_MAX_SESSION_SIZE="big"):
        assert ids() == ["memsession.E002"]


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, "0.5", None, float("nan")])
def test_low_water_outside_zero_one_is_e003(value):
    with override_settings(MEMSESSION_LOW_WATER=value):
        assert ids() == ["memsession.E003"]


@pytest.mark.parametrize("cap", ["2M", "1M", "513K"])
def test_session_cap_above_half_the_budget_is_e004(cap):
    with override_settings(MEMSESSION_MAX_SIZE="1M", MEMSESSION_MAX_SESSION_SIZE=cap):
        assert ids() == ["memsession.E004"]


def test_session_cap_of_half_the_budget_is_accepted():
    with override_settings(MEMSESSION_MAX_SIZE="1M", MEMSESSION_MAX_SESSION_SIZE="512K"):
        assert ids() == []


@pytest.mark.parametrize(
    "value", [-1, "60", float("inf"), 0.2, 0.999, threading.TIMEOUT_MAX * 2, 10**12]
)
def test_bad_prune_interval_is_e005(value):
    """Negative, not a number, a busy loop (under 1 s), or longer than a thread can wait (a
    pruner thread with that interval would die on its first wait)."""
    with override_settings(MEMSESSION_PRUNE_INTERVAL=value):
        assert ids() == ["memsession.E005"]


@pytest.mark.parametrize("value", [0, None, 1, 60, 86400.5])
def test_prune_interval_off_or_sensible_is_accepted(value):
    with override_settings(MEMSESSION_PRUNE_INTERVAL=value):
        assert ids() == []


def test_control_not_a_bool_is_e006():
    with override_settings(MEMSESSION_CONTROL="yes"):
        assert ids() == ["memsession.E006"]


@pytest.mark.parametrize("value", ["", "run/memsession", "./sockets", 42])
def test_control_dir_not_an_absolute_path_is_e007(value):
    with override_settings(MEMSESSION_CONTROL_DIR=value):
        assert ids() == ["memsession.E007"]


@pytest.mark.parametrize("value", ["1K", "63K", 4096])
def test_max_size_too_small_to_hold_sessions_is_e008(value):
    with override_settings(MEMSESSION_MAX_SIZE=value):
        assert ids() == ["memsession.E008"]


@pytest.mark.parametrize("value", [100, "512", "1023"])
def test_max_session_size_too_small_for_a_logged_in_session_is_e009(value):
    """Below 1 KiB every save of a logged-in session would be a 400."""
    with override_settings(MEMSESSION_MAX_SESSION_SIZE=value):
        assert ids() == ["memsession.E009"]


def test_the_smallest_accepted_settings_hold_a_logged_in_session():
    from django_memsession import SessionStore

    with override_settings(MEMSESSION_MAX_SIZE="64K", MEMSESSION_MAX_SESSION_SIZE="1K"):
        assert ids() == []
        session = SessionStore()
        session.update(
            {
                "_auth_user_id": "123456",
                "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
                "_auth_user_hash": "0" * 64,
            }
        )
        session.save()
        assert SessionStore(session.session_key).load()["_auth_user_id"] == "123456"


def test_manage_py_check_fails_on_a_bad_setting():
    with override_settings(MEMSESSION_LOW_WATER=2), pytest.raises(SystemCheckError) as excinfo:
        call_command("check")
    assert "memsession.E003" in str(excinfo.value)


def test_building_the_store_with_a_bad_setting_raises_the_same_text():
    with override_settings(MEMSESSION_MAX_SIZE="64X"):
        with pytest.raises(ImproperlyConfigured) as excinfo:
            conf.limits()
        (message,) = check_settings()
    assert message.msg in str(excinfo.value)
    assert "memsession.E001" in str(excinfo.value)


def test_default_session_cap_fits_a_small_budget():
    with override_settings(MEMSESSION_MAX_SIZE="1M"):
        assert conf.limits().max_session_bytes == 1024 * 1024 // 8


@pytest.mark.parametrize(
    "environ",
    [
        {"WEB_CONCURRENCY": "4"},
        {"GUNICORN_CMD_ARGS": "--bind 127.0.0.1:8000 --workers 3"},
        {"GUNICORN_CMD_ARGS": "-w 2"},
    ],
)
def test_several_workers_in_the_environment_are_a_warning(monkeypatch, environ):
    from django_memsession.checks import check_deployment

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert [message.id for message in check_deployment()] == ["memsession.W001"]


@pytest.mark.parametrize(
    "environ",
    [{}, {"WEB_CONCURRENCY": "1"}, {"GUNICORN_CMD_ARGS": "--workers 1 --threads 8"}],
)
def test_one_worker_is_no_warning(monkeypatch, environ):
    from django_memsession.checks import check_deployment

    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert check_deployment() == []


@pytest.mark.parametrize("value", ["sessions.snapshot", "./var/s", 42, ""])
def test_snapshot_path_not_absolute_is_e010(value):
    with override_settings(MEMSESSION_SNAPSHOT_PATH=value):
        assert ids() == ["memsession.E010"]


def test_snapshot_path_in_a_missing_directory_is_e011(tmp_path):
    with override_settings(MEMSESSION_SNAPSHOT_PATH=str(tmp_path / "nowhere" / "s.snapshot")):
        assert ids() == ["memsession.E011"]


def test_snapshot_directory_writable_by_others_is_e011(tmp_path):
    """The snapshot holds session keys: nobody else may replace or remove it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with override_settings(MEMSESSION_SNAPSHOT_PATH=str(shared / "s.snapshot")):
        (message,) = check_settings()
    assert message.id == "memsession.E011"
    assert "chmod go-w" in message.hint


def test_a_private_snapshot_directory_is_accepted(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with override_settings(MEMSESSION_SNAPSHOT_PATH=str(private / "s.snapshot")):
        assert ids() == []


@pytest.mark.parametrize("value", [-1, 0.5, "300", float("nan"), threading.TIMEOUT_MAX * 2])
def test_bad_snapshot_interval_is_e012(value):
    with override_settings(MEMSESSION_SNAPSHOT_INTERVAL=value):
        assert ids() == ["memsession.E012"]


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory to another user needs root")
def test_snapshot_directory_owned_by_another_user_is_e011(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, -1)
    with override_settings(MEMSESSION_SNAPSHOT_PATH=str(theirs / "s.snapshot")):
        (message,) = check_settings()
    assert message.id == "memsession.E011"
    assert "belongs to another user" in message.msg


# -- who is logged in ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 1.5, "100", True])
def test_bad_session_cap_is_e013(value):
    with override_settings(MEMSESSION_MAX_SESSIONS=value):
        assert ids() == ["memsession.E013"]


@pytest.mark.parametrize("value", [0, "5", 2.0, False])
def test_bad_per_user_limit_is_e014(value):
    with override_settings(MEMSESSION_MAX_SESSIONS_PER_USER=value):
        assert ids() == ["memsession.E014"]


def test_session_limits_as_counts_are_accepted():
    with override_settings(MEMSESSION_MAX_SESSIONS=100_000, MEMSESSION_MAX_SESSIONS_PER_USER=1):
        assert ids() == []
        assert (conf.limits().max_sessions, conf.limits().max_sessions_per_user) == (100_000, 1)


def test_track_clients_not_a_bool_is_e015():
    with override_settings(MEMSESSION_TRACK_CLIENTS="yes"):
        assert ids() == ["memsession.E015"]


@pytest.mark.parametrize(
    "value", ["X-Forwarded-For", "", 42, "no.such.module.func", "django.conf.settings.DEBUG"]
)
def test_bad_client_ip_source_is_e016_with_a_hint(value):
    with override_settings(MEMSESSION_CLIENT_IP=value):
        (message,) = check_settings()
    assert message.id == "memsession.E016"
    assert "HTTP_X_FORWARDED_FOR" in message.hint


@pytest.mark.parametrize(
    "value", [None, "REMOTE_ADDR", "HTTP_X_FORWARDED_FOR", "django_memsession.clients.remote_addr"]
)
def test_client_ip_sources_are_accepted(value):
    with override_settings(MEMSESSION_CLIENT_IP=value):
        assert ids() == []


def test_end_sessions_on_password_change_not_a_bool_is_e017():
    with override_settings(MEMSESSION_END_SESSIONS_ON_PASSWORD_CHANGE=1):
        assert ids() == ["memsession.E017"]


@pytest.mark.parametrize("value", [1, "no", None])
def test_merge_saves_not_a_bool_is_e018(value):
    with override_settings(MEMSESSION_MERGE_SAVES=value):
        assert ids() == ["memsession.E018"]


def test_merge_saves_not_a_bool_stops_the_memory_store_being_built():
    with override_settings(MEMSESSION_MERGE_SAVES="yes"), pytest.raises(ImproperlyConfigured):
        conf.limits()


# -- the snapshot file as a server would find it ------------------------------------------------


@pytest.fixture
def snapshot_path(tmp_path, monkeypatch):
    """A snapshot path in a private directory, set; no worker count in the environment."""
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    directory = tmp_path / "private"
    directory.mkdir(mode=0o700)
    path = directory / "s.snapshot"
    with override_settings(MEMSESSION_SNAPSHOT_PATH=str(path)):
        yield path


def snapshot_warning():
    from django_memsession.checks import check_deployment

    (message,) = check_deployment()
    assert message.id == "memsession.W003"
    return message


def test_a_private_snapshot_file_is_no_warning(snapshot_path):
    from django_memsession.checks import check_deployment

    snapshot_path.write_bytes(b"")
    snapshot_path.chmod(0o600)
    assert check_deployment() == []


def test_a_snapshot_file_others_may_read_is_w003_saying_chmod_600(snapshot_path):
    snapshot_path.write_bytes(b"")
    snapshot_path.chmod(0o644)
    message = snapshot_warning()
    assert "other users may read or write it (mode 0644)" in message.msg
    assert f"chmod 600 {snapshot_path}" in message.hint


def test_a_fifo_at_the_snapshot_path_is_w003(snapshot_path):
    os.mkfifo(snapshot_path, 0o600)
    message = snapshot_warning()
    assert "it is a FIFO, not a regular file" in message.msg
    assert f"remove {snapshot_path}" in message.hint


def test_a_symlink_at_the_snapshot_path_is_w003(snapshot_path):
    target = snapshot_path.with_name("real")
    target.write_bytes(b"")
    target.chmod(0o600)
    snapshot_path.symlink_to(target)
    assert "it is a symlink" in snapshot_warning().msg


def test_a_symlink_at_the_snapshot_lock_file_is_w003(snapshot_path):
    target = snapshot_path.with_name("real")
    target.write_bytes(b"")
    target.chmod(0o600)
    snapshot_path.with_name("s.snapshot.lock").symlink_to(target)
    message = snapshot_warning()
    assert "s.snapshot.lock will not be used: it is a symlink" in message.msg
    assert "no snapshots" in message.msg


# -- the README says what conf does -------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_settings() -> dict[str, list[str]]:
    """Each setting in the README's settings tables, with its default cells (a setting both
    engines read may have a row in each engine's table)."""
    found: dict[str, list[str]] = {}
    in_table = False
    for line in README.read_text().splitlines():
        if line.startswith("| setting | default |"):
            in_table = True
        elif in_table and line.startswith("| `"):
            name, default = (cell.strip() for cell in line.strip("|").split("|")[:2])
            found.setdefault(name.strip("`"), []).append(default)
        elif not line.startswith("|---"):
            in_table = False
    return found


def written_default(cell: str) -> object:
    """The Python value a default cell starts with: `"64M"`, `60`, `None` = 1 MiB ..."""
    match = re.match(r"`([^`]*)`", cell)
    assert match, cell
    return ast.literal_eval(match.group(1))


def test_the_readme_lists_every_setting_with_the_default_conf_gives_it():
    in_conf = {**MemsessionSettings.settings(), **RedisSettings.settings()}
    in_readme = readme_settings()
    assert sorted(in_readme) == sorted(in_conf)
    for name, cells in in_readme.items():
        for cell in cells:
            assert written_default(cell) == in_conf[name].default, name


def test_the_readme_gives_the_session_cap_that_none_means():
    memory, redis = readme_settings()["MEMSESSION_MAX_SESSION_SIZE"]
    assert conf.DEFAULT_MAX_SESSION_SIZE == 1024 * 1024
    assert memory == f"`None` = 1 MiB, or `MAX_SIZE / {conf.MAX_SESSION_SHARE}` if smaller"
    assert redis == "`None` = 1 MiB"


def test_the_readme_lists_every_check_id():
    in_code: set[str] = set()
    for path in Path(django_memsession.__file__).parent.rglob("*.py"):
        in_code.update(re.findall(r"memsession\.[EW][0-9]{3}", path.read_text()))
    in_readme = re.findall(r"^\| `(memsession\.[EW][0-9]{3})` \|", README.read_text(), re.M)
    assert sorted(in_readme) == sorted(in_code)
