"""Merging a save onto a session another request saved since this one loaded it (issue 24), for
both engines.

A session is saved whole. When two requests of one visitor run at once, each loads it, changes
something and saves it back, and the later save used to erase what the earlier one wrote. The
engines now keep, from each load, the payload they loaded (the *base*: the bytes already at hand,
no extra serialization) and send it with the save; the store writes only if what it holds is
still that payload (memory) or that version (Redis). Otherwise (a *conflict*) the engine calls
:func:`merge` with the base, what is stored now (*theirs*) and this request's dict (*ours*), and
saves the result, again on condition that *theirs* is still stored.

The merge is three-way, per top-level key, with nothing tracked on the hot path: a key is changed
by this request when it is not in base and ours alike or their serialized forms differ (so it
works with every ``SESSION_SERIALIZER``, and with a nested value mutated in place and
``modified = True``). Changed keys are applied onto theirs (set or deleted); the others keep
theirs. A key changed by both requests to different values is a *conflict*: ours wins for it (the
later save, as for the whole session before) and its name is reported. A request that changed
nothing yields theirs as it is (its save refreshes the expiry and writes no data of its own);
``set_expiry()`` is a change of ``_session_expiry`` like any other key.

A logout, ``flush()`` or ``cycle_key()`` in between deletes the key the late save writes to: the
store answers that the session is missing before any merge, and the save raises ``UpdateError``
as before.

This module is pure: no store, no I/O, no Django request. What the engines do with a
:class:`Merged` (where the conflict is counted, the ``session_conflict`` signal) is in
:func:`report_conflict`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .serializers import Codec
from .signals import session_conflict

__all__ = [
    "MERGE_TIME",
    "MERGE_TRIES",
    "Merged",
    "backoff",
    "changed_keys",
    "merge",
    "report_conflict",
]

logger = logging.getLogger("django_memsession")

# The bound on a conflicting save's retries: at most this many compare-and-set attempts after the
# first, and at most this many seconds of backoff in all. The memory engine makes its last
# attempt under the store's lock, so it never gives up; the Redis engine gives up with
# SessionBackendUnavailable.
MERGE_TRIES = 4
MERGE_TIME = 0.05
# The first retry waits up to this long; each later one up to twice as long (full jitter).
BACKOFF_BASE = 0.0005

_ABSENT = object()


@dataclass(frozen=True, slots=True)
class Merged:
    """The session to save, and the names of the keys both requests changed differently (sorted;
    empty when nothing conflicted)."""

    data: dict[str, Any]
    conflicts: tuple[str, ...]


def _form(codec: Codec, key: str, value: Any) -> bytes | object:
    """The serialized form of one key's value (a value the codec cannot write compares unequal
    to everything but itself: the key counts as changed)."""
    if value is _ABSENT:
        return _ABSENT
    try:
        return codec.dumps({key: value})
    except Exception:
        return object()


def _decode(codec: Codec, payload: bytes | None) -> dict[str, Any]:
    """A payload as a dict; an absent or unreadable one (a change of ``SESSION_SERIALIZER``) as
    an empty session, as the engines load it."""
    if payload is None:
        return {}
    try:
        data = codec.loads(payload)
    except Exception:
        return {}
    return data if isinstance(data, dict) else {}


def changed_keys(
    base: dict[str, Any], ours: dict[str, Any], codec: Codec
) -> dict[str, tuple[bytes | object, bytes | object]]:
    """The keys ``ours`` changed from ``base``, each with its serialized form in ours and in
    base (``_ABSENT``: not there)."""
    changed: dict[str, tuple[bytes | object, bytes | object]] = {}
    for key in base.keys() | ours.keys():
        mine = _form(codec, key, ours.get(key, _ABSENT))
        before = _form(codec, key, base.get(key, _ABSENT))
        if mine != before:
            changed[key] = (mine, before)
    return changed


def merge(
    base_payload: bytes | None, theirs_payload: bytes, ours: dict[str, Any], codec: Codec
) -> Merged:
    """``ours`` (this request's session) applied onto ``theirs_payload`` (what is stored now),
    given ``base_payload`` (what this request loaded). Decodes both payloads; ``ours`` is not
    changed."""
    base = _decode(codec, base_payload)
    theirs = _decode(codec, theirs_payload)
    data = dict(theirs)
    conflicts = []
    for key, (mine, before) in changed_keys(base, ours, codec).items():
        current = theirs.get(key, _ABSENT)
        if current is not _ABSENT or before is not _ABSENT:
            current_form = _form(codec, key, current)
            if current_form != before and current_form != mine:
                conflicts.append(key)
        if mine is _ABSENT:
            data.pop(key, None)
        else:
            data[key] = ours[key]
    return Merged(data, tuple(sorted(conflicts)))


def backoff(attempt: int, sleep: Callable[[float], object]) -> None:
    """Wait before retry ``attempt`` (1, 2...): full jitter, doubling, so that writers that
    collided do not collide again in step."""
    sleep(random.uniform(0, BACKOFF_BASE * 2 ** (attempt - 1)))


def report_conflict(sender: type, conflicts: tuple[str, ...], user: str | None) -> None:
    """Tell about a conflict (a key both requests changed differently): the
    ``session_conflict`` signal and a debug log line, with the user's id (None: anonymous) and
    the key names, never the session key or any value. Call with no lock held."""
    if not conflicts:
        return
    logger.debug(
        "Concurrent saves changed the same session keys (%s); the later save's values were kept.",
        ", ".join(conflicts),
    )
    session_conflict.send(sender=sender, user=user, keys=conflicts)
