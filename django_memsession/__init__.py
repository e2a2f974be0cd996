"""django-memsession: a bounded, pruned, observable in-memory session engine for Django.

``SESSION_ENGINE = "django_memsession"``. Importing this package does not need the app registry;
adding ``"django_memsession"`` to ``INSTALLED_APPS`` adds its system checks, management commands
and admin page.
"""

from . import control as _control  # noqa: F401  (registers the control listener's hooks)
from .engine import SessionStore
from .exceptions import SessionTooLarge
from .pruner import prune, start_pruner, stop_pruner
from .runtime import clear, stats

__all__ = [
    "SessionStore",
    "SessionTooLarge",
    "clear",
    "prune",
    "start_pruner",
    "stats",
    "stop_pruner",
]
__version__ = "0.1.0"
