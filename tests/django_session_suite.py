"""Django's own session tests, run against a session engine of ours.

Django's test suite is not in its wheel, so ``tests/sessions_tests/`` is taken from the sdist of
the exact Django version installed (``pip download``), extracted once into a cache directory, and
imported from there. :func:`django_session_test_cases` then builds, for any engine class, the
``unittest`` classes that pytest collects: Django's ``SessionTestsMixin`` (the ``SessionBase``
contract) and ``SessionMiddlewareTests``, plus a few engine-generic tests that Django keeps on its
backend-specific classes. A second engine needs only another call::

    globals().update(django_session_test_cases(RedisSessionStore, prefix="Redis"))

Environment:

``MEMSESSION_REQUIRE_DJANGO_SUITE=1``
    a suite that cannot be had fails the run instead of skipping it (CI sets it).
``MEMSESSION_DJANGO_TESTS_CACHE``
    the cache directory (default ``~/.cache/django-memsession/django-tests``, or under
    ``$XDG_CACHE_HOME``); each Django version gets ``<cache>/<version>/sessions_tests/``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.core import management
from django.core.exceptions import ObjectDoesNotExist
from django.test import SimpleTestCase, override_settings

REQUIRE_ENV = "MEMSESSION_REQUIRE_DJANGO_SUITE"
CACHE_ENV = "MEMSESSION_DJANGO_TESTS_CACHE"
APP = "sessions_tests"
# pip with no network retries for minutes by default; this bounds the wait before the skip.
PIP_TIMEOUT_SECONDS = 300


class SuiteUnavailable(Exception):
    """Django's session tests could not be fetched or imported; the message says why."""


def django_version() -> str:
    """The installed Django distribution's exact version (the sdist to fetch)."""
    return importlib.metadata.version("django")


