"""A process that holds a session store and listens on the control channel, for the tests.

Run as ``python store_process.py <short> <long>``: stores ``<short>`` sessions that expire in one
second and ``<long>`` that last an hour (and, with ``MEMSESSION_TEST_LOGINS=<user>:<count>``,
``<count>`` sessions logged in as ``<user>``), prints ``ready``, then lives until its stdin closes
(or 120 s pass), so a test that dies cannot leave it behind for long.
"""

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testsite.settings")

import django

django.setup()

from django_memsession import SessionStore  # noqa: E402


def main() -> None:
    short, long = int(sys.argv[1]), int(sys.argv[2])
    for count, expiry in ((short, 1), (long, 3600)):
        for n in range(count):
            session = SessionStore()
            session["n"] = n
            session.set_expiry(expiry)
            session.save()
    user, _, count = os.environ.get("MEMSESSION_TEST_LOGINS", ":0").partition(":")
    for _ in range(int(count)):
        session = SessionStore()
        session["_auth_user_id"] = user
        session.save()
    print("ready", os.getpid(), flush=True)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait(120)


if __name__ == "__main__":
    main()
