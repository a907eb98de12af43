"""Send-time rules and the retry policy: every terminal outcome, in the order they apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import DeliveryOutcome, DeliveryStatus, MessageKind, SendCommand
from streams.dispatch import (
    Attempts,
    Defer,
    DispatchRules,
    Reason,
    Retry,
    Send,
    SendPolicy,
    Terminal,
    after_result,
    decide,
    message_from_command,
    status_record,
)
from streams.provider import Accepted, Permanent, ProviderResult, RetryAfter, Transient
from streams.retry import RetryPolicy

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SENDER = "87654"


def command(**extra: Any) -> SendCommand:
    fields: dict[str, Any] = {
        "command_id": "c-1",
        "kind": "alert",
        "outage_id": "o-1",
        "outage_version": 2,
        "from": SENDER,
        "to": "+14155550123",
        "body": "Outage Alerts: power out near you. Reply STOP to opt out",
        "encoding": "gsm7",
        "segments": 1,
        "created_at": NOW - timedelta(minutes=5),
        "expires_at": NOW + timedelta(hours=12),
    }
    fields.update(extra)
    return SendCommand.from_obj(fields)


def outage(version: int = 2, status: str = "detected") -> dict[str, Any]:
    return {"outage_id": "o-1", "version": version, "status": status, "regions": ["r1"]}


def optout(all_: bool = False, senders: list[str] | None = None) -> dict[str, Any]:
    return {"p": 3, "all": all_, "senders": senders or []}


# --- decide: send, defer ---------------------------------------------------------------


def test_a_current_command_is_sent() -> None:
    assert decide(command(), None, outage(), False, NOW) == Send()


def test_unknown_outage_state_is_no_reason_to_hold_back() -> None:
    assert decide(command(), None, None, False, NOW) == Send()


def test_quiet_hours_defer_until_not_before() -> None:
    later = NOW + timedelta(hours=8)
    assert decide(command(not_before=later), None, outage(), False, NOW) == Defer(later)


def test_not_before_reached_sends() -> None:
    cmd = command(not_before=NOW)
    assert decide(cmd, None, outage(), False, NOW) == Send()


def test_no_expiry_means_it_waits_as_long_as_not_before_says() -> None:
    later = NOW + timedelta(days=3)
    cmd = command(expires_at=None, not_before=later)
    assert decide(cmd, None, outage(), False, NOW) == Defer(later)


# --- decide: terminal outcomes -------------------------------------------------------------


def test_already_sent_is_a_duplicate_whatever_else_holds() -> None:
    cmd = command(expires_at=NOW - timedelta(hours=1))
    got = decide(cmd, optout(all_=True), outage(9, "resolved"), True, NOW)
    assert got == Terminal(DeliveryOutcome.SUPPRESSED, Reason.DUPLICATE)


@pytest.mark.parametrize(
    ("state", "scope"),
    [(optout(all_=True), "all senders"), (optout(senders=[SENDER]), "this sender")],
)
def test_a_stop_that_arrived_while_queued_stops_it(state: dict[str, Any], scope: str) -> None:
    got = decide(command(), state, outage(), False, NOW)
    assert got == Terminal(DeliveryOutcome.SUPPRESSED, Reason.OPTED_OUT, scope)


def test_an_opt_out_from_another_sender_does_not_block() -> None:
    assert decide(command(), optout(senders=["+18005550100"]), outage(), False, NOW) == Send()


@pytest.mark.parametrize("state", [None, {}, {"p": 1, "all": False, "senders": []}])
def test_empty_opt_out_states_do_not_block(state: dict[str, Any] | None) -> None:
    assert decide(command(), state, outage(), False, NOW) == Send()


def test_life_safety_bypass_sends_and_says_what_it_overrode() -> None:
    cmd = command(life_safety_bypass=True)
    assert decide(cmd, optout(all_=True), outage(), False, NOW) == Send(("opted_out",))


def test_life_safety_bypass_without_an_opt_out_bypasses_nothing() -> None:
    assert decide(command(life_safety_bypass=True), None, outage(), False, NOW) == Send()


@pytest.mark.parametrize("kind", ["confirmation", "help"])
def test_the_stop_confirmation_and_help_answers_reach_opted_out_numbers(kind: str) -> None:
    cmd = command(kind=kind, outage_id=None, outage_version=None)
    assert decide(cmd, optout(all_=True), None, False, NOW) == Send()


def test_exempt_kinds_are_configurable() -> None:
    cmd = command(kind="help", outage_id=None, outage_version=None)
    rules = DispatchRules(optout_exempt=frozenset({MessageKind.CONFIRMATION}))
    got = decide(cmd, optout(all_=True), None, False, NOW, rules)
    assert isinstance(got, Terminal) and got.reason == Reason.OPTED_OUT


def test_status_bot_replies_respect_opt_outs() -> None:
    cmd = command(kind="reply", outage_id=None, outage_version=None)
    got = decide(cmd, optout(all_=True), None, False, NOW)
    assert isinstance(got, Terminal) and got.reason == Reason.OPTED_OUT


@pytest.mark.parametrize("kind", ["alert", "update"])
def test_resolved_while_queued_is_stale(kind: str) -> None:
    got = decide(command(kind=kind), None, outage(3, "resolved"), False, NOW)
    assert got == Terminal(DeliveryOutcome.SUPPRESSED, Reason.STALE, "resolved")


@pytest.mark.parametrize("kind", ["alert", "update"])
def test_superseded_while_queued_is_stale(kind: str) -> None:
    got = decide(command(kind=kind), None, outage(5, "updated"), False, NOW)
    assert got == Terminal(DeliveryOutcome.SUPPRESSED, Reason.STALE, "superseded by version 5")


ETA = "2025-03-01T15:00:00Z"


def stated(**extra: Any) -> SendCommand:
    """A command that says which severity and ETA its text gives (the fan-out's)."""
    return command(outage_severity="service", outage_eta=ETA, **extra)


def newer(eta: str | None = ETA, severity: str = "service") -> dict[str, Any]:
    return {**outage(5, "updated"), "severity": severity, "eta": eta}


@pytest.mark.parametrize("kind", ["alert", "update"])
@pytest.mark.parametrize("eta", [ETA, "2025-03-01T15:30:00Z", "2025-03-01T14:30:00Z"])
def test_a_newer_version_without_news_leaves_the_queued_text_to_go(kind: str, eta: str) -> None:
    """The fan-out texts nobody for an ETA move within the threshold: the queued text is the
    customer's only news of the outage, so it goes (it used to be dropped as superseded)."""
    assert decide(stated(kind=kind), None, newer(eta), False, NOW) == Send()


@pytest.mark.parametrize(
    ("latest", "why"),
    [
        (newer("2025-03-01T15:31:00Z"), "ETA moved past the threshold"),
        (newer("2025-03-01T14:29:00Z"), "ETA moved earlier past the threshold"),
        (newer(None), "ETA withdrawn"),
        (newer(severity="life_safety"), "escalated"),
    ],
)
def test_a_newer_version_with_news_supersedes_the_queued_text(
    latest: dict[str, Any], why: str
) -> None:
    got = decide(stated(), None, latest, False, NOW)
    assert got == Terminal(DeliveryOutcome.SUPPRESSED, Reason.STALE, "superseded by version 5"), why


def test_an_eta_given_after_none_is_news() -> None:
    cmd = command(outage_severity="service", outage_eta=None)
    assert isinstance(decide(cmd, None, newer(ETA), False, NOW), Terminal)
    assert decide(cmd, None, newer(None), False, NOW) == Send()


def test_the_eta_threshold_is_the_configured_one() -> None:
    rules = DispatchRules(eta_change=timedelta(minutes=10))
    latest = newer("2025-03-01T15:15:00Z")
    assert isinstance(decide(stated(), None, latest, False, NOW, rules), Terminal)
    assert decide(stated(), None, latest, False, NOW) == Send()


def test_resolution_is_news_whatever_the_command_states() -> None:
    got = decide(stated(), None, {**newer(), "status": "resolved"}, False, NOW)
    assert got == Terminal(DeliveryOutcome.SUPPRESSED, Reason.STALE, "resolved")


def test_the_same_or_an_older_version_is_current() -> None:
    assert decide(command(outage_version=4), None, outage(4, "updated"), False, NOW) == Send()
    assert decide(command(outage_version=4), None, outage(3, "updated"), False, NOW) == Send()


def test_restored_is_never_stale_for_being_resolved() -> None:
    cmd = command(kind="restored", outage_version=3)
    assert decide(cmd, None, outage(3, "resolved"), False, NOW) == Send()
    assert decide(cmd, None, outage(4, "resolved"), False, NOW) == Send()


def test_restored_is_stale_when_the_outage_reopened() -> None:
    cmd = command(kind="restored", outage_version=3)
    got = decide(cmd, None, outage(4, "updated"), False, NOW)
    assert got == Terminal(DeliveryOutcome.SUPPRESSED, Reason.STALE, "reopened as version 4")


@pytest.mark.parametrize("kind", ["reply", "help", "confirmation"])
def test_replies_are_never_stale(kind: str) -> None:
    cmd = command(kind=kind)
    assert decide(cmd, None, outage(9, "resolved"), False, NOW) == Send()


def test_a_command_without_a_version_is_stale_only_when_resolved() -> None:
    cmd = command(outage_version=None)
    assert decide(cmd, None, outage(9, "updated"), False, NOW) == Send()
    assert isinstance(decide(cmd, None, outage(9, "resolved"), False, NOW), Terminal)


@pytest.mark.parametrize(
    "state", [{}, {"version": "3", "status": "resolved"}, {"version": 3}, {"status": "resolved"}]
)
def test_an_unreadable_outage_state_is_no_evidence(state: dict[str, Any]) -> None:
    assert decide(command(), None, state, False, NOW) == Send()


def test_past_expiry_is_expired() -> None:
    cmd = command(expires_at=NOW)
    assert decide(cmd, None, outage(), False, NOW) == Terminal(
        DeliveryOutcome.EXPIRED, Reason.EXPIRED
    )


def test_a_deferral_past_expiry_expires_now() -> None:
    cmd = command(not_before=NOW + timedelta(hours=13))
    got = decide(cmd, None, outage(), False, NOW)
    assert got == Terminal(DeliveryOutcome.EXPIRED, Reason.EXPIRED, "not_before after expiry")


def test_order_opt_out_before_stale_before_expired() -> None:
    cmd = command(expires_at=NOW - timedelta(seconds=1))
    assert decide(cmd, optout(all_=True), outage(9, "resolved"), False, NOW).reason == "opted_out"  # type: ignore[union-attr]
    assert decide(cmd, None, outage(9, "resolved"), False, NOW).reason == "stale"  # type: ignore[union-attr]
    assert decide(cmd, None, outage(), False, NOW).reason == "expired"  # type: ignore[union-attr]


def test_a_bypassed_life_safety_command_can_still_be_stale() -> None:
    cmd = command(life_safety_bypass=True)
    got = decide(cmd, optout(all_=True), outage(9, "resolved"), False, NOW)
    assert isinstance(got, Terminal) and got.reason == Reason.STALE


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(list(MessageKind)),
    opted=st.sampled_from([None, "all", "sender", "other"]),
    version=st.one_of(st.none(), st.integers(1, 6)),
    status=st.sampled_from(["detected", "updated", "resolved"]),
    sent=st.booleans(),
    bypass=st.booleans(),
    not_before=st.one_of(st.none(), st.integers(-600, 600)),
    expires=st.one_of(st.none(), st.integers(-600, 600)),
)
def test_decide_is_total_and_deterministic(
    kind: MessageKind,
    opted: str | None,
    version: int | None,
    status: str,
    sent: bool,
    bypass: bool,
    not_before: int | None,
    expires: int | None,
) -> None:
    cmd = command(
        kind=kind.value,
        life_safety_bypass=bypass,
        not_before=None if not_before is None else NOW + timedelta(minutes=not_before),
        expires_at=None if expires is None else NOW + timedelta(minutes=expires),
    )
    opt = {
        None: None,
        "all": optout(all_=True),
        "sender": optout(senders=[SENDER]),
        "other": optout(senders=["999"]),
    }[opted]
    state = None if version is None else outage(version, status)
    first = decide(cmd, opt, state, sent, NOW)
    assert first == decide(cmd, opt, state, sent, NOW)
    if isinstance(first, Defer):
        assert first.until > NOW
    if isinstance(first, Send):
        assert not sent
        assert cmd.expires_at is None or cmd.expires_at > NOW
        assert cmd.not_before is None or cmd.not_before <= NOW
        blocked = opted in ("all", "sender") and kind not in DispatchRules().optout_exempt
        assert first.bypassed == (("opted_out",) if blocked else ())
        assert not blocked or bypass
    if isinstance(first, Terminal):
        assert first.outcome in (DeliveryOutcome.SUPPRESSED, DeliveryOutcome.EXPIRED)


