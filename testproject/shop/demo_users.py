"""DEMO ONLY: the well-known users ``admin``/``admin`` and ``demo``/``demo``.

Created after ``migrate`` so a fresh checkout has someone to log in as. Never copy this into a
real project: anyone who has read this file can log in to a site that runs it.
"""

import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connections

DEMO_USERS = [
    # (username, password, superuser?)
    ("admin", "admin", True),
    ("demo", "demo", False),
]


def create_demo_users(using: str, verbosity: int = 1, **kwargs: Any) -> None:
    """A ``post_migrate`` receiver: create each demo user that does not exist yet."""
    User = get_user_model()
    # ``migrate contenttypes`` alone also sends auth's post_migrate, before auth's table exists.
    if User._meta.db_table not in connections[using].introspection.table_names():
        return
    manager = User._default_manager.db_manager(using)
    created = []
    for username, password, is_superuser in DEMO_USERS:
        if manager.filter(username=username).exists():
            continue
        if is_superuser:
            manager.create_superuser(username, email="", password=password)
        else:
            manager.create_user(username, email="", password=password)
        created.append(f"{username}/{password}")
    if created and verbosity >= 1:
        stdout = kwargs.get("stdout") or sys.stdout
        stdout.write(f"  Created demo users (demo only): {', '.join(created)}\n")
