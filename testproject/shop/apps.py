from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ShopConfig(AppConfig):
    name = "testproject.shop"
    label = "shop"
    verbose_name = "Demo shop"

    def ready(self) -> None:
        from testproject.shop.demo_users import create_demo_users

        # Users live in django.contrib.auth, so hook onto its post_migrate (this app has no
        # models, so Django sends none for it).
        post_migrate.connect(
            create_demo_users,
            sender=self.apps.get_app_config("auth"),
            dispatch_uid="testproject.shop.create_demo_users",
        )
