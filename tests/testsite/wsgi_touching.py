"""A WSGI entry point whose import uses the session store, as some apps do (a warm-up, a
``stats()`` at start): under gunicorn ``--preload`` the master then builds a store before it
forks its workers."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testsite.settings")

application = get_wsgi_application()

import django_memsession  # noqa: E402

django_memsession.stats()
