"""A one-view Django site for the HTTP benchmark (settings, URLs and WSGI app in one module)."""

import os

from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path

SECRET_KEY = "benchmarks-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["django.contrib.sessions"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
ROOT_URLCONF = __name__
SESSION_ENGINE = os.environ.get("BENCH_SESSION_ENGINE", "django_memsession")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DB", "/tmp/memsession-bench-http.sqlite3"),
    }
}
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "OPTIONS": {"MAX_ENTRIES": 10_000_000},
    }
}
USE_TZ = True
MEMSESSION_CONTROL = False
MEMSESSION_PRUNE_INTERVAL = 0


def visit(request):
    """Load the session, change it, save it: a visit counter and a small cart."""
    request.session["visits"] = request.session.get("visits", 0) + 1
    request.session.setdefault("cart", [{"sku": "SKU-00001", "qty": 1}])
    return HttpResponse(f"visit {request.session['visits']}", content_type="text/plain")


urlpatterns = [path("", visit)]

_handler = None


def application(environ, start_response):
    """Django's WSGI handler, built on the first request (this module is also the settings)."""
    global _handler
    if _handler is None:
        _handler = get_wsgi_application()
    return _handler(environ, start_response)
