"""What a number is owed when its alert never went: the opt-out footer, and no "restored"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import DeliveryOutcome, MessageKind, SendCommand
from streams.dispatch import DispatchRules, Reason, Send, Terminal, decide
from streams.first_contact import (
    owed_key,
    settle,
    unalerted,
    unalerted_key,
    with_owed_footer,
)
from streams.sms_text import segment_info
from streams.templates import Templates, opt_out_footer, with_opt_out_footer

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PHONE = "+14155550123"
TEMPLATES = Templates("Acme Power")


def command(kind: MessageKind, first: bool, version: int = 1, **extra: Any) -> SendCommand:
    text = TEMPLATES.render(kind, "en", "Power out near Elm St.", "3:00 PM", None, first)
    fields: dict[str, Any] = {
        "command_id": f"c-{kind.value}-{version}",
        "kind": kind.value,
        "outage_id": "o-1",
        "outage_version": version,
        "from": "87654",
        "to": PHONE,
        "body": text.body,
        "encoding": text.encoding.value,
        "segments": text.segments,
        "created_at": NOW - timedelta(minutes=5),
    }
    fields.update(extra)
    return SendCommand.from_obj(fields)


def apply(book: dict[str, Any], changes: list[tuple[str, dict[str, Any] | None]]) -> None:
    for key, value in changes:
        if value is None:
            book.pop(key, None)
        else:
            book[key] = value


def finish(
    book: dict[str, Any], cmd: SendCommand, outcome: DeliveryOutcome, reason: str | None = None
) -> SendCommand:
    """The dispatcher's steps for one command: footer at its turn, then settle."""
    sent = with_owed_footer(cmd, book)
    apply(book, settle(sent, outcome, reason, book))
    return sent


SUPPRESSED = DeliveryOutcome.SUPPRESSED
SENT = DeliveryOutcome.SENT


# --- the footer ------------------------------------------------------------------------


def test_an_update_after_an_alert_that_was_never_sent_carries_the_opt_out_footer() -> None:
    book: dict[str, Any] = {}
    finish(book, command(MessageKind.ALERT, first=True), SUPPRESSED, "stale")
    update = command(MessageKind.UPDATE, first=False, version=2)
    assert not update.body.endswith(opt_out_footer("en"))

    sent = finish(book, update, SENT)

    assert sent.body.endswith("Reply STOP to opt out.")
    assert owed_key(PHONE) not in book, "a sent footer is no longer owed"
    following = finish(book, command(MessageKind.UPDATE, first=False, version=3), SENT)
    assert not following.body.endswith(opt_out_footer("en")), "owed once, not forever"


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (DeliveryOutcome.SUPPRESSED, "stale"),
        (DeliveryOutcome.SUPPRESSED, "opted_out"),
        (DeliveryOutcome.EXPIRED, "expired"),
        (DeliveryOutcome.FAILED, "retries_exhausted"),
        (DeliveryOutcome.FAILED, "outcome_unknown"),
    ],
)
def test_every_unsent_first_text_leaves_the_footer_owed(
    outcome: DeliveryOutcome, reason: str
) -> None:
    book: dict[str, Any] = {}
    finish(book, command(MessageKind.ALERT, first=True), outcome, reason)
    assert book[owed_key(PHONE)] == {"language": "en"}


def test_a_sent_first_text_owes_nothing_and_a_text_without_footer_changes_nothing() -> None:
    book: dict[str, Any] = {}
    finish(book, command(MessageKind.ALERT, first=True), SENT)
    assert book == {}
    finish(book, command(MessageKind.UPDATE, first=False, version=2), SUPPRESSED, "stale")
    assert owed_key(PHONE) not in book


def test_the_footer_rides_on_the_next_outage_text_even_of_another_outage() -> None:
    book: dict[str, Any] = {}
    finish(book, command(MessageKind.ALERT, first=True), SUPPRESSED, "stale")
    other = command(MessageKind.ALERT, first=False, outage_id="o-2", command_id="c-o2")
    assert finish(book, other, SENT).body.endswith(opt_out_footer("en"))


def test_replies_neither_take_nor_settle_the_footer() -> None:
    book: dict[str, Any] = {owed_key(PHONE): {"language": "en"}}
    reply = command(MessageKind.UPDATE, first=False).model_copy(
        update={"kind": MessageKind.REPLY, "outage_id": None, "body": "No known outage."}
    )
    assert with_owed_footer(reply, book) is reply
    assert settle(reply, SENT, None, book) == []


