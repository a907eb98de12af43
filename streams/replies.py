"""Inbound replies: one customer text in, new opt-out and loop state, at most one reply out.

``handle_inbound`` is the whole decision, pure and deterministic (event time is the text's
``received_at``), so a replay of ``sms.inbound`` reaches the same decisions and the same
reply command ids. The rules, in the order they apply:

1. Opt-out (STOP and friends, or clear revocation in plain words) always changes state,
   loop or not. Scope: the sender number written to, every sender for STOPALL, or every
   sender when ``program_wide_optout`` is set. Exactly one confirmation per change; a
   repeated STOP changes nothing and gets nothing.
2. Opt-in (START, UNSTOP; YES only when opted out) lifts the opt-outs that block the
   sender written to, including a program-wide one: one confirmation per change.
3. HELP is answered even when opted out (CTIA requires HELP to work in every state).
4. After an opt-out nothing else goes out to that number from that sender: status
   questions and other texts are audited, not answered.
5. Status questions get the latest state of the outages in the customer's regions; a
   number that is not a customer gets a generic answer, never anyone's data.
6. Anything else gets the keyword menu, at most once per ``menu_every``.
7. Loop protection (``streams.loops``) silences every automated reply during a cool-down,
   except the confirmation of an opt-out or opt-in: one per state change cannot feed a
   loop, and the customer is owed it (CTIA); it is audited as ``loop_exempt``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from schemas import AuditDraft, InboundSms, MessageKind, format_utc

from .fanout import Subscriber
from .keywords import Classified, Intent, KeywordConfig
from .loops import GuardState, LoopRules, LoopVerdict, observe, record_reply
from .reply_texts import ReplyText, ReplyTexts
from .templates import format_eta

__all__ = [
    "AreaOutage",
    "InboundOutcome",
    "OptOutState",
    "ReplyRules",
    "area_outage_from_state",
    "blocks",
    "handle_inbound",
    "recipient_zone",
    "reply_command_id",
    "status_text",
]

OptOutState = dict[str, Any]
"""The ``optouts`` table value: ``{"p": partition, "all": bool, "senders": [ids],
"history": [{"at", "message_id", "action", "scope", "sender", "words"}]}``. The fan-out
and the dispatcher read ``all`` and ``senders``; ``history`` is the compliance record."""

HISTORY_KEPT = 50


@dataclass(frozen=True, slots=True)
class AreaOutage:
    """The latest version of one outage, as a partition's status bot sees it."""

    outage_id: str
    version: int
    status: str
    regions: frozenset[str]
    eta: datetime | None
    status_url: str | None
    occurred_at: datetime


def area_outage_from_state(state: dict[str, Any]) -> AreaOutage:
    """An ``OutageEvent`` JSON object (as kept per partition) -> ``AreaOutage``."""
    eta = state.get("eta")
    return AreaOutage(
        outage_id=str(state["outage_id"]),
        version=int(state["version"]),
        status=str(state["status"]),
        regions=frozenset(state.get("regions") or ()),
        eta=datetime.fromisoformat(eta) if eta else None,
        status_url=state.get("status_url"),
        occurred_at=datetime.fromisoformat(state["occurred_at"]),
    )


@dataclass(frozen=True, slots=True)
class ReplyRules:
    program_wide_optout: bool = False
    """Every opt-out applies to every sender of the program, not only the one written to."""
    restored_for: timedelta = timedelta(hours=24)
    """How long after resolution a status question is answered with "restored"."""
    reply_ttl: timedelta = timedelta(hours=1)
    """A reply not sent by then is stale: an answer hours late misleads."""
    confirmation_ttl: timedelta = timedelta(hours=24)
    """Confirmations are owed even late (behind a long fan-out queue), but not forever."""
    menu_every: timedelta = timedelta(hours=24)
    """The keyword menu for unrecognised texts goes out at most this often per number."""
    default_timezone: str = "UTC"
    keywords: KeywordConfig = field(default_factory=KeywordConfig)
    loop: LoopRules = field(default_factory=LoopRules)


@dataclass
class InboundOutcome:
    optout: OptOutState | None
    optout_changed: bool
    guard: GuardState
    command: tuple[str, bytes] | None
    """(recipient phone, SendCommand JSON) of the one reply, if any."""
    audits: list[AuditDraft]
    intent: Classified


def blocks(state: OptOutState | None, sender: str) -> bool:
    """Whether this opt-out state stops texts from ``sender``."""
    if not state:
        return False
    return bool(state.get("all")) or sender in (state.get("senders") or ())


def reply_command_id(message_id: str, phone: str) -> str:
    """Deterministic: one inbound text has at most one reply, in any replay."""
    digest = hashlib.blake2b(f"{phone}\x1f{message_id}".encode(), digest_size=16)
    return "rep-" + digest.hexdigest()