def cache_root() -> Path:
    """Where extracted suites are kept, shared by every tox environment of this machine."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "django-memsession" / "django-tests"


def _pip_commands() -> Iterator[list[str]]:
    """Ways to run pip, best first. tox-uv environments have no pip of their own, and any pip
    can download an sdist: the environment's, then the base interpreter's, then one on PATH."""
    if importlib.util.find_spec("pip") is not None:
        yield [sys.executable, "-m", "pip"]
    base = getattr(sys, "_base_executable", None)
    if base and os.path.realpath(base) != os.path.realpath(sys.executable):
        yield [base, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            yield [found]


def _download_sdist(version: str, into: Path) -> Path:
    """``pip download`` the sdist; the next way of running pip is tried only when one has no
    pip, so a failing download (no network) is reported once, not once per pip."""
    errors: list[str] = []
    for pip in _pip_commands():
        command = [
            *pip,
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary=:all:",
            # Another interpreter's pip may be older than Django's Requires-Python; only the
            # archive is wanted, not an install.
            "--ignore-requires-python",
            "--disable-pip-version-check",
            "--retries=2",
            "--timeout=20",
            "--dest",
            str(into),
            f"django=={version}",
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"{command[0]}: {exc}")
            continue
        archives = sorted(into.glob("*.tar.gz"))
        if done.returncode == 0 and archives:
            return archives[0]
        output = (done.stderr or done.stdout).strip()
        errors.append(
            f"{' '.join(pip)}: exit {done.returncode}: " + " / ".join(output.splitlines()[-2:])
        )
        if "No module named pip" not in output:
            break
    if not errors:
        errors.append("no pip found (python -m pip, the base interpreter's, or on PATH)")
    raise SuiteUnavailable(
        f"could not download the Django {version} sdist for its session tests: " + "; ".join(errors)
    )


def _extract_sessions_tests(archive: Path, into: Path) -> None:
    """Only ``<top>/tests/sessions_tests/*`` (a few files), as ``into/sessions_tests/``."""
    found = False
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            if len(parts) < 4 or parts[1:3] != ("tests", APP) or not member.isfile():
                continue
            target = into.joinpath(*parts[2:])
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
            found = True
    if not found:
        raise SuiteUnavailable(f"{archive.name} has no tests/{APP}/")


def fetch_suite(version: str | None = None) -> Path:
    """The directory holding ``sessions_tests/`` for ``version``, downloaded on first use.

    Safe for parallel tox environments: each extracts into a private directory and renames it
    into place; a loser of that race uses the winner's copy.
    """
    version = version or django_version()
    root = cache_root()
    final = root / version
    if (final / APP / "tests.py").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as work:
        archive = _download_sdist(version, Path(work) / "sdist")
        staged = Path(work) / version
        _extract_sessions_tests(archive, staged)
        try:
            os.rename(staged, final)
        except OSError:
            if not (final / APP / "tests.py").is_file():
                raise
    return final


def load_django_session_tests() -> types.ModuleType:
    """Django's ``sessions_tests.tests`` for the installed version.

    Its ``models.py`` defines a model, which Django allows only in an installed app, so the app
    is installed while the module is imported (as Django's own suite does with
    ``modify_settings``). No test here uses that model, so the app need not stay installed, and
    the rest of our suite keeps its ``INSTALLED_APPS`` and its database.
    """
    if f"{APP}.tests" in sys.modules:
        return sys.modules[f"{APP}.tests"]
    version = django_version()
    suite_dir = fetch_suite(version)
    if str(suite_dir) not in sys.path:
        sys.path.insert(0, str(suite_dir))
    with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, APP]):
        module = importlib.import_module(f"{APP}.tests")
    where = Path(module.__file__ or "").resolve()
    if not where.is_relative_to(suite_dir.resolve()):
        raise SuiteUnavailable(f"{APP} was imported from {where}, not from {suite_dir}")
    return module


def load_or_skip() -> types.ModuleType:
    """:func:`load_django_session_tests`, or skip the calling test module (at import) when the
    suite cannot be had, unless ``MEMSESSION_REQUIRE_DJANGO_SUITE=1`` makes that a failure."""
    try:
        return load_django_session_tests()
    except SuiteUnavailable as exc:
        problem = str(exc)
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{problem} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(
        f"Django's session tests are unavailable ({REQUIRE_ENV}=1 makes this a failure): {problem}",
        allow_module_level=True,
    )


# -- the test classes ---------------------------------------------------------------------------

# The mixins below use TestCase's assertions; type checkers see them, unittest gets a plain mixin.
if TYPE_CHECKING:
    _TestCaseBase = SimpleTestCase
else:
    _TestCaseBase = object


def _copy_function(function: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of a test function, so a mark set on it stays on one engine's class.

    ``pytest.mark`` stores itself on the function object, which Django's classes share between
    every subclass; marking a copy keeps another engine's run of the same test unmarked. The
    code object is shared, so an ``async def`` stays a coroutine function (Django checks that).
    """
    copy = types.FunctionType(
        function.__code__,
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__dict__.update(function.__dict__)
    copy.__qualname__ = function.__qualname__
    copy.__doc__ = function.__doc__
    return copy


def _mark_tests(
    cls: type, marks: Mapping[str, pytest.MarkDecorator], *, must_exist: bool = False
) -> None:
    for name, mark in marks.items():
        function = getattr(cls, name, None)
        if function is None:
            if must_exist:
                raise AttributeError(f"{cls.__name__} has no {name} in this Django version")
            continue  # a test that this Django version does not have
        setattr(cls, name, mark(_copy_function(function)))


def _stored_session_model(backend: type[SessionBase]) -> Any:
    """Stands in for ``django.contrib.sessions.models.Session`` where a Django test reads the
    db engine's table to see what was stored: ``objects.get(session_key=...).get_decoded()``
    answers through ``backend`` instead."""

    class DoesNotExist(ObjectDoesNotExist):
        pass

    class Stored:
        def __init__(self, data: dict[str, Any]) -> None:
            self._data = data

        def get_decoded(self) -> dict[str, Any]:
            return self._data

    class Manager:
        def get(self, session_key: str) -> Stored:
            session = backend(session_key)
            if not session.exists(session_key):
                raise DoesNotExist(session_key)
            return Stored(session.load())

    return types.SimpleNamespace(objects=Manager(), DoesNotExist=DoesNotExist)


class _EngineGenericTests(_TestCaseBase):
    """Tests Django keeps on its backend-specific classes that state the contract for any
    engine; the originals read a cache or a table, these ask the engine itself. (Also
    ``CacheSessionTests.test_load_overlong_key``, which needs no change: see
    :func:`django_session_test_cases`.)"""

    backend: type[SessionBase]
    session: SessionBase
    engine: str

    def test_create_and_save(self) -> None:
        """CacheSessionTests.test_create_and_save: save() right after create() updates the
        session that create() made (no CreateError), and it exists."""
        self.session = self.backend()
        self.session.create()
        self.session.save()
        self.assertIs(self.session.exists(self.session.session_key), True)

    def test_clearsessions_command(self) -> None:
        """DatabaseSessionTests.test_clearsessions_command: ``clearsessions`` (the engine's
        ``clear_expired``) drops the expired session and keeps the live one."""
        self.session["foo"] = "bar"
        self.session.set_expiry(3600)
        self.session.save()
        other_session = self.backend()
        other_session["foo"] = "bar"
        other_session.set_expiry(-3600)
        other_session.save()
        self.addCleanup(other_session.delete)
        with override_settings(SESSION_ENGINE=self.engine):
            management.call_command("clearsessions")
        self.assertIs(self.session.exists(self.session.session_key), True)
        self.assertIs(self.backend().exists(other_session.session_key), False)


class _EngineGenericAsyncTests(_TestCaseBase):
    """The async twins of :class:`_EngineGenericTests` (Django 5.0+ has the async API)."""

    backend: type[SessionBase]
    session: SessionBase

    async def test_create_and_save_async(self) -> None:
        """CacheSessionTests.test_create_and_save_async, asking the engine."""
        self.session = self.backend()
        await self.session.acreate()
        await self.session.asave()
        self.assertIs(await self.session.aexists(self.session.session_key), True)

    async def test_aclear_expired(self) -> None:
        """DatabaseSessionTests.test_aclear_expired, asking the engine."""
        await self.session.aset("key", "value")
        await self.session.aset_expiry(3600)
        await self.session.asave()
        other_session = self.backend()
        await other_session.aset("key", "value")
        await other_session.aset_expiry(-3600)
        await other_session.asave()
        self.addCleanup(other_session.delete)
        await self.session.aclear_expired()
        await other_session.aclear_expired()
        self.assertIs(await self.session.aexists(self.session.session_key), True)
        self.assertIs(await self.backend().aexists(other_session.session_key), False)


class _MiddlewarePorts(_TestCaseBase):
    """Two of Django's ``SessionMiddlewareTests`` name the db engine in their body. They run
    unchanged, with that name bound to the engine under test for the duration of the test."""

    backend: type[SessionBase]
    django_tests: types.ModuleType

    @contextmanager
    def _engine_as(self, name: str, replacement: Any) -> Iterator[None]:
        with mock.patch.object(self.django_tests, name, replacement):
            yield

    def test_session_update_error_redirect(self) -> None:
        """Django's test, with ``DatabaseSession()`` in the view being the engine under test."""
        with self._engine_as("DatabaseSession", self.backend):
            super().test_session_update_error_redirect()  # type: ignore[attr-defined]

    def test_empty_session_saved(self) -> None:
        """Django's test, with ``Session.objects.get(...).get_decoded()`` read through the
        engine under test instead of the db engine's table."""
        with self._engine_as("Session", _stored_session_model(self.backend)):
            super().test_empty_session_saved()  # type: ignore[attr-defined]


def django_session_test_cases(
    backend: type[SessionBase],
    *,
    prefix: str,
    engine: str | None = None,
    module: str | None = None,
    xfail: Mapping[str, str] | None = None,
    skip: Mapping[str, str] | None = None,
) -> dict[str, type]:
    """The test classes that run Django's session tests against ``backend``.

    ``engine`` is the ``SESSION_ENGINE`` path (default: ``backend``'s module), set for every test
    so the middleware builds ``backend`` sessions. ``xfail`` and ``skip`` map test names to
    reasons; an ``xfail`` is strict, so a fixed engine turns it into a failure until the mark
    goes. Names this Django version lacks are ignored; a failure of one Django version only is
    the caller's to condition (on ``django.VERSION``). Returns ``{class name: class}`` for the
    caller's module globals, where pytest collects them.
    """
    django_tests = load_or_skip()
    engine = engine or backend.__module__
    module = module or sys._getframe(1).f_globals["__name__"]
    marks: dict[str, pytest.MarkDecorator] = {}
    for name, reason in (skip or {}).items():
        marks[name] = pytest.mark.skip(reason=reason)
    for name, reason in (xfail or {}).items():
        marks[name] = pytest.mark.xfail(strict=True, reason=reason)

    def make(name: str, bases: tuple[type, ...], doc: str, **attrs: Any) -> type:
        cls = type(
            name,
            bases,
            {
                "__module__": module,
                "__qualname__": name,
                "__doc__": doc,
                "backend": backend,
                "engine": engine,
                "django_tests": django_tests,
                **attrs,
            },
        )
        _mark_tests(cls, marks)
        return override_settings(SESSION_ENGINE=engine)(cls)

    generic: tuple[type, ...] = (_EngineGenericTests,)
    if hasattr(SessionBase, "asave"):  # Django 5.0+
        generic += (_EngineGenericAsyncTests,)
    store_tests = make(
        f"{prefix}SessionTests",
        (*generic, django_tests.SessionTestsMixin, SimpleTestCase),
        f"Django {django_version()}'s SessionTestsMixin against {engine}.",
        # Engine-generic, on Django's cache-engine class; copied so marks stay ours.
        test_load_overlong_key=_copy_function(
            django_tests.CacheSessionTests.test_load_overlong_key
        ),
    )
    middleware_tests = make(
        f"{prefix}SessionMiddlewareTests",
        (_MiddlewarePorts, django_tests.SessionMiddlewareTests),
        f"Django {django_version()}'s SessionMiddlewareTests with SESSION_ENGINE={engine}.",
    )
    return {cls.__name__: cls for cls in (store_tests, middleware_tests)}
