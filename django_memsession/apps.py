from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class MemsessionConfig(AppConfig):
    name = "django_memsession"
    verbose_name = "Memory sessions"
    # Pinned so that a project's DEFAULT_AUTO_FIELD never asks for a migration of this app.
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from .checks import check_deployment, check_settings
        from .redis.checks import check_redis_deployment, check_redis_settings

        checks.register(check_settings)
        checks.register(check_deployment)
        # Silent unless SESSION_ENGINE is "django_memsession.redis"; they import no redis.
        checks.register(check_redis_settings)
        checks.register(check_redis_deployment, deploy=True)
        engine = getattr(settings, "SESSION_ENGINE", "")
        if engine == "django_memsession":
            from . import runtime

            # With snapshots on, SIGTERM must reach the shutdown path where nothing else handles
            # it (runserver, plain processes); ready() runs in the main thread, where a handler
            # can be installed.
            runtime.install_signal_handlers()
        if engine in ("django_memsession", "django_memsession.redis"):
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
        from .password import on_login, on_request_finished, on_request_started, on_user_saved

        if not apps.is_installed("django.contrib.auth"):
            return
        user_logged_in.connect(note_login, dispatch_uid="django_memsession.clients")
        user_logged_in.connect(on_login, dispatch_uid="django_memsession.password")
        post_save.connect(
            on_user_saved, sender=get_user_model(), dispatch_uid="django_memsession.password"
        )
        request_started.connect(on_request_started, dispatch_uid="django_memsession.password")
        request_finished.connect(on_request_finished, dispatch_uid="django_memsession.password")
        if apps.is_installed("django.contrib.admin"):
            from .admin import add_logout_everywhere

            add_logout_everywhere()
