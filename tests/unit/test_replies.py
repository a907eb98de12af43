"""The inbound state machine: opt-out scope, confirmations, HELP, status bot, loops."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas import AuditRecord, InboundSms, SendCommand
from streams.fanout import Customer, Subscriber
from streams.loops import LoopRules
from streams.replies import (
    AreaOutage,
    InboundOutcome,
    ReplyRules,
    area_outage_from_state,
    blocks,
    handle_inbound,
    reply_command_id,
)
from streams.reply_texts import ReplyTexts

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
PHONE = "+14155550123"
SHORT = "87654"
LONG = "+14155550100"
TEXTS = ReplyTexts("Outage Alerts", "call 800-555-0100")
_ids = itertools.count()


def sub(regions: tuple[str, ...] = ("R1",), language: str = "en") -> Subscriber:
    return Subscriber(
        PHONE,
        (Customer("C1", frozenset(regions), True, language, "America/Los_Angeles"),),
        "mobile",
        True,
        "US",
        "America/Los_Angeles",
    )


def sms(body: str, at: datetime = T0, to: str = SHORT) -> InboundSms:
    return InboundSms.model_validate(
        {
            "message_id": f"m{next(_ids)}",
            "from": PHONE,
            "to": to,
            "body": body,
            "received_at": at.isoformat(),
        }
    )


class Number:
    """One customer's number, its state carried from one text to the next."""

    def __init__(
        self,
        subscriber: Subscriber | None = None,
        outages: tuple[AreaOutage, ...] = (),
        rules: ReplyRules | None = None,
    ) -> None:
        self.optout: dict[str, Any] | None = None
        self.guard: dict[str, Any] | None = None
        self.subscriber = subscriber
        self.outages = outages
        self.rules = rules or ReplyRules()
        self.sent: list[SendCommand] = []

    def text(self, body: str, at: datetime = T0, to: str = SHORT) -> InboundOutcome:
        out = handle_inbound(
            sms(body, at, to),
            2,
            self.optout,
            self.guard,
            self.subscriber,
            self.outages,
            TEXTS,
            self.rules,
        )
        self.optout, self.guard = out.optout, out.guard
        for a in out.audits:  # every path's audits: the same bytes the model would write
            assert a.to_bytes() == as_model(a).to_bytes()
        if out.command is not None:
            key, value = out.command
            assert key == PHONE
            self.sent.append(SendCommand.from_bytes(value))
        return out


def as_model(a: Any) -> AuditRecord:
    """The draft's fields through pydantic's validation, independently of its bytes."""
    fields = {k: getattr(a, k) for k in AuditRecord.model_fields if hasattr(a, k)}
    return AuditRecord.model_validate(fields)


def decisions(out: InboundOutcome) -> list[tuple[str, str | None]]:
    return [(a.decision, a.reason) for a in out.audits]


def test_stop_opts_out_of_the_sender_written_to_with_one_confirmation() -> None:
    n = Number(sub())
    out = n.text("STOP")
    assert out.optout_changed
    assert blocks(n.optout, SHORT) and not blocks(n.optout, LONG)
    assert n.optout is not None and n.optout["p"] == 2
    [entry] = n.optout["history"]
    assert entry["action"] == "opt_out" and entry["words"] == "stop"
    assert entry["message_id"] == out.audits[0].message_id and entry["at"] == "2026-11-24T15:00:00Z"
    [cmd] = n.sent
    assert cmd.kind.value == "confirmation" and cmd.from_ == SHORT and cmd.to == PHONE
    assert "unsubscribed" in cmd.body and "START" in cmd.body
    assert ("opt_out", None) in decisions(out)


def test_a_repeated_stop_changes_nothing_and_gets_nothing() -> None:
    n = Number(sub())
    n.text("STOP")
    out = n.text("stop", T0 + timedelta(minutes=1))
    assert not out.optout_changed and out.command is None
    assert ("opt_out", "already_opted_out") in decisions(out)
    assert len(n.sent) == 1


