"""The control channel's messages: typed, and a reply that is not what its type says is a
``MessageError`` naming the field, never a ``KeyError`` or a wrong value passed on."""

from __future__ import annotations

import dataclasses
import json

import pytest

from django_memsession.messages import (
    MessageError,
    PassReport,
    ProcessReport,
    PrunerState,
    Reply,
    Request,
    Sample,
    StoreStats,
    UserSession,
    from_json,
    to_json,
)

STATS = StoreStats(
    pid=1,
    entries=2,
    bytes=3,
    max_bytes=4,
    low_water_bytes=3,
    max_session_bytes=2,
    remembered=0,
    remembered_bytes=0,
    hits=5,
    misses=6,
    evictions=7,
    expired=8,
    restored=0,
    rejected=0,
    segments={"probation": 1, "returning": 0, "authenticated": 1},
    created_at=1.5,
)
PASS = PassReport(
    started_at=1.0,
    duration=0.5,
    expired=2,
    expired_bytes=20,
    evicted=3,
    evicted_bytes=30,
    longest_lock_hold=0.001,
)
REPORT = ProcessReport(
    pid=1,
    uptime=2.0,
    stats=STATS,
    pruner=PrunerState(alive=True, interval=60.0, passes=1, failures=0, last_pass=PASS),
    history=[Sample(time=1.0, entries=2, bytes=3)],
    result=PASS,
)


def test_a_report_round_trips():
    assert from_json(Reply, to_json(Reply(ok=True, report=REPORT))) == Reply(ok=True, report=REPORT)


def test_removed_is_expired_plus_evicted():
    assert (PASS.removed, PASS.bytes_freed) == (5, 50)


def edited(path: list[str], value: object) -> bytes:
    data = json.loads(to_json(Reply(ok=True, report=REPORT)))
    target = data
    for name in path[:-1]:
        target = target[name]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("path", "value", "said"),
    [
        (["report", "stats", "entries"], KeyError, "Reply.report.stats.entries: missing"),
        (["report", "stats", "entries"], "2", "Reply.report.stats.entries: expected an integer"),
        (["report", "stats", "entries"], True, "Reply.report.stats.entries: expected an integer"),
        (["report", "uptime"], None, "Reply.report.uptime: expected a number"),
        (["report", "pruner", "alive"], 1, "Reply.report.pruner.alive: expected true or false"),
        (["report", "history"], {}, "Reply.report.history: expected a list"),
        (["report", "stats", "segments"], {"probation": "x"}, "segments.probation"),
        (["report", "result", "evicted"], 1.5, "Reply.report.result.evicted"),
        (["report"], [], "Reply.report: expected an object"),
    ],
)
def test_a_reply_that_is_not_what_its_type_says_names_the_field(path, value, said):
    with pytest.raises(MessageError) as excinfo:
        from_json(Reply, edited(path, value))
    assert said in str(excinfo.value)


@pytest.mark.parametrize(
    "data",
    [
        b'{"command": "report", "sent_at": ' + b"1" * 400 + b', "nonce": "n"}',
        b'{"command": "report", "sent_at": NaN, "nonce": "n"}',
        b'{"command": "report", "sent_at": Infinity, "nonce": "n"}',
        b"[" * 5000 + b"]" * 5000,
        b"not json",
        b"\xff\xfe",
    ],
    ids=["400-digits", "nan", "infinity", "deep", "text", "bytes"],
)
def test_parsing_is_bounded_and_raises_only_message_error(data):
    with pytest.raises(MessageError):
        from_json(Request, data)


def test_optional_fields_may_be_left_out():
    assert from_json(Reply, b'{"ok": false}') == Reply(ok=False)


def test_a_page_of_a_users_sessions_round_trips():
    record = UserSession(
        id="ab" * 16,
        pid=1,
        user="42",
        created=1.0,
        last_used=2.0,
        expires=3.0,
        ip="203.0.113.5",
        user_agent="Firefox",
    )
    report = dataclasses.replace(REPORT, sessions=[record], sessions_total=501, ended=0)
    assert from_json(Reply, to_json(Reply(ok=True, report=report))).report == report


def test_a_session_record_without_its_id_is_refused():
    with pytest.raises(MessageError, match=r"sessions\[0\]\.id: missing"):
        from_json(ProcessReport, json.dumps({**dataclasses.asdict(REPORT), "sessions": [{}]}))
