"""Real processes for the tests: a process holding a store, a command run as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent


class store_process:
    """Run tests/store_process.py with this test's control directory; yield its pid."""

    def __init__(
        self,
        control_dir: str,
        short: int = 0,
        long: int = 1,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.env = {
            **os.environ,
            "MEMSESSION_CONTROL_DIR": control_dir,
            "DJANGO_SETTINGS_MODULE": "testsite.settings",
            **(extra_env or {}),
        }
        self.args = [sys.executable, str(TESTS_DIR / "store_process.py"), str(short), str(long)]

    def __enter__(self) -> int:
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), line
        return self.proc.pid

    def __exit__(self, *exc: object) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def run_command(
    *args: str, control_dir: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m django <args>`` with the test settings and this control directory (and
    ``env`` added to the environment)."""
    env = {
        **os.environ,
        "MEMSESSION_CONTROL_DIR": control_dir,
        "DJANGO_SETTINGS_MODULE": "testsite.settings",
        "PYTHONPATH": str(TESTS_DIR),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
