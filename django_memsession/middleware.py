"""``SessionMiddleware``: Django's, plus a 503 when the session store cannot answer.

A drop-in for ``django.contrib.sessions.middleware.SessionMiddleware``, in the same place in
``MIDDLEWARE``. When the engine raises
:class:`~django_memsession.redis.exceptions.SessionBackendUnavailable` (Redis down, hanging,
read-only, out of memory) — in the view, in another middleware, or while saving — the response
is a 503 with ``Retry-After``, with no ``Set-Cookie``: the user's cookie, and so their session,
is kept for when the store is back. One log line per outage, not one per request.

With the memory engine it behaves exactly as Django's. Importing it does not import redis.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.template import TemplateDoesNotExist, loader

from .redis.exceptions import SessionBackendUnavailable

__all__ = ["SessionMiddleware", "SessionUnavailableResponse"]

logger = logging.getLogger("django_memsession")


class SessionUnavailableResponse(HttpResponse):
    status_code = 503


class OutageLog:
    """One log line per outage, not one per request.

    An outage starts with a failure after ``interval`` seconds without any: that is logged. While
    failures go on, a reminder with their count is logged at most once per ``interval``.
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last_failure: float | None = None
        self._last_logged = 0.0
        self._failed = 0  # requests failed since the last line

    def failed(self, exc: SessionBackendUnavailable, retry_after: int) -> None:
        now = self.clock()
        with self._lock:
            starting = self._last_failure is None or now - self._last_failure >= self.interval
            self._last_failure = now
            self._failed += 1
            if not starting and now - self._last_logged < self.interval:
                return
            self._last_logged = now
            failed, self._failed = self._failed, 0
        if starting:
            logger.error(
                "Session store unavailable, answering 503 (Retry-After: %d s): %s",
                retry_after,
                exc.reason,
            )
        else:
            logger.error(
                "Session store still unavailable: %d requests answered 503 since the last "
                "message: %s",
                failed,
                exc.reason,
            )


outages = OutageLog()


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's ``SessionMiddleware``; an outage of the session store is a 503, not a logout."""

    #: Seconds, for the ``Retry-After`` header of the 503.
    retry_after = 5

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, SessionBackendUnavailable):
            return self.unavailable(request, exception)
        return None

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        session = getattr(request, "session", None)
        outage = getattr(session, "outage", None)
        if outage is not None and response.status_code >= 500:
            # Raised in the view (process_exception answered) or in another middleware (Django
            # made it a 500): either way, the store's outage is why.
            if isinstance(response, SessionUnavailableResponse):
                return response
            return self.unavailable(request, outage)
        try:
            return super().process_response(request, response)
        except SessionBackendUnavailable as exc:  # while saving
            return self.unavailable(request, exc)

    def unavailable(
        self, request: HttpRequest, exc: SessionBackendUnavailable
    ) -> SessionUnavailableResponse:
        """The 503: the project's ``503.html`` template if it has one (rendered without the
        request, whose context processors could touch the session again), else plain text."""
        outages.failed(exc, self.retry_after)
        try:
            body = loader.render_to_string("503.html")
            content_type = "text/html; charset=utf-8"
        except TemplateDoesNotExist:
            body = "Service temporarily unavailable. Please try again in a few seconds.\n"
            content_type = "text/plain; charset=utf-8"
        response = SessionUnavailableResponse(body, content_type=content_type)
        response["Retry-After"] = str(self.retry_after)
        response["Cache-Control"] = "no-store"
        # Django logs every 5xx response ("Service Unavailable: /path"); OutageLog has logged
        # this one, once per outage rather than once per request.
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response
