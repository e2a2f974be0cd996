"""Small views the tests drive over HTTP: make a session, read one, report the process's store."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth import get_user, get_user_model, login, update_session_auth_hash
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

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


def slow_step(request: HttpRequest) -> JsonResponse:
    """Load the session, wait ``?seconds=``, then change it: a request still running in an old
    worker while a graceful reload starts new ones."""
    visits = request.session.get("visits", 0)
    time.sleep(float(request.GET["seconds"]))
    request.session["visits"] = visits + 1
    return JsonResponse({"pid": os.getpid(), "visits": visits + 1})


def store_blob(request: HttpRequest) -> JsonResponse:
    """Put ``?size=<n>`` characters into the session."""
    request.session["blob"] = "b" * int(request.GET["size"])
    return JsonResponse({"stored": True})


# Two requests with ``?meet=1`` wait for each other here after loading the session and before
# changing it: both have loaded the same version, so one of the two saves is merged.
_meeting = threading.Barrier(2, timeout=10)


def _meet(request: HttpRequest) -> None:
    request.session.keys()  # loaded now
    if request.GET.get("meet"):
        _meeting.wait()


def add_to_cart(request: HttpRequest) -> JsonResponse:
    """Add ``?item=`` to the session's cart (what a shop's "add to cart" does)."""
    _meet(request)
    cart = request.session.get("cart", [])
    cart.append(request.GET["item"])
    request.session["cart"] = cart
    return JsonResponse({"items": len(cart)})


def post_message(request: HttpRequest) -> JsonResponse:
    """Store a Django message ``?text=`` for the next page (in the session with
    ``MEMSESSION_TEST_SESSION_MESSAGES``)."""
    _meet(request)
    messages.info(request, request.GET["text"])
    return JsonResponse({"posted": True})


def cart_and_messages(request: HttpRequest) -> JsonResponse:
    """The session's cart and its pending messages (which this shows, so they are used up)."""
    return JsonResponse(
        {
            "cart": request.session.get("cart", []),
            "messages": [message.message for message in messages.get_messages(request)],
        }
    )


def store_stats(request: HttpRequest) -> JsonResponse:
    """This process's figures (touches the store, never a session)."""
    return JsonResponse(django_memsession.stats())


@csrf_exempt
def sign_in(request: HttpRequest) -> JsonResponse:
    """What ``django.contrib.auth.login()`` does to the session, without a user table: a new key,
    and the user's id under Django's key (for real servers whose database the test cannot
    reach)."""
    request.session.cycle_key()
    request.session["_auth_user_id"] = request.GET.get("user", "1")
    return JsonResponse({"pid": os.getpid(), "user": request.session["_auth_user_id"]})


@csrf_exempt
def sign_out(request: HttpRequest) -> JsonResponse:
    """What ``django.contrib.auth.logout()`` does to the session: ``flush()`` (deleted)."""
    request.session.flush()
    return JsonResponse({"pid": os.getpid()})


def whoami(request: HttpRequest) -> JsonResponse:
    """The serving process, and what the session says (reads it, changes nothing)."""
    return JsonResponse(
        {
            "pid": os.getpid(),
            "user": request.session.get("_auth_user_id"),
            "visits": request.session.get("visits"),
        }
    )


# Password changes that do not go through Django's PasswordChangeView (see password.py): each
# takes ``password`` in the POST body and changes the signed-in user's password.


@csrf_exempt
def new_password_and_login(request: HttpRequest) -> JsonResponse:
    """A "reset and sign in" view: the new password, then ``login()`` with it (which flushes
    the stale session rather than cycling its key)."""
    user = request.user
    user.set_password(request.POST["password"])
    user.save()
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return JsonResponse({"user": str(user.pk)})


@csrf_exempt
def new_password_only(request: HttpRequest) -> JsonResponse:
    """The new password, without ``update_session_auth_hash()``, and a change to the session
    (a message, a flag) that SessionMiddleware saves after the view."""
    user = request.user
    user.set_password(request.POST["password"])
    user.save()
    request.session["password_changed"] = True
    return JsonResponse({"user": str(user.pk)})


async def new_password_async(request: HttpRequest) -> JsonResponse:
    """An async view: ``asave()`` and ``aupdate_session_auth_hash()`` (Django 5.0+)."""
    from django.contrib.auth import aupdate_session_auth_hash

    # aupdate_session_auth_hash() compares with request.user, which only a sync caller may load.
    user = request.user = await request.auser()
    user.set_password(request.POST["password"])
    await user.asave()
    await aupdate_session_auth_hash(request, user)
    return JsonResponse({"user": str(user.pk)})


@csrf_exempt
def new_password_hash_first(request: HttpRequest) -> JsonResponse:
    """``update_session_auth_hash()`` before the save (the instance has the new hash already)."""
    user = request.user
    user.set_password(request.POST["password"])
    update_session_auth_hash(request, user)
    user.save()
    return JsonResponse({"user": str(user.pk)})


@csrf_exempt
def new_password_rolled_back(request: HttpRequest) -> JsonResponse:
    """The new password saved in a transaction that then rolls back: no password changed."""
    try:
        with transaction.atomic():
            user = get_user_model().objects.get(pk=request.user.pk)
            user.set_password(request.POST["password"])
            user.save()
            raise RuntimeError("what else the form saves failed")
    except RuntimeError:
        pass
    return JsonResponse({"user": str(request.user.pk)})


async def new_password_on_another_thread(request: HttpRequest) -> JsonResponse:
    """The save on a thread of its own (not the request's), then a change to the session
    (which SessionMiddleware saves after the view), no update_session_auth_hash()."""
    user = await sync_to_async(get_user)(request)  # request.auser() is Django 5.0+
    user.set_password(request.POST["password"])
    await sync_to_async(user.save, thread_sensitive=False)()
    await sync_to_async(request.session.__setitem__)("password_changed", True)
    return JsonResponse({"user": str(user.pk)})


# Django 4.2's csrf_exempt wraps a view in a sync function (an async view would return an
# unawaited coroutine); the mark it sets is all CsrfViewMiddleware reads.
new_password_async.csrf_exempt = True  # type: ignore[attr-defined]
new_password_on_another_thread.csrf_exempt = True  # type: ignore[attr-defined]
