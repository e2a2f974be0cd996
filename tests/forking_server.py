"""A serving process with snapshots that forks a helper (as multiprocessing does), then logs a
session out and dies without any cleanup (as kill -9 would): for test_snapshot.

Run as ``python forking_server.py``; prints the two session keys, then exits abruptly.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testsite.settings")

import django

django.setup()

import django_memsession  # noqa: E402
from django_memsession import SessionStore  # noqa: E402


def main() -> None:
    stays, leaves = SessionStore(), SessionStore()
    for session in (stays, leaves):
        session["_auth_user_id"] = "1"
        session.save()
    django_memsession.snapshot()
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # the helper
    os.waitpid(pid, 0)
    left = leaves.session_key
    leaves.flush()  # a logout after the snapshot, after the fork
    print(stays.session_key, left, flush=True)
    os._exit(0)  # no atexit: as a crash


if __name__ == "__main__":
    main()
