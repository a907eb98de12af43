"""The status Data Action's answer: the bot's text, structured fields, nobody else's data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streams.fanout import Customer, Subscriber
from streams.replies import AreaOutage, ReplyRules
from streams.reply_texts import ReplyTexts
from streams.status_answer import answer_status, opted_out

NOW = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)  # noon in Los Angeles
PHONE = "+14155550123"
TEXTS = ReplyTexts("Outage Alerts", "call 800-555-0100")
RULES = ReplyRules()


def sub(regions: tuple[str, ...] = ("R1",), zone: str | None = "America/Los_Angeles") -> Subscriber:
    customer = Customer("C1", frozenset(regions), True, "en", zone)
    return Subscriber(PHONE, (customer,), "mobile", True, "US", None)


def outage(
    oid: str = "O1",
    status: str = "detected",
    regions: tuple[str, ...] = ("R1",),
    eta: datetime | None = NOW + timedelta(hours=3, minutes=30),
    url: str | None = "https://status.example.com/o/1",
    at: datetime = NOW - timedelta(minutes=5),
) -> AreaOutage:
    return AreaOutage(oid, 1, status, frozenset(regions), eta, url, at)


def test_ongoing_outage_in_my_region() -> None:
    a = answer_status("87654", sub(), None, [outage()], TEXTS, RULES, NOW)
    assert a.status == "ongoing" and a.known_customer and not a.opted_out
    assert a.outage_count == 1 and a.outage_ids == ["O1"]
    assert a.eta_utc == "2026-11-24T23:30:00Z"
    assert a.eta_local == "3:30 PM"
    assert a.eta_local_iso == "2026-11-24T15:30:00-08:00"
    assert a.timezone == "America/Los_Angeles"
    assert a.status_url == "https://status.example.com/o/1"
    assert "Outage in your area" in a.reply_text and "3:30 PM" in a.reply_text
    assert a.reply_segments >= 1 and a.as_of == "2026-11-24T20:00:00Z"


def test_the_reply_text_is_the_status_bots() -> None:
    from streams.replies import status_text

    text, _ = status_text(TEXTS, sub(), [outage()], NOW, RULES)
    assert answer_status(None, sub(), None, [outage()], TEXTS, RULES, NOW).reply_text == text.body


def test_resolved_outage_answers_restored_without_eta() -> None:
    a = answer_status(None, sub(), None, [outage(status="resolved")], TEXTS, RULES, NOW)
    assert a.status == "restored" and a.outage_count == 0
    assert a.eta_utc == a.eta_local == a.status_url == ""
    assert "restored" in a.reply_text


def test_outage_elsewhere_is_not_mine() -> None:
    a = answer_status(None, sub(("R2",)), None, [outage()], TEXTS, RULES, NOW)
    assert a.status == "no_outage" and a.outage_ids == [] and a.status_url == ""


def test_two_outages_take_the_latest_eta_and_first_url() -> None:
    later = outage("O2", eta=NOW + timedelta(hours=30), url="https://status.example.com/o/2")
    a = answer_status(None, sub(), None, [later, outage()], TEXTS, RULES, NOW)
    assert a.outage_count == 2 and a.outage_ids == ["O1", "O2"]
    assert a.eta_utc == "2026-11-26T02:00:00Z" and a.eta_local.startswith("Wed ")
    assert a.status_url == "https://status.example.com/o/1"


def test_unknown_eta_is_empty_not_null() -> None:
    a = answer_status(None, sub(), None, [outage(eta=None)], TEXTS, RULES, NOW)
    assert a.status == "ongoing" and a.eta_utc == "" and a.eta_local == ""
    assert "not yet known" in a.reply_text


def test_unknown_number_gets_the_generic_answer_and_nothing_else() -> None:
    a = answer_status(None, None, None, [outage()], TEXTS, RULES, NOW)
    body = a.to_json()
    assert body["status"] == "unknown_number" and not body["known_customer"]
    assert body["outage_ids"] == [] and body["outage_count"] == 0
    assert body["eta_utc"] == body["timezone"] == body["status_url"] == ""
    assert "no account" in body["reply_text"]
    assert not [v for v in body.values() if v is None], "Architect gets no nulls"


@pytest.mark.parametrize(
    ("state", "sender", "expected"),
    [
        (None, None, False),
        ({"all": False, "senders": ["87654"]}, "87654", True),
        ({"all": False, "senders": ["87654"]}, "+14155550100", False),
        ({"all": False, "senders": ["87654"]}, None, True),
        ({"all": True, "senders": []}, "+14155550100", True),
        ({"all": False, "senders": []}, None, False),
    ],
)
def test_opted_out(state: dict[str, object] | None, sender: str | None, expected: bool) -> None:
    assert opted_out(state, sender) is expected
    a = answer_status(sender, sub(), state, [], TEXTS, RULES, NOW)
    assert a.opted_out is expected
