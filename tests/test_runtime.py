"""The composition root: services built on first use, leaves that do not import each other, no
import loop, fork hooks paired per forking thread, settings changes applied once."""

from __future__ import annotations

import ast
import logging
import os
import threading
import warnings
from pathlib import Path

import pytest
from django.test import override_settings

from django_memsession import SessionStore, runtime
from django_memsession.memory import services as memory_services
from django_memsession.signals import sessions_evicted

PACKAGE = Path(runtime.__file__).parent


def package_imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at module level or in functions; imports under
    ``if TYPE_CHECKING:`` only serve annotations and are left out."""
    graph: dict[str, set[str]] = {}
    for source in PACKAGE.rglob("*.py"):
        relative = source.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        package = name if source.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(source.read_text())
        skipped: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped |= {id(child) for child in ast.walk(node)}
        found: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.startswith("django_memsession"):
                    # Importing from a package runs its __init__ (and what that imports).
                    found.add(base)
                    for alias in node.names:
                        candidate = f"{base}.{alias.name}"
                        is_module = (
                            (PACKAGE.parent / candidate.replace(".", "/"))
                            .with_suffix(".py")
                            .exists()
                        )
                        if is_module:
                            found.add(candidate)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("django_memsession")}
        graph[name] = found - {name}
    return graph


def test_the_package_has_no_import_loop():
    graph = package_imports()
    # __init__ re-exports the public API; what imports the package itself imports its parts.
    graph = {
        name: {i for i in imports if i != "django_memsession"} for name, imports in graph.items()
    }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        assert name not in visiting, " -> ".join([*visiting[visiting.index(name) :], name])
        if name in done:
            return
        visiting.append(name)
        for imported in graph.get(name, ()):
            visit(imported)
        visiting.pop()
        done.add(name)

    for name in graph:
        visit(name)


@pytest.mark.parametrize(
    ("module", "must_not_import"),
    [
        (
            "django_memsession.memory.store",
            {"runtime", "services", "engine", "pruner", "listener", "control"},
        ),
        (
            "django_memsession.memory.pruner",
            {"runtime", "services", "listener", "control", "engine"},
        ),
        ("django_memsession.listener", {"runtime", "pruner", "store", "engine"}),
        ("django_memsession.control", {"runtime", "pruner", "listener", "store", "engine"}),
        ("django_memsession.serving", {"runtime", "services", "engine", "store", "pruner"}),
    ],
)
def test_services_are_leaves(module, must_not_import):
    imported = {name.rpartition(".")[2] for name in package_imports()[module]}
    assert not imported & must_not_import


def test_the_periodic_thread_imports_nothing_of_the_package():
    assert package_imports()["django_memsession.periodic"] == set()


def test_the_store_is_built_once_and_its_services_started_once():
    first = runtime.get_store()
    assert runtime.get_store() is first
    assert memory_services._services is not None and memory_services._services.started


def test_fork_hooks_pair_per_thread_when_two_threads_fork_at_once():
    """Thread A takes the store's lock before its fork; thread B, forking at the same time,
    cannot (A holds it). A's after-fork must release the lock and B's must not: with one flag
    shared between them, B's 'not taken' overwrote A's and the lock stayed held for ever."""
    store = runtime.get_store()
    a_took, b_tried = threading.Event(), threading.Event()

    def fork_a() -> None:
        memory_services._before_fork()
        a_took.set()
        b_tried.wait(5)
        memory_services._after_fork_in_parent()

    def fork_b() -> None:
        a_took.wait(5)
        memory_services._before_fork()  # times out: A holds the lock
        b_tried.set()
        memory_services._after_fork_in_parent()

    threads = [threading.Thread(target=fork_a), threading.Thread(target=fork_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert store.lock.acquire(timeout=1)
    store.lock.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_process_that_forks_stops_listening_until_it_uses_the_store_again(control_dir):
    listener = runtime.start_listener()
    assert listener is not None and listener.path.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0)
    os.waitpid(pid, 0)
    assert (memory_services._services.listener, listener.path.exists()) == (None, False)
    assert runtime.start_listener() is not None  # used again: it serves again
    runtime.stop_listener()


def test_evictions_made_by_a_smaller_budget_are_reported_as_settings_not_as_a_full_store(caplog):
    for n in range(600):
        session = SessionStore()
        session["n"] = n
        session.save()
    reasons = []

    def receiver(sender, reason, **kwargs):
        reasons.append(reason)

    sessions_evicted.connect(receiver)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="django_memsession"),
            override_settings(MEMSESSION_MAX_SIZE="64K"),
        ):
            pass
    finally:
        sessions_evicted.disconnect(receiver)
    assert reasons == ["settings"]
    assert "Session store full" not in caplog.text


def test_a_settings_change_is_applied_once(monkeypatch):
    runtime.get_store()
    calls = []
    monkeypatch.setattr(
        memory_services._services.store, "reconfigure", lambda limits: calls.append(limits)
    )
    with override_settings(MEMSESSION_LOW_WATER=0.5):
        assert len(calls) == 1