def test_the_footer_is_recounted_and_may_take_one_more_segment() -> None:
    full = "x" * 150
    text = with_opt_out_footer(full, "en")
    assert text.body == full + " Reply STOP to opt out."
    assert (text.segments, text.encoding.value) == (2, "gsm7")
    assert with_opt_out_footer(text.body, "en") == text, "never twice"


def test_the_footer_is_in_the_customers_language() -> None:
    text = with_opt_out_footer("Corte de servicio en su zona.", "es")
    assert text.body.endswith("Responda STOP para cancelar.")


def test_a_ucs2_body_stays_ucs2_and_counts_its_footer() -> None:
    body = "Störung 🔌 in Ihrer Nähe."
    text = with_opt_out_footer(body, "en")
    assert text.encoding.value == "ucs2"
    assert text.segments == segment_info(text.body).segments


@given(st.text(min_size=1, max_size=300))
def test_the_footer_is_appended_exactly_once_to_any_body(body: str) -> None:
    once = with_opt_out_footer(body, "en")
    assert once.body.endswith(opt_out_footer("en"))
    assert with_opt_out_footer(once.body, "en").body == once.body


# --- restored only to those alerted ----------------------------------------------------


def test_restored_is_suppressed_when_the_alert_ended_unsent_and_the_mark_is_then_dropped() -> None:
    book: dict[str, Any] = {}
    finish(book, command(MessageKind.ALERT, first=True), SUPPRESSED, "stale")
    restored = command(MessageKind.RESTORED, first=False, version=2)
    assert unalerted(restored, book)

    decision = decide(restored, None, None, False, NOW, DispatchRules(), never_alerted=True)

    assert decision == Terminal(SUPPRESSED, Reason.NOT_ALERTED, "alert not sent")
    finish(book, restored, SUPPRESSED, Reason.NOT_ALERTED.value)
    assert unalerted_key(PHONE, "o-1") not in book, "the outage is over for this number"


def test_an_update_that_is_sent_counts_as_the_alert() -> None:
    book: dict[str, Any] = {}
    finish(book, command(MessageKind.ALERT, first=True), SUPPRESSED, "stale")
    finish(book, command(MessageKind.UPDATE, first=False, version=2), SENT)
    assert not unalerted(command(MessageKind.RESTORED, first=False, version=3), book)


def test_an_unknown_outcome_may_have_reached_the_number_so_restored_still_goes() -> None:
    book: dict[str, Any] = {}
    finish(book, command(MessageKind.ALERT, first=True), DeliveryOutcome.FAILED, "outcome_unknown")
    assert not unalerted(command(MessageKind.RESTORED, first=False, version=2), book)


def test_unalerted_is_per_outage() -> None:
    book: dict[str, Any] = {}
    finish(book, command(MessageKind.ALERT, first=True), SUPPRESSED, "stale")
    other = command(MessageKind.RESTORED, first=False, outage_id="o-2", command_id="c-r2")
    assert not unalerted(other, book)


@pytest.mark.parametrize("kind", [MessageKind.ALERT, MessageKind.UPDATE])
def test_never_alerted_stops_only_restored_texts(kind: MessageKind) -> None:
    cmd = command(kind, first=False)
    assert isinstance(decide(cmd, None, None, False, NOW, never_alerted=True), Send)


def test_an_opt_out_or_staleness_is_reported_before_not_alerted() -> None:
    restored = command(MessageKind.RESTORED, first=False, version=2)
    opted = decide(restored, {"all": True}, None, False, NOW, never_alerted=True)
    assert isinstance(opted, Terminal)
    assert opted.reason == Reason.OPTED_OUT


def test_a_text_that_overtakes_the_queued_first_text_carries_the_footer_too() -> None:
    """The first text (with the footer) still waits (quiet hours, a retry) when a
    life-safety update for the number goes: that update is what the customer reads first."""
    first = command(MessageKind.ALERT, first=True)
    overtaking = command(MessageKind.UPDATE, first=False, version=2)
    pending = {PHONE: 1}

    assert with_owed_footer(first, {}, pending) is first, "it has the footer already"
    assert with_owed_footer(overtaking, {}, pending).body.endswith(opt_out_footer("en"))
    assert with_owed_footer(overtaking, {}, {}) is overtaking, "nothing pending, nothing owed"
