"""Requests per second over HTTP on Redis: gunicorn (gthread, 2 workers x 4 threads) on 127.0.0.1
driven by ``wrk``, our Redis engine against Django's cache engine on ``RedisCache``, both on the
same ``redis-server``, rounds interleaved.

This module is two things: the runner (:func:`run`, called by ``python -m benchmarks --only
redis-http``), and, as ``DJANGO_SETTINGS_MODULE=benchmarks.redis_http``, the bench site that
gunicorn serves (settings, URLs and the WSGI app, below). The site's engine and Redis come from
the environment (``BENCH_SESSION_ENGINE``, ``BENCH_REDIS_URL``), so both servers run the same
code. Our engine is served as the README sets it up, with this package's ``SessionMiddleware``;
the cache engine with Django's.

Workloads, each from one wrk run per round:

* returning visitor, read: a cookie with every request; the view reads the session (no save);
  the issue's target is ours >= 1.15x the cache engine's requests/s;
* returning visitor, load-modify-save: a cookie with every request; the view changes the session;
* new visitor: no cookie; the view creates a session.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from typing import Any

from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import path

# -- the bench site (read by Django when this module is DJANGO_SETTINGS_MODULE) ------------------

SECRET_KEY = "benchmarks-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["django.contrib.sessions"]
SESSION_ENGINE = os.environ.get("BENCH_SESSION_ENGINE", "django_memsession.redis")
MIDDLEWARE = [
    "django_memsession.middleware.SessionMiddleware"
    if SESSION_ENGINE == "django_memsession.redis"
    else "django.contrib.sessions.middleware.SessionMiddleware"
]
ROOT_URLCONF = __name__
DATABASES: dict[str, Any] = {}
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    }
}
MEMSESSION_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
MEMSESSION_REDIS_NEAR_CACHE = os.environ.get("BENCH_NEAR_CACHE") or None
USE_TZ = True


def read(request: HttpRequest) -> HttpResponse:
    """A page that shows something from the session and changes nothing: no save."""
    return HttpResponse(f"visits {request.session.get('visits', 0)}", content_type="text/plain")


def visit(request: HttpRequest) -> HttpResponse:
    """Load the session, change it, save it: a visit counter and a small cart."""
    request.session["visits"] = request.session.get("visits", 0) + 1
    request.session.setdefault("cart", [{"sku": "SKU-00001", "qty": 1}])
    return HttpResponse(f"visit {request.session['visits']}", content_type="text/plain")


urlpatterns = [path("", visit), path("read/", read)]

_handler = None


def application(environ: dict[str, Any], start_response: Any) -> Any:
    """Django's WSGI handler, built on the first request (this module is also the settings)."""
    global _handler
    if _handler is None:
        _handler = get_wsgi_application()
    return _handler(environ, start_response)


# -- the runner ----------------------------------------------------------------------------------

_ENGINES = {
    "memsession": "django_memsession.redis",
    "near": "django_memsession.redis",  # with MEMSESSION_REDIS_NEAR_CACHE = "16M"
    "rediscache": "django.contrib.sessions.backends.cache",
}
_WORKLOADS = {
    # name: (path, sends the returning visitor's cookie)
    "returning visitor, read": ("/read/", True),
    "returning visitor, load-modify-save": ("/", True),
    "new visitor": ("/", False),
}
_WORKERS, _THREADS, _CONNECTIONS = 2, 4, 8


def _serve(engine: str, port: int, redis_url: str) -> subprocess.Popen:
    from .common import REPO_ROOT

    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DJANGO_SETTINGS_MODULE": "benchmarks.redis_http",
        "BENCH_SESSION_ENGINE": _ENGINES[engine],
        "BENCH_REDIS_URL": redis_url,
        "BENCH_NEAR_CACHE": "16M" if engine == "near" else "",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "benchmarks.redis_http:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(_WORKERS),
            "--worker-class",
            "gthread",
            "--threads",
            str(_THREADS),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wrk(wrk: str, url: str, seconds: int, cookie: str | None) -> float:
    """Requests/s of one wrk run; non-2xx answers would be counted by wrk and make it fail here."""
    args = [wrk, "-t1", f"-c{_CONNECTIONS}", f"-d{seconds}s"]
    if cookie:
        args += ["-H", f"Cookie: {cookie}"]
    output = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"the bench server answered errors: {output}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if found is None:
        raise RuntimeError(f"wrk gave no figure: {output}")
    return float(found.group(1))


