"""The package's pytest plugin (loaded through the ``pytest11`` entry point).

A test run serves no requests, so its processes do not listen on the control channel (a test
that needs a listener starts one with ``runtime.start_listener()``). And the ``memsession``
fixture empties this process's session store before and after the test, so sessions made by one
test never leak into the next, and yields the store for inspection::

    def test_login_keeps_one_session(client, memsession):
        client.login(username="u", password="p")
        assert memsession.stats()["entries"] == 1
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .memory.store import MemoryStore


def pytest_configure(config: pytest.Config) -> None:
    from . import serving

    serving.set_listening(False)


@pytest.fixture
def memsession() -> Iterator[MemoryStore]:
    from .runtime import clear, get_store

    clear()
    yield get_store()
    clear()
