from typing import Any

from django.apps import AppConfig
from django.core import checks


def _forget_current_session(**kwargs: Any) -> None:
    """At each request's start and end: a WSGI thread serves many requests, and runs other
    code between them; none of them may keep the last request's session (see password.py).
    Under ASGI each request runs in its own copy of the server's context, which holds none, so
    that Django 5+ sends these signals in other copies of it does no harm."""
    from .sessionbase import current_session

    current_session.set(None)


class MemsessionConfig(AppConfig):
    name = "django_memsession"
    verbose_name = "Memory sessions"
    # Pinned so that a project's DEFAULT_AUTO_FIELD never asks for a migration of this app.
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import engines
        from .checks import check_deployment, check_settings
        from .redis.checks import check_redis_deployment, check_redis_settings

        checks.register(check_settings)
        checks.register(check_deployment)
        # Silent unless SESSION_ENGINE is "django_memsession.redis"; they import no redis.
        checks.register(check_redis_settings)
        checks.register(check_redis_deployment, deploy=True)
        if engines.ready():
            self._connect_user_signals()

    def _connect_user_signals(self) -> None:
        """Who is logged in: the client at login, the other sessions' end after a password
        change, and "Log out everywhere" on the admin's user list."""
        from django.apps import apps
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_in
        from django.core.signals import request_finished, request_started
        from django.db.models.signals import post_save

        from .clients import note_login
        from .password import on_login, on_user_saved

        if not apps.is_installed("django.contrib.auth"):
            return
        user_logged_in.connect(note_login, dispatch_uid="django_memsession.clients")
        user_logged_in.connect(on_login, dispatch_uid="django_memsession.password")
        post_save.connect(
            on_user_saved, sender=get_user_model(), dispatch_uid="django_memsession.password"
        )
        request_started.connect(_forget_current_session, dispatch_uid="django_memsession.current")
        request_finished.connect(
            _forget_current_session, dispatch_uid="django_memsession.current_finished"
        )
        if apps.is_installed("django.contrib.admin"):
            from .admin import add_logout_everywhere

            add_logout_everywhere()
