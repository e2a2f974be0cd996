"""Every message of the control channel, typed, and the one codec they go through.

A message is a frozen dataclass of JSON-ready fields: ``int``, ``float``, ``bool``, ``str``,
``None``, ``dict[str, int]``, lists of messages, and nested messages. :func:`to_json` writes one;
:func:`from_json` reads one back and checks every field against its annotation, so a reply that
lacks a field or holds the wrong type is a :class:`MessageError` naming it, never a ``KeyError``
in a command or a 500 on the admin page. Readers use fields, never raw dict keys.

Parsing is bounded: the caller bounds the size; integers of more than 20 digits, ``NaN`` and
``Infinity`` are refused; nesting deeper than Python's recursion limit is a ``MessageError``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

__all__ = [
    "ExportedSession",
    "Gathered",
    "MessageError",
    "MirrorState",
    "NearCacheStats",
    "PassReport",
    "ProcessReport",
    "PrunerState",
    "RedisProcessStats",
    "RemovedTotals",
    "Reply",
    "Request",
    "RestoreReport",
    "Sample",
    "SnapshotReport",
    "SnapshotState",
    "StoreStats",
    "UserSession",
    "from_json",
    "split_warning",
    "to_json",
]

M = TypeVar("M")

MAX_INT_DIGITS = 20
COMMANDS = ("report", "prune", "snapshot", "sessions", "end", "mirror", "export")
# Records of a user's sessions in one reply; a process with more is asked again from an offset.
SESSIONS_PAGE = 500
# Bytes of exported sessions (base64 payloads and keys) in one reply of "export", far inside
# control.MAX_REPLY_BYTES (16 MiB) with the JSON around them; a process with more is asked again
# from an offset.
EXPORT_PAGE_BYTES = 4 * 1024 * 1024


class MessageError(ValueError):
    """A message that is not what its type says; the text names the field, never its value."""


# -- the messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What a client asks one process. Signed as raw bytes before it is parsed (see control)."""

    command: str
    sent_at: float
    nonce: str
    dry_run: bool = False
    # "sessions" and "end": whose (Django's _auth_user_id text); "sessions": from which record;
    # "end": only this session (an opaque id), or all but ``keep`` (an opaque id). Never a key.
    user: str | None = None
    offset: int = 0
    session_id: str | None = None
    keep: str | None = None
    # "export": which export run the page is of (an opaque token of the command's).
    run: str | None = None


class RemovedTotals:
    """What a prune removed, summed as every figure shows it: ``removed`` is always expired plus
    evicted sessions (the base of :class:`PassReport` and the memory store's ``PruneResult``)."""

    expired: int
    expired_bytes: int
    evicted: int
    evicted_bytes: int

    @property
    def removed(self) -> int:
        return self.expired + self.evicted

    @property
    def bytes_freed(self) -> int:
        return self.expired_bytes + self.evicted_bytes


@dataclass(frozen=True)
class PassReport(RemovedTotals):
    """What one prune pass removed (or, ``dry_run``, would remove)."""

    started_at: float
    duration: float
    expired: int
    expired_bytes: int
    evicted: int
    evicted_bytes: int
    longest_lock_hold: float
    dry_run: bool = False


@dataclass(frozen=True)
class PrunerState:
    alive: bool
    interval: float | None
    passes: int
    failures: int
    last_pass: PassReport | None


@dataclass(frozen=True)
class Sample:
    """The store's size at one moment, for the admin page's plot."""

    time: float
    entries: int
    bytes: int


@dataclass(frozen=True)
class StoreStats:
    """One store's figures: what ``django_memsession.stats()`` returns, typed."""

    pid: int
    entries: int
    bytes: int
    max_bytes: int
    low_water_bytes: int
    max_session_bytes: int
    remembered: int
    remembered_bytes: int
    hits: int
    misses: int
    evictions: int
    expired: int
    restored: int
    rejected: int
    segments: dict[str, int]
    created_at: float
    users: int = 0  # distinct logged-in users (0 from a process of an older version)
    user_index_bytes: int = 0
    # Saves merged onto another request's (see merge.py), and those where both changed a key
    # differently (0 from a process of an older version).
    merged: int = 0
    conflicts: int = 0


@dataclass(frozen=True)
class NearCacheStats:
    """One process's near cache (``MEMSESSION_REDIS_NEAR_CACHE``): where its loads were
    answered (L1: the near cache, no round trip; L2: Redis; or no live session), the
    invalidations Redis sent it, and its memory store's figures."""

    l1_hits: int
    l2_hits: int
    misses: int
    invalidations: int
    flushes: int
    tracking: bool
    tracking_losses: int
    entries: int
    bytes: int
    max_bytes: int
    evictions: int


@dataclass(frozen=True)
class RedisProcessStats:
    """One process's own figures on the Redis engine (Redis's are read from Redis itself): what
    its loads found, and its round trips' latency over the last ones (None before any)."""

    hits: int
    misses: int
    round_trips: int
    latency_samples: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    # Seconds between two samples of Redis's figures for the history (None: not sampled).
    sample_interval: float | None = None
    sample_failures: int = 0
    near: NearCacheStats | None = None  # None: no near cache in this process


@dataclass(frozen=True)
class UserSession:
    """One of a user's live sessions, in one process. ``id`` is opaque (an HMAC of the key with
    a salt of its own): it names the session to end it, and never reveals the key."""

    id: str
    pid: int
    user: str
    created: float
    last_used: float
    expires: float
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class ExportedSession:
    """One live session copied by ``exportsessions``: its key (the channel is this user's own
    and signed; a key never leaves the command), its serialized data (base64) and expiry."""

    key: str
    payload: str
    expires_at: float
    logged_in: bool