def recipient_zone(name: str | None, default: str) -> ZoneInfo:
    for candidate in (name, default, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory
                continue
    return ZoneInfo("UTC")


def status_text(
    texts: ReplyTexts,
    sub: Subscriber,
    outages: Iterable[AreaOutage],
    now: datetime,
    rules: ReplyRules,
) -> tuple[ReplyText, dict[str, Any]]:
    regions = sub.regions
    person = sub.customers[0]
    lang = person.language
    zone = recipient_zone(person.timezone or sub.number_timezone, rules.default_timezone)
    mine = [o for o in outages if not regions.isdisjoint(o.regions)]
    ongoing = sorted((o for o in mine if o.status != "resolved"), key=lambda o: o.outage_id)
    if ongoing:
        etas = [o.eta for o in ongoing]
        # The latest estimate is the honest one for "when is everything back".
        eta = None if any(e is None for e in etas) else max(e for e in etas if e is not None)
        urls = [o.status_url for o in ongoing if o.status_url]
        text = texts.ongoing(
            lang, len(ongoing), format_eta(eta, zone, now, lang), urls[0] if urls else None
        )
        facts = {
            "answer": "ongoing",
            "outages": [[o.outage_id, o.version] for o in ongoing],
            "eta": format_utc(eta) if eta else None,
        }
        return text, facts
    horizon = now - rules.restored_for
    restored = sorted(
        (o for o in mine if o.status == "resolved" and o.occurred_at >= horizon),
        key=lambda o: o.outage_id,
    )
    if restored:
        facts = {"answer": "restored", "outages": [[o.outage_id, o.version] for o in restored]}
        return texts.restored(lang), facts
    return texts.no_outage(lang), {"answer": "no_outage"}


def handle_inbound(
    sms: InboundSms,
    partition: int,
    optout: OptOutState | None,
    guard: GuardState | None,
    subscriber: Subscriber | None,
    outages: Iterable[AreaOutage],
    texts: ReplyTexts,
    rules: ReplyRules,
) -> InboundOutcome:
    now = sms.received_at
    phone, sender, mid = sms.from_, sms.to, sms.message_id
    at = format_utc(now)
    norm, intent = rules.keywords.understand(sms.body)
    language = subscriber.customers[0].language if subscriber and subscriber.customers else "en"
    audits: list[AuditDraft] = []

    def audit(decision: str, reason: str | None = None, **facts: Any) -> None:
        # Facts are JSON values only (strings, numbers, lists): AuditDraft's contract.
        audits.append(
            AuditDraft(
                audit_id=f"inbound:{mid}:{decision}",
                decision=decision,
                at=at,
                facts={"sender": sender, **facts},
                reason=reason,
                phone=phone,
                message_id=mid,
            )
        )

    audit(
        "inbound_received",
        intent=intent.intent.value,
        matched=intent.matched,
        chars=len(sms.body),
        known_customer=subscriber is not None,
    )

    # Loop protection watches every text, STOP included (it may be part of a loop too).
    guard_state, loop = observe(guard, partition, mid, norm, texts.is_echo(norm), now, rules.loop)
    if loop is not None and loop.started:
        audit("loop_detected", loop.reason.value, cooldown_until=_ts(loop.until))

    state = optout
    changed = False
    reply: tuple[MessageKind, ReplyText, str] | None = None
    kind_of = intent.intent
    if (
        kind_of is Intent.OPT_IN
        and intent.conditional
        and not blocks(state, sender)
        and not (state and _redelivered(state, mid, "opt_in"))
    ):
        kind_of = Intent.OTHER  # "yes" to something else, not a re-subscription

    if kind_of is Intent.OPT_OUT:
        everyone = intent.all_senders or rules.program_wide_optout
        state, changed = _opt_out(state, partition, sender, everyone, mid, at, intent.matched)
        scope = "all" if everyone else "sender"
        audit(
            "opt_out",
            None if changed else "already_opted_out",
            scope=scope,
            words=intent.matched,
        )
        if changed:
            reply = (MessageKind.CONFIRMATION, texts.opted_out(language, everyone), "opted_out")
    elif kind_of is Intent.OPT_IN:
        state, changed = _opt_in(state, partition, sender, mid, at, intent.matched)
        audit("opt_in", None if changed else "already_subscribed", words=intent.matched)
        if changed:
            reply = (MessageKind.CONFIRMATION, texts.opted_in(language), "opted_in")
    elif kind_of is Intent.HELP:
        reply = (MessageKind.HELP, texts.help(language), "help")
    elif blocks(state, sender):
        audit("reply_suppressed", "opted_out", intent=kind_of.value)
    elif kind_of is Intent.STATUS:
        if subscriber is None or not subscriber.customers:
            reply = (MessageKind.REPLY, texts.unknown_number(language), "unknown_number")
        else:
            text, facts = status_text(texts, subscriber, outages, now, rules)
            reply = (MessageKind.REPLY, text, facts.pop("answer"))
            audit("status_answer", None, **facts)
    else:
        last = (guard or {}).get("menu")
        again = (guard or {}).get("menu_id") == mid  # a redelivery gets the same menu
        t = now.timestamp()
        if last is not None and not again and t - last < rules.menu_every.total_seconds():
            audit("reply_suppressed", "menu_recently_sent", intent=kind_of.value)
        else:
            reply = (MessageKind.REPLY, texts.not_understood(language), "menu")

    command: tuple[str, bytes] | None = None
    if reply is not None:
        kind, text, what = reply
        verdict: LoopVerdict | None = loop
        if kind is MessageKind.CONFIRMATION:
            # One per state change, so it cannot feed a loop; and the customer is owed it
            # (CTIA), whatever the loop guard thinks of their earlier texts.
            if verdict is not None:
                audit("loop_exempt", verdict.reason.value, reply=what, kind=kind.value)
            out = [*(guard_state.get("out") or ()), now.timestamp()]
            guard_state = {**guard_state, "out": out}
            verdict = None
        elif verdict is None:
            guard_state, verdict = record_reply(guard_state, now, rules.loop)
            if verdict is not None:
                audit("loop_detected", verdict.reason.value, cooldown_until=_ts(verdict.until))
        if verdict is not None:
            audit("reply_suppressed", verdict.reason.value, reply=what, kind=kind.value)
        else:
            if what == "menu":
                guard_state = {**guard_state, "menu": now.timestamp(), "menu_id": mid}
            cid = reply_command_id(mid, phone)
            command = (phone, _command(cid, kind, sender, phone, text, now, rules, language))
            audit(
                "reply",
                None,
                reply=what,
                kind=kind.value,
                command_id=cid,
                segments=text.segments,
            )
    return InboundOutcome(state, changed, guard_state, command, audits, intent)


def _ts(epoch: float) -> str:
    return format_utc(datetime.fromtimestamp(epoch, UTC))


def _redelivered(state: OptOutState, mid: str, action: str) -> bool:
    """The same text again (a redelivery after a crash before the offset commit): the
    state already holds its change, and its confirmation must be emitted again (same
    command id, so the dispatcher sends it once) rather than lost."""
    history: list[dict[str, Any]] = state.get("history") or []
    return any(h["message_id"] == mid and h["action"] == action for h in history)


def _history(state: OptOutState, entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(state.get("history") or ()), entry][-HISTORY_KEPT:]


def _opt_out(
    state: OptOutState | None,
    partition: int,
    sender: str,
    everyone: bool,
    mid: str,
    at: str,
    words: str | None,
) -> tuple[OptOutState, bool]:
    s: OptOutState = dict(state or {"all": False, "senders": [], "history": []})
    if _redelivered(s, mid, "opt_out"):
        return s, True
    if s.get("all") or (not everyone and sender in (s.get("senders") or ())):
        return {**s, "p": partition}, False
    entry = {
        "at": at,
        "message_id": mid,
        "action": "opt_out",
        "scope": "all" if everyone else "sender",
        "sender": sender,
        "words": words,
    }
    senders = sorted({*(s.get("senders") or ()), sender})
    return {
        "p": partition,
        "all": everyone or bool(s.get("all")),
        "senders": senders,
        "history": _history(s, entry),
    }, True


def _opt_in(
    state: OptOutState | None,
    partition: int,
    sender: str,
    mid: str,
    at: str,
    words: str | None,
) -> tuple[OptOutState | None, bool]:
    if state is not None and _redelivered(state, mid, "opt_in"):
        return state, True
    if state is None or not blocks(state, sender):
        return state, False
    entry = {
        "at": at,
        "message_id": mid,
        "action": "opt_in",
        "scope": "all" if state.get("all") else "sender",
        "sender": sender,
        "words": words,
    }
    senders = [x for x in state.get("senders") or () if x != sender]
    return {
        "p": partition,
        "all": False,
        "senders": senders,
        "history": _history(state, entry),
    }, True


def _command(
    cid: str,
    kind: MessageKind,
    sender: str,
    phone: str,
    text: ReplyText,
    now: datetime,
    rules: ReplyRules,
    language: str,
) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "command_id": cid,
            "kind": kind.value,
            "outage_id": None,
            "outage_version": None,
            "from": sender,
            "to": phone,
            "body": text.body,
            "encoding": text.encoding.value,
            "segments": text.segments,
            "created_at": format_utc(now),
            "not_before": None,
            "expires_at": format_utc(
                now
                + (rules.confirmation_ttl if kind is MessageKind.CONFIRMATION else rules.reply_ttl)
            ),
            "life_safety_bypass": False,
            "language": language,
        }
    )
