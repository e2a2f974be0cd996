"""Settings for the test suite (not the demo site: that is ``testproject``)."""

import json
import os
import tempfile

BASE_DIR = os.path.dirname(os.path.abspath(__file__))

SECRET_KEY = os.environ.get("MEMSESSION_TEST_SECRET_KEY", "memsession-tests-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_memsession",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "testsite.urls"

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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "MEMSESSION_TEST_DB", os.path.join(tempfile.gettempdir(), "memsession-tests.sqlite3")
        ),
    }
}

SESSION_ENGINE = "django_memsession"
USE_TZ = True
# Tests log users in and change passwords by the hundred: a fast hasher.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
STATIC_URL = "/static/"

# The suite must never meet a developer's running server: its own control directory.
MEMSESSION_CONTROL_DIR = os.environ.get(
    "MEMSESSION_CONTROL_DIR", os.path.join(tempfile.gettempdir(), f"memsession-tests-{os.getpid()}")
)

# The pruner thread is off in the suite (tests run passes themselves, with a fake clock); the
# real-server tests turn it on through the environment.
MEMSESSION_PRUNE_INTERVAL = float(os.environ.get("MEMSESSION_TEST_PRUNE_INTERVAL", "0"))

# The Redis engine, for the real-server tests that ask for it through the environment.
if os.environ.get("MEMSESSION_TEST_REDIS_URL"):
    SESSION_ENGINE = "django_memsession.redis"
    MEMSESSION_REDIS_URL = os.environ["MEMSESSION_TEST_REDIS_URL"]
    MEMSESSION_REDIS_NEAR_CACHE = os.environ.get("MEMSESSION_TEST_REDIS_NEAR_CACHE") or None
    # Under Sentinel: a JSON list of [host, port] pairs, and the URL names the service.
    MEMSESSION_REDIS_SENTINELS = json.loads(
        os.environ.get("MEMSESSION_TEST_REDIS_SENTINELS", "null")
    )
    # On a Redis Cluster (the URL names one of its nodes).
    MEMSESSION_REDIS_CLUSTER = os.environ.get("MEMSESSION_TEST_REDIS_CLUSTER") == "1"
    MIDDLEWARE = [
        "django_memsession.middleware.SessionMiddleware"
        if name == "django.contrib.sessions.middleware.SessionMiddleware"
        else name
        for name in MIDDLEWARE
    ]

# Snapshots, for the real-server tests that ask for them through the environment.
if os.environ.get("MEMSESSION_TEST_SESSION_MESSAGES"):
    # Django's messages in the session (the default keeps them in a cookie first).
    MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

if os.environ.get("MEMSESSION_TEST_SNAPSHOT_PATH"):
    MEMSESSION_SNAPSHOT_PATH = os.environ["MEMSESSION_TEST_SNAPSHOT_PATH"]
    MEMSESSION_SNAPSHOT_INTERVAL = float(os.environ.get("MEMSESSION_TEST_SNAPSHOT_INTERVAL", "0"))