@dataclass(frozen=True)
class MirrorState:
    """This process's mirror of its writes and deletes to Redis (see mirror.py)."""

    on: bool
    url: str  # without its password
    since: float
    queued: int
    mirrored: int
    failures: int
    lost: int
    last_error: str | None = None


@dataclass(frozen=True)
class SnapshotReport:
    """One snapshot written: when it began, how long it took, what it holds, and why."""

    started_at: float
    duration: float
    sessions: int
    bytes: int
    reason: str


@dataclass(frozen=True)
class RestoreReport:
    """What a process put back from the snapshot when it started, and what it left out."""

    at: float
    sessions: int
    expired: int
    journaled: int  # written or deleted after the snapshot began: never brought back
    left_out: int  # over the budget
    duration: float
    snapshot_started_at: float


@dataclass(frozen=True)
class SnapshotState:
    path: str
    owner: bool
    holder: int | None
    interval: float | None
    last: SnapshotReport | None
    restored: RestoreReport | None
    failures: int


@dataclass(frozen=True)
class ProcessReport:
    """One process's answer: its store, its pruner, its history, its snapshot, and the pass or
    the snapshot it was asked for.

    On the Redis engine a process holds no store and runs no pruner (``stats`` and ``pruner``
    are None): ``redis`` holds its own figures, and ``history`` samples of Redis's (sessions,
    and Redis's used memory as bytes).
    """

    pid: int
    uptime: float
    stats: StoreStats | None
    pruner: PrunerState | None
    history: list[Sample] = field(default_factory=list)
    result: PassReport | None = None
    snapshot: SnapshotState | None = None
    written: SnapshotReport | None = None
    # Why the process did not do what it was asked (e.g. it does not own the snapshot).
    refused: str | None = None
    # "sessions": a page of the user's sessions here, and how many there are in all; "end":
    # how many it ended.
    sessions: list[UserSession] = field(default_factory=list)
    sessions_total: int = 0
    ended: int = 0
    redis: RedisProcessStats | None = None
    # "export": a page of this process's sessions, from the request's offset, and how many
    # there are in all; "mirror" (and every report while it is on): the mirror.
    exported: list[ExportedSession] = field(default_factory=list)
    export_total: int = 0
    mirror: MirrorState | None = None


@dataclass(frozen=True)
class Reply:
    ok: bool
    report: ProcessReport | None = None
    error: str | None = None


@dataclass
class Gathered:
    """Reports of every live process reached (this one included when it holds a store)."""

    processes: list[ProcessReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    channel_on: bool = True
    searched: str = ""
    # Why the channel could not be used at all (e.g. the control directory was refused).
    problem: str | None = None

    @property
    def split(self) -> bool:
        """More than one process holds a store: sessions are split between them."""
        return len(self.processes) > 1


def split_warning(count: int) -> str:
    """The advice for a project whose sessions are split between processes (written once)."""
    return (
        f"{count} processes hold a session store, so sessions are split between them and users "
        "whose requests reach another process look logged out. Run one process with threads "
        "(gunicorn --workers 1 --threads 8) or use a shared session store."
    )


# -- the codec ----------------------------------------------------------------------------------


def to_json(message: Any) -> bytes:
    return json.dumps(dataclasses.asdict(message), separators=(",", ":"), allow_nan=False).encode()


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise MessageError("an integer with too many digits")
    return int(text)


def _no_constant(name: str) -> Any:
    raise MessageError(f"{name} is not allowed")


def from_json(cls: type[M], data: bytes) -> M:
    """Parse ``data`` as a ``cls`` message; :class:`MessageError` for anything else."""
    try:
        raw = json.loads(data, parse_int=_bounded_int, parse_constant=_no_constant)
    except MessageError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:
        raise MessageError(f"not a {cls.__name__}: not JSON ({type(exc).__name__})") from None
    return from_dict(cls, raw)


def from_dict(cls: type[M], raw: Any, path: str = "") -> M:
    """Build a ``cls`` message from parsed JSON, checking each field against its annotation."""
    name = path or cls.__name__
    if not isinstance(raw, dict):
        raise MessageError(f"{name}: expected an object")
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        where = f"{name}.{spec.name}"
        if spec.name not in raw:
            has_default = (
                spec.default is not dataclasses.MISSING
                or spec.default_factory is not dataclasses.MISSING
            )
            if has_default:
                continue
            raise MessageError(f"{where}: missing")
        values[spec.name] = _check(hints[spec.name], raw[spec.name], where)
    return cls(**values)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _check(inner, value, where)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise MessageError(f"{where}: expected a list")
        return [_check(item, element, f"{where}[{i}]") for i, element in enumerate(value)]
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise MessageError(f"{where}: expected an object")
        return {
            _check(key_type, key, where): _check(value_type, element, f"{where}.{key}")
            for key, element in value.items()
        }
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)  # type: ignore[arg-type]
    if hint is bool:
        if not isinstance(value, bool):
            raise MessageError(f"{where}: expected true or false")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise MessageError(f"{where}: expected an integer")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise MessageError(f"{where}: expected a number")
        if not math.isfinite(value):
            raise MessageError(f"{where}: expected a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise MessageError(f"{where}: expected a string")
        return value
    raise TypeError(f"{where}: no codec for {hint!r}")  # a programming error, not bad input
