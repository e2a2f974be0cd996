"""This engine against an earlier commit of itself, per operation, in one run.

``python -m benchmarks.against [--rev REV] [--engine E] [--pairs N] [--quick]`` exports
``django_memsession/``
at ``REV`` (default: the commit before the user index, the engine issue 11's "≤ 1.05x today's
engine" is measured against) into a temporary directory with ``git archive``, then runs the same
worker alternately on that tree and on this one, each in a fresh process. Each worker fills 2,000
anonymous and 2,000 logged-in sessions (the same 300-byte payload, the logged-in ones with
Django's three ``_auth_user_*`` keys) and times each operation through ``SessionStore`` as the
best of 7 rounds (``login``: a session saved with its user for the first time, the write that
indexes it; ``logout``: a logged-in session loaded and flushed); the figure per operation is
the median over the pairs of the ratio this / REV, which the machine's drift between processes
moves far less than a ratio of two separate runs.
``--engine`` chooses the engine: ``memory`` (the default), ``redis`` or ``redis+near`` (the Redis
engine without and with its near cache, both trees on one throwaway loopback ``redis-server``,
emptied before each worker). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# c369138: the engine as it was before the user index (issue 11) was merged.
BEFORE_THE_INDEX = "c369138"
OPERATIONS = ("create", "load-modify-save anonymous", "load-modify-save logged in")
OPERATIONS += ("load anonymous", "load logged in", "login", "logout")


def _best(operation: Callable[[int], object], count: int, rounds: int = 7) -> float:
    """Best of ``rounds`` batches, µs per call: the least disturbed batch on a shared machine."""
    figures = []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(count):
            operation(i)
        figures.append((time.perf_counter() - started) / count * 1e6)
    return min(figures)


ENGINES = ("memory", "redis", "redis+near")


def _settings(engine: str, redis_url: str | None) -> dict[str, Any]:
    if engine == "memory":
        return {"SESSION_ENGINE": "django_memsession"}
    return {
        "SESSION_ENGINE": "django_memsession.redis",
        "MEMSESSION_REDIS_URL": redis_url,
        "MEMSESSION_REDIS_NEAR_CACHE": "64M" if engine == "redis+near" else None,
    }


def worker(tree: str, count: int, engine: str = "memory", redis_url: str | None = None) -> dict:
    """Time the operations on the package under ``tree`` (this process imports it first)."""
    from importlib import import_module

    from .common import AUTH_KEYS, make_session, setup_django

    sys.path.insert(0, tree)
    setup_django(**_settings(engine, redis_url))
    from django.conf import settings

    import django_memsession

    SessionStore = import_module(settings.SESSION_ENGINE).SessionStore

    package = Path(django_memsession.__file__).resolve().parent
    assert package == Path(tree, "django_memsession").resolve(), package
    anonymous = {k: v for k, v in make_session(300).items() if not k.startswith("_auth")}
    logged_in = {**anonymous, **AUTH_KEYS}

    def fill(data: dict[str, Any]) -> list[str]:
        keys = []
        for _ in range(2000):
            session = SessionStore()
            session.update(data)
            session.save()
            keys.append(session.session_key)
        return keys

    keys = {"anonymous": fill(anonymous), "logged in": fill(logged_in)}

    def create(i: int) -> None:
        session = SessionStore()
        session.update(anonymous)
        session.save()

    def cycle(name: str) -> Callable[[int], None]:
        chosen = keys[name]

        def operation(i: int) -> None:
            session = SessionStore(chosen[i % 2000])
            session["n"] = i
            session.save()

        return operation

    def load(name: str) -> Callable[[int], None]:
        chosen = keys[name]
        return lambda i: SessionStore(chosen[i % 2000]).load()

    def login(i: int) -> None:
        # What the save at the end of Django's login() writes: a session that gets its user.
        session = SessionStore()
        session.update(logged_in)
        session.save()

    rounds = 7
    to_end = iter(fill_many(SessionStore, logged_in, count * rounds))

    def logout(i: int) -> None:
        # Django's logout(): the loaded session flushed.
        session = SessionStore(next(to_end))
        session.load()
        session.flush()

    figures = {"create": _best(create, count)}
    for name in keys:
        figures[f"load-modify-save {name}"] = _best(cycle(name), count)
    for name in keys:
        figures[f"load {name}"] = _best(load(name), count)
    figures["login"] = _best(login, count, rounds)
    figures["logout"] = _best(logout, count, rounds)
    return figures


def fill_many(SessionStore: Any, data: dict[str, Any], count: int) -> list[str]:
    keys = []
    for _ in range(count):
        session = SessionStore()
        session.update(data)
        session.save()
        keys.append(session.session_key)
    return keys


def _export(rev: str, into: Path) -> str:
    """``django_memsession/`` at ``rev``, under ``into``; the commit it resolved to."""
    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(
            ["git", "archive", "--format=tar", commit, "django_memsession"],
            cwd=root,
            stdout=out,
            check=True,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
    return commit


def _run_worker(
    tree: Path, count: int, engine: str = "memory", redis_url: str | None = None
) -> dict[str, float]:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "benchmarks.against", "--worker", str(tree)]
    command += ["--count", str(count), "--engine", engine]
    if redis_url is not None:
        command += ["--redis-url", redis_url]
    output = subprocess.run(
        command,
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def compare(rev: str, pairs: int, count: int, engine: str = "memory") -> dict[str, Any]:
    here = Path(__file__).resolve().parent.parent
    server = None
    if engine != "memory":
        from .redis_engines import RedisServer

        server = RedisServer()
    try:
        with tempfile.TemporaryDirectory(prefix="memsession-against-") as tmp:
            commit = _export(rev, Path(tmp))
            runs: dict[str, list[dict[str, float]]] = {"this": [], "rev": []}
            for pair in range(pairs):
                # Alternate which goes first: a drifting machine favours neither.
                order = [("this", here), ("rev", Path(tmp))]
                if pair % 2:
                    order.reverse()
                for name, tree in order:
                    url = None
                    if server is not None:
                        _flush(server.url)
                        url = server.url
                    runs[name].append(_run_worker(tree, count, engine, url))
    finally:
        if server is not None:
            server.stop()
    result: dict[str, Any] = {
        "rev": commit,
        "engine": engine,
        "pairs": pairs,
        "calls_per_round": count,
    }
    for operation in OPERATIONS:
        ours = [run[operation] for run in runs["this"]]
        theirs = [run[operation] for run in runs["rev"]]
        result[operation] = {
            "this_us": statistics.median(ours),
            "rev_us": statistics.median(theirs),
            "ratio": statistics.median(a / b for a, b in zip(ours, theirs, strict=True)),
        }
    return result


def _flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default=BEFORE_THE_INDEX, help="the commit to compare with")
    parser.add_argument("--pairs", type=int, default=7, help="processes of each, alternating")
    parser.add_argument("--count", type=int, default=3000, help="calls per timed round")
    parser.add_argument("--quick", action="store_true", help="3 pairs, 1000 calls a round")
    parser.add_argument("--engine", choices=ENGINES, default="memory", help="the engine to time")
    parser.add_argument("--worker", metavar="TREE", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.count, args.engine, args.redis_url)))
        return
    if args.quick:
        args.pairs, args.count = 3, 1000
    print(json.dumps(compare(args.rev, args.pairs, args.count, args.engine)))


if __name__ == "__main__":
    main()
