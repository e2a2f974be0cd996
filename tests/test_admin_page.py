"""The admin stats page on the memory engine, through Django's test client: its figures, prune,
JSON. Where the page is and who may see it and prune, on every engine, is in
``test_contract_admin_page.py``."""

from __future__ import annotations

import dataclasses
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from django_memsession import SessionStore, runtime
from django_memsession import admin as stats_admin
from django_memsession.messages import Sample
from django_memsession.runtime import get_store

STATS_URL = "/admin/django_memsession/stats/"
PRUNE_URL = "/admin/django_memsession/stats/prune/"
JSON_URL = "/admin/django_memsession/stats/json/"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_control_dir(control_dir: str) -> None:
    """Every test has its own MEMSESSION_CONTROL_DIR: parallel runs never see each other."""


def staff_client(*permissions: str) -> Client:
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def make_sessions(count: int, expiry: int) -> None:
    for n in range(count):
        session = SessionStore()
        session["n"] = n
        session.set_expiry(expiry)
        session.save()


def test_the_url_is_the_models_changelist():
    assert reverse("admin:django_memsession_stats_changelist") == STATS_URL


def test_superusers_see_the_page(admin_client):
    response = admin_client.get(STATS_URL)
    assert response.status_code == 200
    assert response.templates[0].name == "django_memsession/stats.html"


def cell(html: str, pid: int, name: str) -> int:
    row = re.search(rf'<tr class="memsession-process" data-pid="{pid}">(.*?)</tr>', html, re.S)
    assert row, f"no row for pid {pid}"
    return int(re.search(rf'class="{name}" data-value="(\d+)"', row.group(1)).group(1))


def test_the_figures_on_the_page_are_the_snapshot_the_view_took(admin_client):
    make_sessions(3, expiry=3600)
    SessionStore("x" * 32).load()  # a miss
    response = admin_client.get(STATS_URL)
    html = response.content.decode()
    snapshot = response.context["processes"]
    assert len(snapshot) == 1
    row = snapshot[0]
    for name in ("entries", "bytes", "hits", "misses", "evictions", "expired"):
        assert cell(html, row["pid"], name) == row[name], name
    # The page's own request touched the store after the snapshot: live figures moved on.
    assert (
        get_store().stats()["hits"] + get_store().stats()["misses"] >= row["hits"] + row["misses"]
    )


def test_the_page_shows_the_budget_bar_and_the_pruner_state(admin_client):
    html = admin_client.get(STATS_URL).content.decode()
    assert 'class="memsession-bar"' in html
    assert 'class="low-water"' in html
    assert '<span class="pruner">off</span>' in html  # the suite runs without the thread


def test_history_is_plotted_as_inline_svg_once_there_are_two_samples(admin_client):
    from django_memsession import prune

    make_sessions(2, expiry=3600)
    prune()
    prune()
    html = admin_client.get(STATS_URL).content.decode()
    assert "<svg" in html and 'class="bytes" points="' in html
    assert "<script" not in html.split('id="content-main"')[1]


def test_the_plot_scales_bytes_to_the_budget():
    plot = stats_admin.history_plot(
        [Sample(time=0, entries=0, bytes=0), Sample(time=10, entries=5, bytes=1000)], 1000
    )
    first, last = plot["bytes_points"].split()
    assert float(first.split(",")[1]) == plot["bottom"]
    assert float(last.split(",")[1]) == plot["top"]
    assert float(last.split(",")[0]) == plot["right"]


def test_a_split_over_several_processes_is_warned_about(admin_client, monkeypatch):
    real = runtime.gather

    def two_processes(command="report", **kwargs):
        gathered = real(command, **kwargs)
        mine = gathered.processes[0]
        gathered.processes.append(dataclasses.replace(mine, pid=mine.pid + 1))
        return gathered

    monkeypatch.setattr(runtime, "gather", two_processes)
    html = admin_client.get(STATS_URL).content.decode()
    assert 'id="memsession-split-warning"' in html
    assert 'id="memsession-totals"' in html


def test_prune_now_removes_expired_sessions_and_reports_through_messages(
    global_clock, admin_client
):
    make_sessions(3, expiry=10)
    make_sessions(1, expiry=3600)
    global_clock.advance(11)
    before = get_store().stats()["entries"]  # the admin's own session counts too
    response = admin_client.post(PRUNE_URL, follow=True)
    texts = [str(message) for message in response.context["messages"]]
    assert response.redirect_chain == [(STATS_URL, 302)]
    assert get_store().stats()["entries"] == before - 3
    assert any(text.startswith("Pruned 1 process(es): removed 3 sessions") for text in texts)


def test_get_cannot_prune(global_clock, admin_client):
    make_sessions(2, expiry=10)
    global_clock.advance(11)
    before = get_store().stats()["entries"]
    assert admin_client.get(PRUNE_URL).status_code == 405
    assert get_store().stats()["entries"] == before


def test_prune_needs_the_change_permission(global_clock):
    viewer = staff_client("view_stats")
    make_sessions(2, expiry=10)
    global_clock.advance(11)
    before = get_store().stats()["entries"]
    assert viewer.post(PRUNE_URL).status_code == 403
    assert get_store().stats()["entries"] == before


def test_json_view_has_the_same_figures(admin_client):
    make_sessions(2, expiry=3600)
    entries = get_store().stats()["entries"]
    data = admin_client.get(JSON_URL).json()
    (process,) = data["processes"]
    assert (process["entries"], data["totals"]["entries"], data["split"]) == (
        entries,
        entries,
        False,
    )
    assert {"pid", "bytes", "max_bytes", "hits", "misses", "hit_ratio", "evictions"} <= set(process)


def test_the_last_snapshot_and_what_was_restored_are_shown_per_process(admin_client, monkeypatch):
    from django_memsession.messages import RestoreReport, SnapshotReport, SnapshotState

    real = runtime.gather

    def with_snapshot(command="report", **kwargs):
        gathered = real(command, **kwargs)
        state = SnapshotState(
            path="/var/lib/site/sessions.snapshot",
            owner=True,
            holder=None,
            interval=300.0,
            last=SnapshotReport(
                started_at=1.7e9, duration=0.0123, sessions=41, bytes=20480, reason="periodic"
            ),
            restored=RestoreReport(
                at=1.7e9,
                sessions=38,
                expired=2,
                journaled=1,
                left_out=0,
                duration=0.01,
                snapshot_started_at=1.7e9,
            ),
            failures=0,
        )
        gathered.processes[0] = dataclasses.replace(gathered.processes[0], snapshot=state)
        return gathered

    monkeypatch.setattr(runtime, "gather", with_snapshot)
    html = admin_client.get(STATS_URL).content.decode()
    data = admin_client.get(JSON_URL).json()
    assert "41 sessions (20.0\xa0KB) in 12.3 ms" in html
    assert "restored at start: 38 sessions (2 expired, 1 changed since" in html
    assert data["processes"][0]["snapshot"]["last"]["sessions"] == 41