def test_stopall_blocks_every_sender() -> None:
    n = Number(sub())
    n.text("STOPALL")
    assert blocks(n.optout, SHORT) and blocks(n.optout, LONG)
    assert "all" in n.sent[0].body
    # STOP to another sender afterwards changes nothing: already out of everything.
    assert not n.text("STOP", T0 + timedelta(minutes=1), to=LONG).optout_changed


def test_program_wide_setting_makes_every_stop_global() -> None:
    n = Number(sub(), rules=ReplyRules(program_wide_optout=True))
    n.text("STOP")
    assert blocks(n.optout, LONG)


def test_plain_words_revocation_is_an_opt_out() -> None:
    n = Number(sub())
    out = n.text("please stop texting me")
    assert out.optout_changed and blocks(n.optout, SHORT)
    assert n.optout is not None and n.optout["history"][0]["words"] == "stop texting me"


def test_nothing_but_help_after_an_opt_out() -> None:
    n = Number(sub(), outages=(outage("O1", eta=T0 + timedelta(hours=2)),))
    n.text("STOP")
    for i, body in enumerate(["when will it be fixed?", "STATUS", "hello?"], start=1):
        out = n.text(body, T0 + timedelta(minutes=i))
        assert out.command is None
        assert ("reply_suppressed", "opted_out") in decisions(out)
    out = n.text("HELP", T0 + timedelta(minutes=5))
    assert out.command is not None and n.sent[-1].kind.value == "help"
    # The opt-out is per sender: the same question to another number of ours is answered.
    assert n.text("STATUS", T0 + timedelta(minutes=6), to=LONG).command is not None


def test_start_lifts_the_opt_out_with_one_confirmation() -> None:
    n = Number(sub())
    n.text("STOP")
    out = n.text("START", T0 + timedelta(minutes=1))
    assert out.optout_changed and not blocks(n.optout, SHORT)
    assert n.sent[-1].kind.value == "confirmation" and "subscribed" in n.sent[-1].body
    assert [h["action"] for h in (n.optout or {})["history"]] == ["opt_out", "opt_in"]
    again = n.text("START", T0 + timedelta(minutes=2))
    assert not again.optout_changed and again.command is None
    assert ("opt_in", "already_subscribed") in decisions(again)


def test_start_after_stopall_lifts_the_program_wide_opt_out() -> None:
    n = Number(sub())
    n.text("STOPALL")
    n.text("START", T0 + timedelta(minutes=1), to=LONG)
    assert not blocks(n.optout, LONG)
    # The sender STOPALL was written to stays blocked: nobody asked to hear from it again.
    assert blocks(n.optout, SHORT)


def test_yes_resubscribes_only_an_opted_out_number() -> None:
    n = Number(sub())
    out = n.text("yes")
    assert not out.optout_changed
    assert out.intent.intent.value == "opt_in"
    assert n.sent[-1].body.startswith("Outage Alerts: Reply STATUS")  # the menu, not a confirm
    n.text("STOP", T0 + timedelta(minutes=1))
    assert n.text("YES", T0 + timedelta(minutes=2)).optout_changed


def test_help_names_program_contact_and_how_to_opt_out() -> None:
    n = Number(sub())
    n.text("HELP")
    body = n.sent[0].body
    assert "Outage Alerts" in body and "800-555-0100" in body and "STOP" in body
    assert n.sent[0].segments <= 2


def outage(
    oid: str,
    status: str = "detected",
    regions: tuple[str, ...] = ("R1",),
    eta: datetime | None = None,
    at: datetime = T0 - timedelta(hours=1),
    url: str | None = "https://status.example.com/o",
) -> AreaOutage:
    return AreaOutage(oid, 3, status, frozenset(regions), eta, url, at)


def test_status_gives_the_eta_in_local_time() -> None:
    eta = datetime(2026, 11, 24, 20, 30, tzinfo=UTC)  # 12:30 PM in Los Angeles
    n = Number(sub(), outages=(outage("O1", eta=eta), outage("O2", regions=("R9",))))
    out = n.text("when will it be fixed?")
    body = n.sent[0].body
    assert "Outage in your area" in body and "12:30 PM" in body and "status.example.com" in body
    assert n.sent[0].kind.value == "reply"
    [answer] = [a for a in out.audits if a.decision == "status_answer"]
    assert answer.facts["outages"] == [["O1", 3]]


