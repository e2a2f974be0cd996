"""django-memsession: a bounded, pruned, observable in-memory session engine for Django.

``SESSION_ENGINE = "django_memsession"``. Importing this package does not need the app registry;
adding ``"django_memsession"`` to ``INSTALLED_APPS`` adds its system checks, management commands
and admin page.
"""

from .everywhere import end_session, end_user_sessions, user_sessions
from .exceptions import SessionTooLarge
from .memory.engine import SessionStore
from .messages import UserSession
from .runtime import clear, prune, snapshot, start_pruner, stats, stop_pruner

__all__ = [
    "SessionStore",
    "SessionTooLarge",
    "UserSession",
    "clear",
    "end_session",
    "end_user_sessions",
    "prune",
    "snapshot",
    "start_pruner",
    "stats",
    "stop_pruner",
    "user_sessions",
]
__version__ = "0.1.0"