def run(redis_url: str, quick: bool) -> dict[str, Any]:
    """Requests/s per engine and workload: the median of interleaved rounds.

    Both servers run at once (an idle one costs nothing); each round visits the engines and the
    workloads in a new order, so drift on a shared machine falls on all of them alike.
    """
    from .common import summary
    from .http import _free_port, _wait_ready, ensure_wrk

    wrk = ensure_wrk()
    if wrk is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    seconds, rounds = (2, 1) if quick else (3, 9)
    servers: dict[str, tuple[int, subprocess.Popen | None]] = {
        engine: (_free_port(), None) for engine in _ENGINES
    }
    cookies: dict[str, str] = {}
    samples: dict[str, dict[str, list[float]]] = {
        engine: {workload: [] for workload in _WORKLOADS} for engine in _ENGINES
    }
    rng = random.Random(3)
    try:
        for engine, (port, _) in servers.items():
            servers[engine] = (port, _serve(engine, port, redis_url))
        for engine, (port, server) in servers.items():
            assert server is not None
            cookies[engine] = _wait_ready(f"http://127.0.0.1:{port}/", server)
            for workload_path, with_cookie in _WORKLOADS.values():  # warm up every worker
                url = f"http://127.0.0.1:{port}{workload_path}"
                _wrk(wrk, url, 1, cookies[engine] if with_cookie else None)
        runs = [(engine, workload) for engine in _ENGINES for workload in _WORKLOADS]
        for _ in range(rounds):
            rng.shuffle(runs)
            for engine, workload in runs:
                workload_path, with_cookie = _WORKLOADS[workload]
                url = f"http://127.0.0.1:{servers[engine][0]}{workload_path}"
                cookie = cookies[engine] if with_cookie else None
                samples[engine][workload].append(_wrk(wrk, url, seconds, cookie))
    finally:
        for _, server in servers.values():
            if server is not None:
                server.terminate()
                server.wait(15)
    results: dict[str, Any] = {
        "seconds_per_run": seconds,
        "rounds": rounds,
        "server": f"gunicorn gthread, {_WORKERS} workers x {_THREADS} threads; "
        f"wrk -t1 -c{_CONNECTIONS}; one redis-server on loopback",
    }
    for engine, workloads in samples.items():
        results[engine] = {name: summary(values) for name, values in workloads.items()}
    return results


# The issues' targets: ours / the cache engine's requests/s, at least (returning visitor); with
# the near cache, against the cache engine and against our engine without it.
TARGETS = {"returning visitor, read": 1.15}
NEAR_TARGETS = {"returning visitor, read": (1.3, 1.1)}


def table(results: dict[str, Any]) -> list[str]:
    if "skipped" in results:
        return [f"skipped: {results['skipped']}"]
    lines = [
        "| workload (requests/s) | memsession | rediscache | memsession / rediscache (target) |",
        "|---|---|---|---|",
    ]
    for workload in _WORKLOADS:
        ours = results["memsession"][workload]["median"]
        theirs = results["rediscache"][workload]["median"]
        target = TARGETS.get(workload)
        wanted = f" (≥ {target}x)" if target else ""
        lines.append(
            f"| {workload} | {ours:.0f} | {theirs:.0f} | **{ours / theirs:.2f}x**{wanted} |"
        )
    if "near" not in results:
        return lines
    lines += [
        "",
        "| workload (requests/s) | near | near / rediscache (target) "
        "| near / memsession (target) |",
        "|---|---|---|---|",
    ]
    for workload in _WORKLOADS:
        near = results["near"][workload]["median"]
        ours = results["memsession"][workload]["median"]
        theirs = results["rediscache"][workload]["median"]
        targets = NEAR_TARGETS.get(workload)
        wanted = [f" (≥ {target}x)" for target in targets] if targets else ["", ""]
        lines.append(
            f"| {workload} | {near:.0f} | **{near / theirs:.2f}x**{wanted[0]} | "
            f"**{near / ours:.2f}x**{wanted[1]} |"
        )
    return lines
