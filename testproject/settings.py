"""Settings for the django-memsession demo site.

Local development only: the secret key has a dev default, DEBUG defaults to on, and migrating
creates the well-known demo users ``admin``/``admin`` and ``demo``/``demo``.

Environment variables:

- ``DJANGO_SECRET_KEY``: the secret key (a dev-only default otherwise).
- ``DJANGO_DEBUG``: ``1``/``0`` (default ``1``).
- ``DEMO_DB_PATH``: where the SQLite file lives (default ``testproject/db.sqlite3``).
- ``DEMO_SESSION_ENGINE``: another session engine to compare with, e.g.
  ``django.contrib.sessions.backends.signed_cookies`` (default ``django_memsession``).
- ``MEMSESSION_CONTROL_DIR``: passed through to the engine when set (the test suite uses it to
  keep its demo processes apart from a developer's running server).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "django-insecure-memsession-demo-only-never-use-in-production"
)
DEBUG = _env_flag("DJANGO_DEBUG", default=True)
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_memsession",
    "testproject.shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"
WSGI_APPLICATION = "testproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Users, groups and the admin live in SQLite; sessions do not.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB_PATH", str(BASE_DIR / "db.sqlite3")),
    }
}

# --- Sessions -----------------------------------------------------------------------------------
SESSION_ENGINE = os.environ.get("DEMO_SESSION_ENGINE", "django_memsession")

# The store's memory budget: past it, the least recently used sessions are evicted. Small here so
# the demo (and a load test against it) can reach the limit.
MEMSESSION_MAX_SIZE = "16M"
# Seconds between two passes of the background pruner that removes expired sessions.
MEMSESSION_PRUNE_INTERVAL = 30

if "MEMSESSION_CONTROL_DIR" in os.environ:
    MEMSESSION_CONTROL_DIR = os.environ["MEMSESSION_CONTROL_DIR"]

# Sessions survive restarts (a runserver reload keeps the cart and the login): the store is
# written to a snapshot beside the database, in a directory only this user can enter (the file
# holds session keys), at exit and every minute, and read back when the server starts.
SNAPSHOT_DIR = Path(DATABASES["default"]["NAME"]).parent / "sessions"
SNAPSHOT_DIR.mkdir(mode=0o700, exist_ok=True)
MEMSESSION_SNAPSHOT_PATH = str(SNAPSHOT_DIR / "sessions.snapshot")
MEMSESSION_SNAPSHOT_INTERVAL = 60

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "shop:home"
LOGOUT_REDIRECT_URL = "shop:home"

# --- The rest -----------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Show what the engine reports on its ``django_memsession`` logger (INFO and up) on the console.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "simple": {"format": "{asctime} {levelname} {name}: {message}", "style": "{"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "simple"},
    },
    "loggers": {
        "django_memsession": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
