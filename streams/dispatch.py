"""What to do with a send command at its turn, and after each provider answer.

Pure and deterministic: the same command, state and ``now`` give the same decision, and
the retry jitter is seeded by the command id and attempt, so a replay reproduces delays.

At its turn (``decide``), a command is checked again against facts that may have changed
since the fan-out created it, in the order an auditor reads them:

1. ``duplicate``: its id was already sent (the dispatcher's changelog-backed record);
2. ``opted_out``: a STOP arrived meanwhile (all senders, or this sender), unless the
   command carries ``life_safety_bypass``; a STOP confirmation and a HELP answer are
   exempt, since they answer the customer's own message;
3. ``stale``: the outage was resolved, or superseded by a newer version worth a text of its
   own (the fan-out's rule: another severity, or the ETA moved past the threshold) while
   the command queued; a smaller change sends nobody anything, so the queued text still
   goes. A ``restored`` text is stale only if the outage reopened after it;
4. ``not_alerted``: a ``restored`` text for an outage whose alert the dispatcher ended
   unsent (``streams.first_contact``: the customer never heard of the outage);
5. ``expired``: past ``expires_at``, or its ``not_before`` falls after it;
6. ``not_before`` in the future: defer; otherwise send.

After a provider answer (``after_result``): accepted is ``sent``; permanent is ``failed``
with the provider's code and reason; 429 waits for ``Retry-After`` (and holds the whole
API client, whose budget it is); transient failures back off with full jitter up to a
limit; a retry that would land past ``expires_at`` ends as ``expired``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from schemas import DeliveryOutcome, DeliveryStatus, MessageKind, OutageStatus, SendCommand

from .provider import Accepted, OutboundMessage, Permanent, ProviderResult, RetryAfter, Transient
from .retry import RetryPolicy

__all__ = [
    "Attempts",
    "Decision",
    "Defer",
    "DispatchRules",
    "Reason",
    "Retry",
    "Send",
    "SendPolicy",
    "Terminal",
    "after_result",
    "decide",
    "message_from_command",
    "status_record",
]


class Reason(StrEnum):
    DUPLICATE = "duplicate"
    OPTED_OUT = "opted_out"
    STALE = "stale"
    #: A restored text for an outage whose alert never reached the number.
    NOT_ALERTED = "not_alerted"
    EXPIRED = "expired"
    #: The provider refused this message for good (invalid number, unregistered sender).
    REJECTED = "rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"
    #: Throttled (429) more often than ``SendPolicy.max_throttled``.
    THROTTLED = "throttled"
    #: No answer after the request went out: it may have been sent; not retried by default.
    OUTCOME_UNKNOWN = "outcome_unknown"


@dataclass(frozen=True, slots=True)
class Send:
    bypassed: tuple[str, ...] = ()
    """Rules a life-safety command overrides (``opted_out``): audit them."""


@dataclass(frozen=True, slots=True)
class Defer:
    until: datetime


@dataclass(frozen=True, slots=True)
class Terminal:
    """One of the four final outcomes; exactly one per command reaches delivery status."""

    outcome: DeliveryOutcome
    reason: str | None = None
    detail: str | None = None
    """Why, for humans: ``resolved``, ``superseded by version 7``, ``all senders``."""
    attempts: int = 0
    provider_message_id: str | None = None
    error_code: str | None = None
    error: str | None = None


Decision = Send | Defer | Terminal

_OUTAGE_KINDS = frozenset({MessageKind.ALERT, MessageKind.UPDATE, MessageKind.RESTORED})


@dataclass(frozen=True, slots=True)
class DispatchRules:
    optout_exempt: frozenset[MessageKind] = frozenset({MessageKind.CONFIRMATION, MessageKind.HELP})
    """Kinds an opt-out does not stop: the one STOP confirmation, and HELP answers."""
    eta_change: timedelta = timedelta(minutes=30)
    """The fan-out's ETA threshold (OUTAGE_SMS_ETA_CHANGE_MINUTES): a smaller move earns no
    new text, so it does not make a queued one stale either."""


def _optout_blocks(optout: Mapping[str, Any] | None, sender: str) -> str | None:
    """The opt-out's scope if it blocks ``sender`` (the ``optouts`` table value shape)."""
    if not optout:
        return None
    if optout.get("all"):
        return "all senders"
    if sender in (optout.get("senders") or ()):
        return "this sender"
    return None


