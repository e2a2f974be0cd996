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
        if getattr(settings, "SESSION_ENGINE", "") == "django_memsession":
            from . import runtime

            # With snapshots on, SIGTERM must reach the shutdown path where nothing else handles
            # it (runserver, plain processes); ready() runs in the main thread, where a handler
            # can be installed.
            runtime.install_signal_handlers()