def test_status_with_two_outages_reports_the_later_eta() -> None:
    e1, e2 = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
    n = Number(
        sub(("R1", "R2")), outages=(outage("O1", eta=e1), outage("O2", regions=("R2",), eta=e2))
    )
    n.text("status")
    assert "2 outages" in n.sent[0].body and "10:00 AM" in n.sent[0].body


def test_status_restored_then_nothing_known() -> None:
    n = Number(sub(), outages=(outage("O1", "resolved", at=T0 - timedelta(hours=2)),))
    n.text("is the power back?")
    assert "restored" in n.sent[0].body
    late = Number(sub(), outages=(outage("O1", "resolved", at=T0 - timedelta(days=2)),))
    late.text("status")
    assert "No known outage" in late.sent[0].body


def test_status_in_spanish() -> None:
    n = Number(sub(language="es"), outages=(outage("O1", eta=T0 + timedelta(hours=1)),))
    n.text("STATUS")
    assert n.sent[0].body.startswith("Outage Alerts: Corte de servicio en su zona.")
    assert n.sent[0].language == "es" and n.sent[0].encoding.value == "gsm7"


def test_an_unknown_number_gets_a_generic_answer_never_data() -> None:
    n = Number(None, outages=(outage("O1", eta=T0 + timedelta(hours=1)),))
    out = n.text("when will it be fixed?")
    body = n.sent[0].body
    assert "no account" in body and "Est." not in body and "status.example" not in body
    assert ("inbound_received", None) in decisions(out)
    assert out.audits[0].facts["known_customer"] is False


def test_the_menu_goes_out_at_most_once_a_day() -> None:
    n = Number(sub())
    assert n.text("thanks").command is not None
    out = n.text("ok great", T0 + timedelta(hours=1))
    assert out.command is None
    assert ("reply_suppressed", "menu_recently_sent") in decisions(out)
    assert n.text("hello", T0 + timedelta(hours=25)).command is not None


def test_an_auto_responder_echo_gets_no_reply_but_stop_still_counts_and_is_confirmed() -> None:
    n = Number(sub())
    out = n.text("Outage Alerts: Reply STATUS for outage status, HELP for help, STOP to opt out.")
    assert out.command is None
    assert ("loop_detected", "loop_echo") in decisions(out)
    assert ("reply_suppressed", "loop_echo") in decisions(out)
    # In the cool-down STOP is honoured, and its one confirmation still goes out: it cannot
    # feed a loop (one per state change) and the customer is owed it.
    stop = n.text("STOP", T0 + timedelta(minutes=1))
    assert stop.optout_changed and blocks(n.optout, SHORT) and stop.command is not None
    assert ("loop_exempt", "loop_cooldown") in decisions(stop)
    assert n.sent[-1].kind.value == "confirmation"
    # Anything after that is silent again.
    assert n.text("STOP", T0 + timedelta(minutes=2)).command is None


def test_a_stop_after_the_reply_cap_is_still_confirmed() -> None:
    n = Number(sub())
    for i in range(6):
        n.text(f"question {i}?", T0 + timedelta(minutes=8 * i))  # menu once, then nothing
    for i in range(6):
        n.text("HELP", T0 + timedelta(minutes=50, seconds=10 * i))
    assert n.text("STOP", T0 + timedelta(minutes=52)).command is not None
    assert n.sent[-1].kind.value == "confirmation"
    assert n.sent[-1].expires_at == T0 + timedelta(minutes=52) + timedelta(hours=24)


def test_a_ping_pong_is_cut_off_by_the_loop_guard() -> None:
    rules = ReplyRules(loop=LoopRules(max_inbound=10, window=timedelta(seconds=60)))
    n = Number(sub(), outages=(outage("O1", eta=T0 + timedelta(hours=1)),), rules=rules)
    for i in range(40):  # an auto-responder asking the same thing every second
        n.text(f"Auto-reply {i}: when will it be fixed?", T0 + timedelta(seconds=i))
    # Replies stop well before Twilio's wall of 30 in 30 s.
    assert 1 <= len(n.sent) <= 6


