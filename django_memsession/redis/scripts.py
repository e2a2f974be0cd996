"""The Lua scripts the Redis engine runs: read from ``lua/*.lua`` (package data, shipped in the
wheel), each file documenting its ``KEYS``, ``ARGV`` and returns in its opening comment.

A script as sent is its shared functions first (``header_of.lua``: what a session key holds;
``user_hash.lua``, ``live.lua``, ``write_version.lua``), then its body: :data:`PARTS` says
which. Each touches the keys of one hash slot, all given in ``KEYS`` (a Redis Cluster requires
it): an operation over a session and its user's hash is ordered steps (``steps.py``). The files
are read on first use (a store registering its scripts), once per process, not at import.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["PARTS", "source"]

# Each script: the files it is made of, in order (the functions it calls come before its body).
PARTS = {
    "promote": ("header_of", "promote"),
    "update": ("header_of", "write_version", "update"),
    "discard": ("discard",),
    "touch": ("user_hash", "touch"),
    "index": ("user_hash", "index"),
    "drop": ("user_hash", "drop"),
    "prune": ("user_hash", "prune"),
    "members": ("user_hash", "members"),
    "ending": ("header_of", "live", "ending"),
    "export": ("header_of", "export"),
    "mirror": ("header_of", "mirror"),
}


@cache
def source(name: str) -> str:
    """The text of the script ``name`` (a key of :data:`PARTS`), as ``SCRIPT LOAD`` takes it."""
    lua = resources.files(__package__).joinpath("lua")
    text = "".join(lua.joinpath(f"{part}.lua").read_text(encoding="utf-8") for part in PARTS[name])
    # Without its comment lines: a script sent as EVAL (in a transaction, see steps.py) is sent
    # whole each time.
    return "".join(line for line in text.splitlines(keepends=True) if not _comment(line))


def _comment(line: str) -> bool:
    return line.lstrip().startswith("--")
