"""Shared pieces of the benchmark suite: Django set up standalone, realistic sessions, timing."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

WORKDIR = Path(tempfile.mkdtemp(prefix="memsession-bench-"))

AUTH_KEYS = {
    "_auth_user_id": "42",
    "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
    "_auth_user_hash": "0f3b5c1d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c",
}
SIZES = {"100 B": 100, "300 B": 300, "1 KB": 1_000, "10 KB": 10_000}


def setup_django(**overrides: Any) -> None:
    """Configure Django for the engines under test, in this process, and migrate ``sessions``."""
    import django
    from django.conf import settings

    if settings.configured:
        return
    options: dict[str, Any] = {
        "SECRET_KEY": "benchmarks-not-secret",
        "INSTALLED_APPS": ["django.contrib.sessions", "django_memsession"],
        "DATABASES": {
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(WORKDIR / "sessions.sqlite3"),
            }
        },
        "CACHES": {
            # MAX_ENTRIES raised: the default 300 would cull the benchmark's sessions.
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "OPTIONS": {"MAX_ENTRIES": 10_000_000},
            }
        },
        "SESSION_FILE_PATH": str(WORKDIR / "files"),
        "USE_TZ": True,
        "MEMSESSION_MAX_SIZE": "4G",
        "MEMSESSION_PRUNE_INTERVAL": 0,
        "MEMSESSION_CONTROL": False,
    }
    options.update(overrides)
    (WORKDIR / "files").mkdir(exist_ok=True)
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    settings.configure(**options)
    django.setup()
    from django.core.management import call_command

    call_command("migrate", "sessions", verbosity=0)


def make_session(target_bytes: int) -> dict[str, Any]:
    """Auth keys and a cart of small dicts, grown to about ``target_bytes`` of JSON."""
    from django.core import signing

    session: dict[str, Any] = dict(AUTH_KEYS) if target_bytes >= 300 else {"_auth_user_id": "42"}
    cart: list[dict[str, Any]] = []
    session["cart"] = cart
    serializer = signing.JSONSerializer()
    while len(serializer.dumps(session)) < target_bytes:
        n = len(cart)
        cart.append(
            {"id": 10_000 + n, "sku": f"SKU-{n:05}", "name": f"Widget {n}", "qty": n % 3 + 1}
        )
    return session


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "rounds": len(samples),
    }


def time_batch(operation: Callable[[int], object], count: int) -> float:
    """µs per call of ``operation(i)`` over ``count`` calls."""
    started = time.perf_counter()
    for i in range(count):
        operation(i)
    return (time.perf_counter() - started) / count * 1e6


def rss_bytes() -> int:
    """This process's resident set size, from /proc (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def machine() -> dict[str, Any]:
    import platform

    import django

    return {
        "python": platform.python_version(),
        "django": django.get_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