@pytest.mark.parametrize("body", ["STOP", "HELP", "STATUS", "thanks"])
def test_replies_are_deterministic(body: str) -> None:
    message = sms(body)
    args = (2, None, None, sub(), (), TEXTS, ReplyRules())
    a, b = handle_inbound(message, *args), handle_inbound(message, *args)
    assert a.command == b.command and a.audits == b.audits and a.optout == b.optout
    if a.command is not None:
        cmd = orjson.loads(a.command[1])
        assert cmd["command_id"] == reply_command_id(message.message_id, PHONE)
        ttl = "2026-11-25T15:00:00Z" if body == "STOP" else "2026-11-24T16:00:00Z"
        assert cmd["expires_at"] == ttl and cmd["not_before"] is None
    assert len({x.audit_id for x in a.audits}) == len(a.audits)


def test_area_outage_from_state() -> None:
    o = area_outage_from_state(
        {
            "outage_id": "O1",
            "version": 4,
            "status": "updated",
            "regions": ["R1", "R2"],
            "eta": "2026-11-24T18:00:00Z",
            "status_url": None,
            "occurred_at": "2026-11-24T15:00:00Z",
        }
    )
    assert o.regions == frozenset({"R1", "R2"}) and o.eta == datetime(2026, 11, 24, 18, tzinfo=UTC)


def test_a_redelivered_stop_reemits_its_confirmation_once_in_state() -> None:
    """A crash after the state write but before the offset commit redelivers the STOP:
    the confirmation must come out again (same id: the dispatcher sends it once)."""
    message = sms("STOP")
    args: tuple[Any, ...] = ((), TEXTS, ReplyRules())
    first = handle_inbound(message, 2, None, None, sub(), *args)
    again = handle_inbound(message, 2, first.optout, first.guard, sub(), *args)
    assert again.optout_changed and again.command == first.command
    assert again.optout == first.optout and len((again.optout or {})["history"]) == 1
    assert again.guard["in"] == first.guard["in"]  # counted once in the loop window


def test_a_redelivered_question_gets_the_same_reply() -> None:
    message = sms("hello")
    args: tuple[Any, ...] = ((), TEXTS, ReplyRules())
    first = handle_inbound(message, 2, None, None, sub(), *args)
    again = handle_inbound(message, 2, first.optout, first.guard, sub(), *args)
    assert first.command is not None and again.command == first.command


def test_a_stop_redelivered_after_later_texts_is_confirmed_again_not_recorded_twice() -> None:
    first, later = sms("STOP"), sms("STOP", to=LONG)
    args: tuple[Any, ...] = ((), TEXTS, ReplyRules())
    a = handle_inbound(first, 2, None, None, sub(), *args)
    b = handle_inbound(later, 2, a.optout, a.guard, sub(), *args)
    again = handle_inbound(first, 2, b.optout, b.guard, sub(), *args)
    assert again.optout_changed and again.command == a.command
    assert len((again.optout or {})["history"]) == 2


def test_a_redelivered_yes_is_the_same_confirmation_not_the_menu() -> None:
    args: tuple[Any, ...] = ((), TEXTS, ReplyRules())
    stop = handle_inbound(sms("STOP"), 2, None, None, sub(), *args)
    yes = sms("yes")
    first = handle_inbound(yes, 2, stop.optout, stop.guard, sub(), *args)
    again = handle_inbound(yes, 2, first.optout, first.guard, sub(), *args)
    assert first.command is not None and again.command == first.command
    assert orjson.loads(again.command[1])["kind"] == "confirmation"


def test_a_zone_name_that_is_a_directory_does_not_crash_the_status_bot() -> None:
    broken = Subscriber(
        PHONE,
        (Customer("C1", frozenset({"R1"}), True, "en", "America"),),
        "mobile",
        True,
        "US",
        None,
    )
    n = Number(broken, outages=(outage("O1", eta=T0 + timedelta(hours=1)),))
    n.text("status")
    assert "Outage in your area" in n.sent[0].body
