"""The page where a logged-in user sees their sessions and ends them.

``path("account/sessions/", include("django_memsession.urls"))`` is all a project adds. The page
extends ``django_memsession/base.html`` (a complete page of its own, so no project ``base.html``
is needed); a project overrides either template by name. Anonymous visitors go to
``settings.LOGIN_URL`` (``login_required``), no named URL required. Ending is a POST with
Django's CSRF token, and works without JavaScript. The view checks the token itself
(``csrf_protect``): a site that removed ``CsrfViewMiddleware`` (an API-first one) must not get a
page that ends sessions on a forged POST. The page names sessions by their opaque ids
only; an id that is not one of this user's sessions is a 404, and nothing ends.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods

from . import everywhere
from .logged_in import session_id
from .messages import UserSession

__all__ = ["device", "session_row", "sessions_view"]

_BROWSERS = (
    ("Edge", re.compile(r"Edg(e|A|iOS)?/")),
    ("Opera", re.compile(r"OPR/|Opera")),
    ("Firefox", re.compile(r"Firefox/|FxiOS/")),
    ("Chrome", re.compile(r"Chrome/|CriOS/|Chromium/")),
    ("Safari", re.compile(r"Safari/")),
    ("curl", re.compile(r"^curl/")),
)
_SYSTEMS = (
    ("iPhone", re.compile(r"iPhone")),
    ("iPad", re.compile(r"iPad")),
    ("Android", re.compile(r"Android")),
    ("Windows", re.compile(r"Windows")),
    ("macOS", re.compile(r"Mac OS X|Macintosh")),
    ("ChromeOS", re.compile(r"CrOS")),
    ("Linux", re.compile(r"Linux")),
)


def device(user_agent: str | None) -> str | None:
    """ "Firefox on Linux", from a user agent (None when none was noted)."""
    if not user_agent:
        return None
    browser = next((name for name, pattern in _BROWSERS if pattern.search(user_agent)), None)
    system = next((name for name, pattern in _SYSTEMS if pattern.search(user_agent)), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown device"


def _when(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def session_row(record: UserSession, current: str | None) -> dict[str, Any]:
    """One session, shaped for the templates (the user's page and the admin's)."""
    return {
        "id": record.id,
        "current": record.id == current,
        "device": device(record.user_agent),
        "ip": record.ip,
        "user_agent": record.user_agent,
        "created": _when(record.created),
        "last_used": _when(record.last_used),
        "expires": _when(record.expires),
        "pid": record.pid,
    }


def _current_id(request: HttpRequest) -> str | None:
    key = request.session.session_key
    return None if key is None else session_id(key)


@never_cache
@csrf_protect
@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def sessions_view(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _end(request)
    current = _current_id(request)
    rows = [session_row(record, current) for record in everywhere.user_sessions(request.user)]
    return render(
        request,
        "django_memsession/user_sessions.html",
        {"sessions": rows, "others": sum(not row["current"] for row in rows)},
    )


def _end(request: HttpRequest) -> HttpResponse:
    user = request.user
    if request.POST.get("action") == "others":
        ended = everywhere.end_user_sessions(user, keep=request.session, by=user)
        messages.success(request, f"Logged out {ended} other session(s).", fail_silently=True)
        return HttpResponseRedirect(request.path)
    chosen = request.POST.get("session", "")
    if chosen and chosen == _current_id(request):
        logout(request)  # this very session: a logout, which also ends it
        return HttpResponseRedirect(request.path)
    if not chosen or everywhere.end_session(user, chosen, by=user) == 0:
        raise Http404("No such session.")
    messages.success(request, "The session was logged out.", fail_silently=True)
    return HttpResponseRedirect(request.path)
