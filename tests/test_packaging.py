"""The suite tests the installed wheel, and the wheel carries what the package needs to run."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata, resources
from pathlib import Path

import pytest

import django_memsession
from django_memsession.redis.scripts import PARTS

REPOSITORY = Path(__file__).resolve().parent.parent
LUA_FILES = sorted({f"redis/lua/{part}.lua" for parts in PARTS.values() for part in parts})

# tox sets this: its environments install the built wheel. A developer running `pytest` straight
# from a checkout tests the source tree, where these checks would be meaningless.
installed_only = pytest.mark.skipif(
    os.environ.get("MEMSESSION_EXPECT_INSTALLED") != "1",
    reason="MEMSESSION_EXPECT_INSTALLED=1 is not set (tox sets it)",
)


@installed_only
def test_package_is_imported_from_site_packages_not_from_the_repository() -> None:
    package_dir = Path(django_memsession.__file__).resolve().parent
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()

    assert package_dir.parent == site_packages, (
        f"django_memsession was imported from {package_dir}, not from {site_packages}: "
        "run the `pytest` console script, not `python -m pytest`, which puts the repository "
        "root on sys.path"
    )


@installed_only
def test_wheel_installs_the_django_memsession_package_only() -> None:
    files = metadata.files("django-memsession") or []
    top_level = {file.parts[0] for file in files if not file.parts[0].endswith(".dist-info")}

    # Console scripts and caches land outside site-packages and show up as "..".
    assert top_level - {".."} == {"django_memsession"}


@pytest.mark.parametrize(
    "relative_path",
    [
        "py.typed",
        "templates/django_memsession/stats.html",
        "templates/django_memsession/stats_frame.html",
        "templates/django_memsession/plot.html",
        *LUA_FILES,
    ],
)
def test_package_ships_data_file(relative_path: str) -> None:
    data_file = resources.files("django_memsession").joinpath(*relative_path.split("/"))

    assert data_file.is_file(), (
        f"django_memsession/{relative_path} is missing from the installed package: "
        "check [tool.setuptools.package-data] in pyproject.toml"
    )


@pytest.mark.heavy
def test_built_wheel_holds_every_lua_script(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=REPOSITORY,
        check=True,
    )
    (wheel,) = tmp_path.glob("django_memsession-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())

    assert {f"django_memsession/{path}" for path in LUA_FILES} <= names, (
        "a Lua script is missing from the wheel: check [tool.setuptools.package-data] in "
        "pyproject.toml"
    )
