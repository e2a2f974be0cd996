"""µs per request through Django's whole WSGI handler, in process, with no network.

    python -m benchmarks.handler <engine module> [--quick]

The bench site's one view (load the session, change it, save it) called through
``get_wsgi_application()`` with a hand-made environ: what a request costs Django and the session
engine, without the server and the load generator, whose noise on a shared machine is larger
than the whole difference between two fast engines. Prints JSON: µs per request for a returning
visitor (cookie sent) and a new visitor (no cookie).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from typing import Any

from .common import WORKDIR


def _environ(cookie: str | None) -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
    }
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    return environ


def measure(engine: str, requests: int) -> dict[str, float]:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="benchmarks.httpsite",
        BENCH_SESSION_ENGINE=engine,
        BENCH_DB=str(WORKDIR / "handler.sqlite3"),
    )
    import django
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    django.setup()
    call_command("migrate", verbosity=0)
    application = get_wsgi_application()
    headers: list[tuple[str, str]] = []

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        headers[:] = response_headers

    def request(cookie: str | None) -> None:
        b"".join(application(_environ(cookie), start_response))

    request(None)
    cookie = next(value for name, value in headers if name == "Set-Cookie").split(";")[0]
    results = {}
    for workload, sent in (("returning visitor", cookie), ("new visitor", None)):
        for _ in range(requests // 10):  # warm-up
            request(sent)
        started = time.perf_counter()
        for _ in range(requests):
            request(sent)
        results[workload] = (time.perf_counter() - started) / requests * 1e6
    return results


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], 1000 if "--quick" in sys.argv else 5000)))
