"""Small views the tests drive over HTTP: make a session, report the process's store."""

from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse

import django_memsession


def make_session(request: HttpRequest) -> JsonResponse:
    """Store a session with ``?expiry=<seconds>`` (default: the cookie age) and some data."""
    request.session["visits"] = request.session.get("visits", 0) + 1
    request.session["cart"] = [{"sku": "tea", "qty": 1}]
    if "expiry" in request.GET:
        request.session.set_expiry(int(request.GET["expiry"]))
    return JsonResponse({"pid": os.getpid(), "visits": request.session["visits"]})


def store_stats(request: HttpRequest) -> JsonResponse:
    """This process's figures (touches the store, never a session)."""
    return JsonResponse(django_memsession.stats())
