"""Requests per second over HTTP: gunicorn (gthread, 1 worker) on 127.0.0.1 driven by ``wrk``.

The bench site (``benchmarks.httpsite``) has one view that loads the session, changes it and
saves it. Two workloads per engine: a returning visitor (a cookie sent with every request:
load-modify-save) and a new visitor on every request (no cookie: a session is created).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

from .common import REPO_ROOT, WORKDIR, summary

ENGINES = {
    "memsession": "django_memsession",
    "locmem": "django.contrib.sessions.backends.cache",
    "db": "django.contrib.sessions.backends.db",
}


def ensure_wrk() -> str | None:
    """``wrk``, installed with apt-get when missing and we are root; None when unavailable."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=False, capture_output=True
    )
    return shutil.which("wrk")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(engine: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DJANGO_SETTINGS_MODULE": "benchmarks.httpsite",
        "BENCH_SESSION_ENGINE": ENGINES[engine],
        "BENCH_DB": str(WORKDIR / f"http-{engine}.sqlite3"),
    }
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "-v0"], env=env, check=True, cwd=REPO_ROOT
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "benchmarks.httpsite:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "4",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_ready(url: str, server: subprocess.Popen) -> str:
    """Wait (bounded) for the server; return a session cookie made by one request."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                cookie = response.headers.get("Set-Cookie", "")
                return cookie.split(";")[0]
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bench server did not start") from None
            time.sleep(0.1)


def _wrk(wrk: str, url: str, seconds: int, cookie: str | None) -> float:
    args = [wrk, "-t1", "-c4", f"-d{seconds}s", "--latency"]
    if cookie:
        args += ["-H", f"Cookie: {cookie}"]
    output = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def handler_costs(quick: bool) -> dict[str, Any]:
    """µs per request through Django's handler in process (``benchmarks.handler``), per engine:
    each measure in a fresh process, engines in a new order each round; medians."""
    rounds = 1 if quick else 5
    samples: dict[str, dict[str, list[float]]] = {engine: {} for engine in ENGINES}
    order = list(ENGINES)
    rng = random.Random(2)
    for _ in range(rounds):
        rng.shuffle(order)
        for engine in order:
            command = [sys.executable, "-m", "benchmarks.handler", ENGINES[engine]]
            if quick:
                command.append("--quick")
            output = subprocess.run(
                command, cwd=REPO_ROOT, capture_output=True, text=True, check=True
            ).stdout
            for workload, value in json.loads(output.strip().splitlines()[-1]).items():
                samples[engine].setdefault(workload, []).append(value)
    return {
        engine: {workload: summary(values) for workload, values in workloads.items()}
        for engine, workloads in samples.items()
    }


def run(quick: bool) -> dict[str, Any]:
    """Requests/s per engine and workload: the median of interleaved rounds.

    All servers run at once (an idle one costs nothing); each round visits the engines in a new
    order, so drift on a shared machine falls on all of them alike.
    """
    wrk = ensure_wrk()
    if wrk is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    seconds, rounds = (2, 1) if quick else (3, 9)
    servers = {engine: (_free_port(), None) for engine in ENGINES}
    cookies: dict[str, str] = {}
    samples: dict[str, dict[str, list[float]]] = {
        engine: {"returning visitor": [], "new visitor": []} for engine in ENGINES
    }
    rng = random.Random(1)
    try:
        for engine, (port, _) in servers.items():
            servers[engine] = (port, _serve(engine, port))
        for engine, (port, server) in servers.items():
            url = f"http://127.0.0.1:{port}/"
            cookies[engine] = _wait_ready(url, server)
            _wrk(wrk, url, 1, cookies[engine])  # warm up
        order = list(ENGINES)
        for _ in range(rounds):
            rng.shuffle(order)
            for engine in order:
                url = f"http://127.0.0.1:{servers[engine][0]}/"
                engine_samples = samples[engine]
                engine_samples["returning visitor"].append(_wrk(wrk, url, seconds, cookies[engine]))
                engine_samples["new visitor"].append(_wrk(wrk, url, seconds, None))
    finally:
        for _, server in servers.values():
            if server is not None:
                server.terminate()
                server.wait(15)
    results: dict[str, Any] = {
        "seconds_per_run": seconds,
        "rounds": rounds,
        "server": "gunicorn gthread, 1 worker x 4 threads; wrk -t1 -c4",
    }
    for engine, workloads in samples.items():
        results[engine] = {name: summary(values) for name, values in workloads.items()}
    return results
