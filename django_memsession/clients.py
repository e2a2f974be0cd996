"""The client of a logged-in session (IP address and user agent), noted when
``MEMSESSION_TRACK_CLIENTS`` is on: personal data, so off by default.

Taken from the request at login (Django's ``user_logged_in`` signal, connected in
``apps.ready``) and handed to the engine, which stores it with the session's next save; with
:class:`TrackClientsMiddleware` also whenever it changes. The store keeps it as one opaque text
(``"<ip>\\n<user agent>"``); it knows nothing of requests.

The IP address is ``REMOTE_ADDR`` unless ``MEMSESSION_CLIENT_IP`` names a header your proxy sets
(``"HTTP_X_FORWARDED_FOR"``: the last address in it, the one your own proxy saw, since everything
before it comes from the client and can be forged) or the dotted path of a function taking the
request and returning the address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from . import conf
from .engine import SessionStore

__all__ = [
    "MAX_USER_AGENT",
    "TrackClientsMiddleware",
    "client_ip",
    "client_text",
    "note_login",
    "remote_addr",
]

MAX_USER_AGENT = 200  # characters kept of a user agent
MAX_IP = 45  # the longest textual IPv6 address


def remote_addr(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR") or "")


def client_ip(request: HttpRequest) -> str:
    """The client's address as ``MEMSESSION_CLIENT_IP`` says to find it."""
    source = conf.conf.CLIENT_IP
    if source is None or source == "REMOTE_ADDR":
        return remote_addr(request)
    if source.startswith("HTTP_"):
        header = str(request.META.get(source) or "")
        # A proxy appends the address it saw: the last one is what the trusted proxy says.
        last = header.rsplit(",", 1)[-1].strip()
        return last or remote_addr(request)
    finder: Callable[[HttpRequest], Any] = import_string(source)
    return str(finder(request) or "")


def client_text(request: HttpRequest) -> str:
    """``"<ip>\\n<user agent>"``, each cut to its bound, with no line breaks inside."""
    address = client_ip(request).replace("\n", " ")[:MAX_IP]
    agent = str(request.META.get("HTTP_USER_AGENT") or "")
    agent = agent.replace("\r", " ").replace("\n", " ")[:MAX_USER_AGENT]
    return f"{address}\n{agent}"


def note_login(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """``user_logged_in``: the session saved at the end of this request carries the client."""
    if not conf.conf.TRACK_CLIENTS or request is None:
        return
    session = getattr(request, "session", None)
    if isinstance(session, SessionStore):
        session.client = client_text(request)


class TrackClientsMiddleware:
    """Notes a logged-in session's client when it changes (a new address, a browser update).

    Put it after ``SessionMiddleware``. With ``MEMSESSION_TRACK_CLIENTS`` off it does nothing;
    on, a logged-in request costs one look at the store (no save of the session).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        session = getattr(request, "session", None)
        if (
            conf.conf.TRACK_CLIENTS
            and isinstance(session, SessionStore)
            and session.session_key is not None
            and "_session_cache" in session.__dict__  # loaded by this request: no extra load
            and "_auth_user_id" in session._session_cache
        ):
            session.note_client(client_text(request))
        return response