# --- after_result: the retry policy --------------------------------------------------------

POLICY = SendPolicy(retry=RetryPolicy(attempts=3, base=1.0, cap=30.0))


def test_accepted_is_sent_with_the_provider_id() -> None:
    got = after_result(command(), Accepted("m-1", "conv-1"), Attempts(), NOW, POLICY)
    assert got == Terminal(DeliveryOutcome.SENT, attempts=1, provider_message_id="m-1")


def test_accepted_after_retries_counts_every_attempt() -> None:
    got = after_result(command(), Accepted("m-1"), Attempts(sent=3, transient=2), NOW, POLICY)
    assert isinstance(got, Terminal) and got.attempts == 4


def test_permanent_fails_with_the_provider_reason() -> None:
    result = Permanent("invalid.address", "toAddress is not a valid number", 400)
    got = after_result(command(), result, Attempts(), NOW, POLICY)
    assert got == Terminal(
        DeliveryOutcome.FAILED,
        Reason.REJECTED,
        attempts=1,
        error_code="invalid.address",
        error="toAddress is not a valid number",
    )


def test_transient_retries_with_full_jitter_within_the_backoff_ceiling() -> None:
    attempts = Attempts()
    for n in (1, 2):
        got = after_result(command(), Transient("http_503", 503), attempts, NOW, POLICY)
        assert isinstance(got, Retry)
        assert got.hold_client_until is None
        assert NOW <= got.at <= NOW + timedelta(seconds=min(30.0, 2 ** (n - 1)))
        attempts = got.attempts
    assert attempts == Attempts(sent=2, transient=2)
    got = after_result(command(), Transient("http_503", 503, "busy"), attempts, NOW, POLICY)
    assert got == Terminal(
        DeliveryOutcome.FAILED,
        Reason.RETRIES_EXHAUSTED,
        attempts=3,
        error_code="http_503",
        error="busy",
    )


