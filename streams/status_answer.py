"""The status Data Action's answer: what a Genesys Architect flow needs about one number.

It is the status bot's answer in structured form. The reply text comes from the very
function the bot uses for a STATUS text (``streams.replies``), so the flow and the SMS
bot can never tell a customer two different things. The rules of that answer hold here:

- only the asking number's own subscriber record and the outages of its regions are read;
  a number that is not a customer gets the generic answer, with no outage, ETA, time zone
  or link in it, so the endpoint cannot be used to learn about anyone else;
- ``opted_out`` says whether texts from ``sender`` (or, without a sender, from any of our
  numbers) are blocked: a flow must not send ``reply_text`` then.

Every field is a string, integer or boolean (never null): Architect handles flat values
best, and an empty string is its "not set".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from schemas import format_utc

from .fanout import Subscriber
from .replies import AreaOutage, OptOutState, ReplyRules, blocks, recipient_zone, status_text
from .reply_texts import ReplyTexts
from .templates import format_eta

__all__ = ["StatusAnswer", "answer_status", "opted_out"]


@dataclass(frozen=True, slots=True)
class StatusAnswer:
    status: str
    """``ongoing``, ``restored``, ``no_outage`` or ``unknown_number``."""
    known_customer: bool
    opted_out: bool
    outage_count: int
    outage_ids: list[str]
    eta_utc: str
    """ISO-8601 with ``Z``; empty when unknown or no outage."""
    eta_local: str
    """As the SMS says it, e.g. ``3:30 PM`` or ``Tue 3:30 PM``."""
    eta_local_iso: str
    timezone: str
    status_url: str
    reply_text: str
    reply_segments: int
    as_of: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def opted_out(state: OptOutState | None, sender: str | None) -> bool:
    """Blocked for ``sender``; without a sender, blocked for any of ours (the safe side)."""
    if sender is not None:
        return blocks(state, sender)
    if not state:
        return False
    return bool(state.get("all") or state.get("senders"))


def answer_status(
    sender: str | None,
    subscriber: Subscriber | None,
    optout: OptOutState | None,
    outages: Iterable[AreaOutage],
    texts: ReplyTexts,
    rules: ReplyRules,
    now: datetime,
) -> StatusAnswer:
    """``subscriber``, ``optout`` and ``outages`` must be the asking number's own: its
    table entries and its partition's copy of the outages."""
    blocked = opted_out(optout, sender)
    if subscriber is None or not subscriber.customers:
        generic = texts.unknown_number()
        return StatusAnswer(
            status="unknown_number",
            known_customer=False,
            opted_out=blocked,
            outage_count=0,
            outage_ids=[],
            eta_utc="",
            eta_local="",
            eta_local_iso="",
            timezone="",
            status_url="",
            reply_text=generic.body,
            reply_segments=generic.segments,
            as_of=format_utc(now),
        )
    person = subscriber.customers[0]
    zone = recipient_zone(person.timezone or subscriber.number_timezone, rules.default_timezone)
    current = list(outages)
    text, facts = status_text(texts, subscriber, current, now, rules)
    answer = str(facts["answer"])
    named = [str(oid) for oid, _version in facts.get("outages", [])]
    eta_utc = facts.get("eta") or ""
    eta = datetime.fromisoformat(eta_utc) if eta_utc else None
    by_id = {o.outage_id: o for o in current}
    urls = [u for u in (by_id[oid].status_url for oid in named if oid in by_id) if u]
    ongoing = answer == "ongoing"
    return StatusAnswer(
        status=answer,
        known_customer=True,
        opted_out=blocked,
        outage_count=len(named) if ongoing else 0,
        outage_ids=named,
        eta_utc=eta_utc if ongoing else "",
        eta_local=(format_eta(eta, zone, now, person.language) or "") if ongoing else "",
        eta_local_iso=eta.astimezone(zone).isoformat() if ongoing and eta else "",
        timezone=zone.key,
        status_url=urls[0] if ongoing and urls else "",
        reply_text=text.body,
        reply_segments=text.segments,
        as_of=format_utc(now),
    )
