"""Small views the tests drive over HTTP: make a session, read one, report the process's store."""

from __future__ import annotations

import os
from collections.abc import Callable

from django.http import HttpRequest, JsonResponse

import django_memsession

# Set by a test: runs in the middle of ``step``, after the session is loaded and before the view
# changes it (and SessionMiddleware saves it), as another request would in a threaded server.
between_load_and_save: Callable[[str], None] | None = None


def make_session(request: HttpRequest) -> JsonResponse:
    """Store a session with ``?expiry=<seconds>`` (default: the cookie age) and some data."""
    request.session["visits"] = request.session.get("visits", 0) + 1
    request.session["cart"] = [{"sku": "tea", "qty": 1}]
    if "expiry" in request.GET:
        request.session.set_expiry(int(request.GET["expiry"]))
    return JsonResponse({"pid": os.getpid(), "visits": request.session["visits"]})


def read_session(request: HttpRequest) -> JsonResponse:
    """Read the session, change nothing (what a page that shows the cart does)."""
    return JsonResponse({"visits": request.session.get("visits")})


def step(request: HttpRequest) -> JsonResponse:
    """Load the session, let the test interfere, then change it."""
    visits = request.session.get("visits", 0)
    if between_load_and_save is not None:
        between_load_and_save(request.session.session_key)
    request.session["visits"] = visits + 1
    return JsonResponse({"visits": visits + 1})


def store_blob(request: HttpRequest) -> JsonResponse:
    """Put ``?size=<n>`` characters into the session."""
    request.session["blob"] = "b" * int(request.GET["size"])
    return JsonResponse({"stored": True})


def store_stats(request: HttpRequest) -> JsonResponse:
    """This process's figures (touches the store, never a session)."""
    return JsonResponse(django_memsession.stats())