def _staleness(
    cmd: SendCommand, outage: Mapping[str, Any] | None, eta_change: timedelta
) -> str | None:
    if outage is None or cmd.outage_id is None or cmd.kind not in _OUTAGE_KINDS:
        return None
    version, status = outage.get("version"), outage.get("status")
    if not isinstance(version, int) or not isinstance(status, str):
        return None  # an unreadable state is no evidence of staleness
    newer = cmd.outage_version is not None and version > cmd.outage_version
    resolved = status == OutageStatus.RESOLVED.value
    if cmd.kind is MessageKind.RESTORED:
        return f"reopened as version {version}" if newer and not resolved else None
    if resolved:
        return "resolved"
    if newer and _news_since(cmd, outage, eta_change):
        return f"superseded by version {version}"
    return None


def _news_since(cmd: SendCommand, outage: Mapping[str, Any], eta_change: timedelta) -> bool:
    """Would the fan-out text this number again for ``outage``, after this command?

    The fan-out's own rule (streams.fanout): a new severity, or an ETA moved by more than
    the threshold. Without news it tells nobody again, so the queued text is the only one
    the customer will get about this outage and must still go (its ETA is within the
    threshold of the latest). Commands that do not say what they state (older producers)
    count any newer version as news, as before.
    """
    if cmd.outage_severity is None:
        return True
    if outage.get("severity") != cmd.outage_severity.value:
        return True
    eta = outage.get("eta")
    if (eta is None) != (cmd.outage_eta is None):
        return True
    if eta is None or cmd.outage_eta is None:
        return False
    try:
        latest = datetime.fromisoformat(eta)
    except (TypeError, ValueError):
        return True
    return abs(latest - cmd.outage_eta) > eta_change


def decide(
    cmd: SendCommand,
    optout: Mapping[str, Any] | None,
    outage: Mapping[str, Any] | None,
    already_sent: bool,
    now: datetime,
    rules: DispatchRules = DispatchRules(),  # noqa: B008 (frozen, shared on purpose)
    never_alerted: bool = False,
) -> Decision:
    """The send-time decision; see the module docstring for the order of the rules.

    ``never_alerted``: the dispatcher's ledger says this number's alert for the outage
    ended unsent (``streams.first_contact.unalerted``); only a restored text heeds it.
    """
    if already_sent:
        return Terminal(DeliveryOutcome.SUPPRESSED, Reason.DUPLICATE)
    bypassed: tuple[str, ...] = ()
    scope = _optout_blocks(optout, cmd.from_)
    if scope is not None and cmd.kind not in rules.optout_exempt:
        if not cmd.life_safety_bypass:
            return Terminal(DeliveryOutcome.SUPPRESSED, Reason.OPTED_OUT, scope)
        bypassed = (Reason.OPTED_OUT.value,)
    stale = _staleness(cmd, outage, rules.eta_change)
    if stale is not None:
        return Terminal(DeliveryOutcome.SUPPRESSED, Reason.STALE, stale)
    if never_alerted and cmd.kind is MessageKind.RESTORED:
        return Terminal(DeliveryOutcome.SUPPRESSED, Reason.NOT_ALERTED, "alert not sent")
    if cmd.expires_at is not None:
        if now >= cmd.expires_at:
            return Terminal(DeliveryOutcome.EXPIRED, Reason.EXPIRED)
        if cmd.not_before is not None and cmd.not_before >= cmd.expires_at:
            return Terminal(DeliveryOutcome.EXPIRED, Reason.EXPIRED, "not_before after expiry")
    if cmd.not_before is not None and cmd.not_before > now:
        return Defer(cmd.not_before)
    return Send(bypassed)


@dataclass(frozen=True, slots=True)
class SendPolicy:
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=5, base=1.0, cap=60.0))
    """Transient failures: ``retry.attempts`` tries in all, full-jitter backoff between."""
    max_throttled: int = 50
    """429s one command may wait out; Retry-After is honoured in full each time."""
    retry_after_jitter: float = 0.5
    """Added to Retry-After so throttled commands do not all return in the same instant."""
    retry_ambiguous: bool = False
    """Retry when the request may have gone through (a read timeout). Off: at most once."""


