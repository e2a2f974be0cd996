from django.apps import AppConfig
from django.core import checks


class MemsessionConfig(AppConfig):
    name = "django_memsession"
    verbose_name = "Memory sessions"

    def ready(self) -> None:
        from .checks import check_deployment, check_settings

        checks.register(check_settings)
        checks.register(check_deployment)
