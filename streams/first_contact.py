"""What a number is still owed when the dispatcher ends an outage text without sending it.

The fan-out decides from what it *emitted*: the first text to a number carries "Reply STOP
to opt out", and "restored" goes to those it sent an alert. The dispatcher may end an
emitted text unsent: stale (a newer version queued behind it, or the outage resolved),
expired, failed, opted out at send time. Without this book:

- the footer rode on a text nobody received, and the update that does reach the number
  has none: the customer's first text would not say how to opt out;
- a "restored" reaches someone who was never told of the outage.

So the dispatcher keeps, per number, in its ledger partition: ``owed`` (the next outage
text carries the footer) and, per outage, ``unalerted`` (its restored text is suppressed
as ``not_alerted`` until an alert or update of that outage is sent). Pure: the caller
stores the changes in its ledger.

Why the ledger partition is the right place: dispatch partitions are per sender, and the
pool gives a number the same sender for every outage text (rendezvous hashing), so one
number's outage texts reach one dispatcher, in order. A change of the sender pool that
moves a number to another sender leaves its marks behind (it then gets no extra footer,
and a pending "restored" may go): the cost of a pool change, like its rate projections.

While the text that carries the footer is still queued, the dispatcher counts it as
pending (in memory: its offset is not committed, so a restart reads it and counts it
again), and a text to the same number that overtakes it gets the footer too.

Known gap: a "restored" whose turn comes while the alert is still retrying goes; the alert
then ends stale (resolved). Rare (the alert must fail transiently for as long as the whole
outage lasts) and it errs towards telling the customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas import DeliveryOutcome, MessageKind, SendCommand

from .templates import opt_out_footer, with_opt_out_footer

__all__ = [
    "OWED_PREFIX",
    "UNALERTED_PREFIX",
    "Change",
    "carries_footer",
    "owed_key",
    "settle",
    "unalerted",
    "unalerted_key",
    "with_owed_footer",
]

OWED_PREFIX = "\x00owed\x00"
UNALERTED_PREFIX = "\x00unalerted\x00"

Change = tuple[str, dict[str, Any] | None]
"""A ledger key and its new value; ``None`` deletes it (a tombstone on the topic)."""

_OUTAGE_KINDS = frozenset({MessageKind.ALERT, MessageKind.UPDATE, MessageKind.RESTORED})
_TELLS = frozenset({MessageKind.ALERT, MessageKind.UPDATE})
"""Kinds that tell a number about an outage: once one is sent, its restored may follow."""


def owed_key(phone: str) -> str:
    return OWED_PREFIX + phone


def unalerted_key(phone: str, outage_id: str) -> str:
    return f"{UNALERTED_PREFIX}{phone}\x1f{outage_id}"


def unalerted(cmd: SendCommand, book: Mapping[str, Any]) -> bool:
    """Is ``cmd`` a restored text for an outage whose alert never reached the number?"""
    return (
        cmd.kind is MessageKind.RESTORED
        and cmd.outage_id is not None
        and unalerted_key(cmd.to, cmd.outage_id) in book
    )


def carries_footer(cmd: SendCommand) -> bool:
    """Does this outage text end with the first-message opt-out footer?"""
    return cmd.kind in _OUTAGE_KINDS and cmd.body.endswith(opt_out_footer(cmd.language))


def with_owed_footer(
    cmd: SendCommand, book: Mapping[str, Any], pending: Mapping[str, int] | None = None
) -> SendCommand:
    """``cmd`` as it must go: with the opt-out footer if the number is still owed one.

    ``pending``: numbers with a footer-carrying text still queued (deferred, retrying, in
    flight). Until it is sent, the number has not seen the footer either: a text that
    overtakes it (a life-safety update not held by quiet hours, say) carries it too.
    """
    if cmd.kind not in _OUTAGE_KINDS:
        return cmd
    if owed_key(cmd.to) not in book and not (pending and pending.get(cmd.to)):
        return cmd
    text = with_opt_out_footer(cmd.body, cmd.language)
    if text.body == cmd.body:
        return cmd
    return cmd.model_copy(
        update={"body": text.body, "encoding": text.encoding, "segments": text.segments}
    )


def settle(
    cmd: SendCommand,
    outcome: DeliveryOutcome,
    reason: str | None,
    book: Mapping[str, Any],
) -> list[Change]:
    """The book's changes once ``cmd`` (as sent: see :func:`with_owed_footer`) is final.

    An unknown outcome (the request may have gone) owes the footer again (a second footer
    harms nobody) but does not count the number as unalerted.
    """
    if cmd.kind not in _OUTAGE_KINDS:
        return []
    changes: list[Change] = []
    owed = owed_key(cmd.to)
    carried = carries_footer(cmd)
    alert = unalerted_key(cmd.to, cmd.outage_id) if cmd.outage_id is not None else None
    if outcome is DeliveryOutcome.SENT:
        if carried and owed in book:
            changes.append((owed, None))
        if alert is not None and cmd.kind in _TELLS and alert in book:
            changes.append((alert, None))
        return changes
    if carried and owed not in book:
        changes.append((owed, {"language": cmd.language}))
    if alert is None:
        return changes
    if cmd.kind is MessageKind.RESTORED:
        if alert in book:
            changes.append((alert, None))  # the outage is over for this number
    elif cmd.kind is MessageKind.ALERT and reason != "outcome_unknown" and alert not in book:
        changes.append((alert, {}))
    return changes