@dataclass(frozen=True, slots=True)
class Attempts:
    """Counts carried between tries of one command (a table value in the wiring)."""

    sent: int = 0
    """HTTP requests made for this command."""
    transient: int = 0
    throttled: int = 0


@dataclass(frozen=True, slots=True)
class Retry:
    at: datetime
    attempts: Attempts
    hold_client_until: datetime | None = None
    """A 429 is about the API client's budget: no command on it should go before this."""


def _rng(cmd: SendCommand, attempts: Attempts) -> random.Random:
    # Seeded by id and attempt so a replay reproduces the same delays; not for secrets.
    return random.Random(f"{cmd.command_id}:{attempts.sent}")  # noqa: S311


def after_result(
    cmd: SendCommand,
    result: ProviderResult,
    attempts: Attempts,
    now: datetime,
    policy: SendPolicy = SendPolicy(),  # noqa: B008 (frozen, shared on purpose)
) -> Retry | Terminal:
    """The next step after one provider answer; ``attempts`` counts the tries before it."""
    done = replace(attempts, sent=attempts.sent + 1)
    if isinstance(result, Accepted):
        return Terminal(
            DeliveryOutcome.SENT, attempts=done.sent, provider_message_id=result.provider_message_id
        )
    if isinstance(result, Permanent):
        return Terminal(
            DeliveryOutcome.FAILED,
            Reason.REJECTED,
            attempts=done.sent,
            error_code=result.code,
            error=result.reason,
        )
    if isinstance(result, RetryAfter):
        done = replace(done, throttled=done.throttled + 1)
        if done.throttled > policy.max_throttled:
            return _failed(Reason.THROTTLED, done, f"http_{result.status}", result.detail)
        hold = now + timedelta(seconds=result.seconds)
        at = hold + timedelta(seconds=_rng(cmd, done).uniform(0.0, policy.retry_after_jitter))
        return _retry_or_expire(cmd, at, done, hold, f"http_{result.status}", result.detail)
    assert isinstance(result, Transient)  # noqa: S101 (exhaustive over ProviderResult)
    done = replace(done, transient=done.transient + 1)
    if result.ambiguous and not policy.retry_ambiguous:
        return _failed(Reason.OUTCOME_UNKNOWN, done, result.reason, result.detail)
    if not policy.retry.should_retry(done.transient):
        return _failed(Reason.RETRIES_EXHAUSTED, done, result.reason, result.detail)
    delay = policy.retry.delay(done.transient, _rng(cmd, done))
    at = now + timedelta(seconds=delay)
    return _retry_or_expire(cmd, at, done, None, result.reason, result.detail)


def _failed(reason: Reason, attempts: Attempts, code: str, error: str | None) -> Terminal:
    return Terminal(
        DeliveryOutcome.FAILED, reason, attempts=attempts.sent, error_code=code, error=error
    )


def _retry_or_expire(
    cmd: SendCommand,
    at: datetime,
    attempts: Attempts,
    hold: datetime | None,
    code: str,
    error: str | None,
) -> Retry | Terminal:
    if cmd.expires_at is not None and at >= cmd.expires_at:
        return Terminal(
            DeliveryOutcome.EXPIRED,
            Reason.EXPIRED,
            "next retry falls after expiry",
            attempts=attempts.sent,
            error_code=code,
            error=error,
        )
    return Retry(at, attempts, hold)


def message_from_command(cmd: SendCommand) -> OutboundMessage:
    return OutboundMessage(cmd.command_id, cmd.from_, cmd.to, cmd.body)


def status_record(
    cmd: SendCommand, terminal: Terminal, at: datetime, provider: str | None = None
) -> DeliveryStatus:
    """The ``sms.delivery-status`` record of a terminal outcome."""
    return DeliveryStatus(
        command_id=cmd.command_id,
        outcome=terminal.outcome,
        reason=terminal.reason,
        kind=cmd.kind.value,
        outage_id=cmd.outage_id,
        outage_version=cmd.outage_version,
        sender=cmd.from_,
        attempts=terminal.attempts,
        provider=provider if terminal.attempts else None,
        provider_message_id=terminal.provider_message_id,
        error_code=terminal.error_code,
        error=terminal.error,
        segments=cmd.segments,
        at=at,
    )