def test_retry_delays_are_reproducible_per_command_and_attempt() -> None:
    a = after_result(command(), Transient("timeout"), Attempts(), NOW, POLICY)
    b = after_result(command(), Transient("timeout"), Attempts(), NOW, POLICY)
    assert a == b
    others = {
        after_result(command(command_id=f"c-{i}"), Transient("x"), Attempts(), NOW, POLICY).at  # type: ignore[union-attr]
        for i in range(20)
    }
    assert len(others) > 1  # jitter spreads commands apart


def test_an_ambiguous_failure_is_not_retried_by_default() -> None:
    got = after_result(command(), Transient("timeout", ambiguous=True), Attempts(), NOW, POLICY)
    assert isinstance(got, Terminal)
    assert (got.outcome, got.reason, got.error_code) == (
        DeliveryOutcome.FAILED,
        Reason.OUTCOME_UNKNOWN,
        "timeout",
    )


def test_ambiguous_failures_can_be_retried_when_configured() -> None:
    policy = SendPolicy(retry=POLICY.retry, retry_ambiguous=True)
    got = after_result(command(), Transient("timeout", ambiguous=True), Attempts(), NOW, policy)
    assert isinstance(got, Retry)


def test_retry_after_is_honoured_in_full_and_holds_the_client() -> None:
    got = after_result(command(), RetryAfter(120.0), Attempts(), NOW, POLICY)
    assert isinstance(got, Retry)
    assert got.hold_client_until == NOW + timedelta(seconds=120)
    assert NOW + timedelta(seconds=120) <= got.at <= NOW + timedelta(seconds=120.5)
    assert got.attempts == Attempts(sent=1, throttled=1)


