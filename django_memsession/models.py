"""A model with no table: it gives the stats page its place on the admin index and its
permissions (``view_stats`` to see the page, ``change_stats`` to press "Prune now")."""

from django.db import models


class Stats(models.Model):
    class Meta:
        managed = False
        default_permissions = ("view", "change")
        verbose_name = "session store"
        verbose_name_plural = "session store"

    def __str__(self) -> str:
        return "session store"
