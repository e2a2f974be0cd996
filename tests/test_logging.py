"""No log line and no signal ever carries a session key or session data."""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings

from django_memsession import SessionStore, SessionTooLarge, prune
from django_memsession.signals import sessions_evicted, sessions_expired

SECRET = "card-4111111111111111"


def test_no_log_record_or_signal_names_a_key_or_holds_session_data(caplog, global_clock):
    sent: list[dict] = []

    def receiver(sender, **kwargs):
        sent.append(kwargs)

    sessions_evicted.connect(receiver)
    sessions_expired.connect(receiver)
    keys: list[str] = []
    try:
        with (
            caplog.at_level(logging.DEBUG),
            override_settings(MEMSESSION_MAX_SIZE="64K", MEMSESSION_MAX_SESSION_SIZE="2K"),
        ):
            for n in range(600):  # a full store: evictions
                session = SessionStore()
                session["secret"] = SECRET
                session.set_expiry(10 if n % 2 else 3600)
                session.save()
                keys.append(session.session_key)
            too_large = SessionStore(keys[-1])
            too_large["blob"] = SECRET * 200
            with pytest.raises(SessionTooLarge):
                too_large.save()
            global_clock.advance(11)
            SessionStore(keys[-1]).load()  # found expired on load
            prune()
    finally:
        sessions_evicted.disconnect(receiver)
        sessions_expired.disconnect(receiver)

    ours = [record for record in caplog.records if record.name == "django_memsession"]
    assert {logging.WARNING, logging.ERROR} <= {record.levelno for record in ours}
    assert {event["reason"] for event in sent} >= {"write", "load", "prune"}
    for text in ("\n".join(record.getMessage() for record in ours), repr(sent)):
        assert SECRET[5:] not in text
        assert not any(key in text for key in keys)