def test_throttling_does_not_use_up_the_failure_budget() -> None:
    attempts = Attempts()
    for _ in range(10):
        got = after_result(command(), RetryAfter(1.0), attempts, NOW, POLICY)
        assert isinstance(got, Retry)
        attempts = got.attempts
    assert attempts.transient == 0
    assert isinstance(after_result(command(), Transient("x"), attempts, NOW, POLICY), Retry)


def test_endless_throttling_gives_up() -> None:
    policy = SendPolicy(retry=POLICY.retry, max_throttled=2)
    attempts = Attempts(sent=2, throttled=2)
    got = after_result(command(), RetryAfter(1.0, detail="slow down"), attempts, NOW, policy)
    assert got == Terminal(
        DeliveryOutcome.FAILED,
        Reason.THROTTLED,
        attempts=3,
        error_code="http_429",
        error="slow down",
    )


@pytest.mark.parametrize(
    "result", [RetryAfter(3600.0), Transient("http_502", 502)], ids=["429", "5xx"]
)
def test_a_retry_that_lands_past_expiry_expires(result: ProviderResult) -> None:
    cmd = command(expires_at=NOW + timedelta(seconds=0.5))
    # Jitter is seeded by the command id: this one's first backoff draw is well past 0.5 s.
    policy = SendPolicy(retry=RetryPolicy(attempts=5, base=100.0, cap=100.0))
    got = after_result(cmd, result, Attempts(), NOW, policy)
    assert isinstance(got, Terminal)
    assert (got.outcome, got.reason, got.attempts) == (DeliveryOutcome.EXPIRED, "expired", 1)
    assert got.detail == "next retry falls after expiry"


def test_without_expiry_retries_are_bounded_only_by_the_policy() -> None:
    cmd = command(expires_at=None)
    assert isinstance(after_result(cmd, RetryAfter(86_400.0), Attempts(), NOW, POLICY), Retry)


# --- delivery status records -----------------------------------------------------------------


def test_sent_status_record() -> None:
    cmd = command(segments=2)
    terminal = Terminal(DeliveryOutcome.SENT, attempts=2, provider_message_id="m-9")
    rec = status_record(cmd, terminal, NOW, provider="genesys")
    assert rec == DeliveryStatus(
        command_id="c-1",
        outcome=DeliveryOutcome.SENT,
        kind="alert",
        outage_id="o-1",
        outage_version=2,
        sender=SENDER,
        attempts=2,
        provider="genesys",
        provider_message_id="m-9",
        segments=2,
        at=NOW,
    )


def test_failed_status_record_carries_the_error() -> None:
    result = Permanent("sender.unregistered", "fromAddress is not provisioned", 400)
    terminal = after_result(command(), result, Attempts(), NOW, POLICY)
    assert isinstance(terminal, Terminal)
    rec = status_record(command(), terminal, NOW, provider="genesys")
    assert (rec.outcome, rec.reason, rec.error_code, rec.error, rec.attempts) == (
        "failed",
        "rejected",
        "sender.unregistered",
        "fromAddress is not provisioned",
        1,
    )


@pytest.mark.parametrize(
    "terminal",
    [
        Terminal(DeliveryOutcome.SUPPRESSED, Reason.OPTED_OUT, "all senders"),
        Terminal(DeliveryOutcome.SUPPRESSED, Reason.STALE, "resolved"),
        Terminal(DeliveryOutcome.SUPPRESSED, Reason.DUPLICATE),
        Terminal(DeliveryOutcome.EXPIRED, Reason.EXPIRED),
    ],
)
def test_suppressed_and_expired_records_name_no_provider(terminal: Terminal) -> None:
    rec = status_record(command(), terminal, NOW, provider="genesys")
    assert rec.provider is None and rec.attempts == 0
    assert rec.reason == terminal.reason
    # Round-trips through the topic's wire form.
    assert DeliveryStatus.from_bytes(rec.to_bytes()) == rec


def test_message_from_command() -> None:
    msg = message_from_command(command())
    assert (msg.command_id, msg.from_, msg.to) == ("c-1", SENDER, "+14155550123")
    assert msg.body.startswith("Outage Alerts")
