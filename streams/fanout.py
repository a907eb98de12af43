"""Fan-out: one outage version in, one decision per subscriber of the affected regions out.

Runs once per partition (each partition holds its own subscribers, see
ARCHITECTURE.md), over state that is all local and in memory:

- ``PartitionIndex``: phone -> ``Subscriber`` (precomputed facts) and region -> phones,
  rebuilt from the subscriber table after recovery and kept current by the table's agent;
- ``OutageMemory``: what each number was last told about each outage, and which numbers
  were ever texted (the first message carries "Reply STOP to opt out");
- opt-outs: phone -> ``OptOut``.

``FanoutPlanner.plan`` is pure: same inputs, same decisions, same command ids and bodies,
so a replay or a retried fan-out reproduces its output exactly. Event time (the outage's
``occurred_at``) stands in for "now" everywhere. Per recipient it does dictionary look-ups
and one ``orjson.dumps``; texts are rendered once per distinct (kind, language, local ETA,
first message) and shared.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from schemas import MessageKind, OutageEvent, OutageSeverity, OutageStatus, format_utc

from .senders import Projection, SenderPool
from .templates import Rendered, Templates, format_eta

__all__ = [
    "Customer",
    "Decision",
    "FanoutChunk",
    "FanoutPlanner",
    "FanoutRules",
    "OptOut",
    "OutageMemory",
    "PartitionIndex",
    "Reason",
    "Subscriber",
    "Told",
    "command_id",
    "outage_phase",
    "subscriber_from_state",
]


class Reason(StrEnum):
    """Why a recipient got no message now (or got one despite a rule)."""

    NO_CONSENT = "no_consent"
    OPTED_OUT = "opted_out"
    LANDLINE = "landline"
    INVALID_NUMBER = "invalid_number"
    NO_SENDER = "no_sender"
    DUPLICATE = "duplicate"
    NO_SIGNIFICANT_CHANGE = "no_significant_change"
    QUIET_HOURS_DEFERRAL = "quiet_hours_deferral"
    LIFE_SAFETY_BYPASS = "life_safety_bypass"


class Decision(StrEnum):
    TARGETED = "targeted"
    SUPPRESSED = "suppressed"
    SKIPPED = "skipped"
    """Nothing to say (already told, no significant change): not a compliance decision."""


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    regions: frozenset[str]
    consent: bool
    language: str
    timezone: str | None


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One number and the accounts on it, with facts computed when the record arrived."""

    phone: str
    customers: tuple[Customer, ...]
    line: str
    textable: bool
    country: str | None
    number_timezone: str | None

    @property
    def regions(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for c in self.customers:
            out |= c.regions
        return out


def subscriber_from_state(phone: str, state: Mapping[str, Any]) -> Subscriber:
    """The subscriber table value -> ``Subscriber`` (see ``streams.customers``)."""
    facts = state.get("facts") or {}
    customers = tuple(
        Customer(
            customer_id=cid,
            regions=frozenset(rec.get("regions") or ()),
            consent=bool(rec.get("sms_consent")),
            language=str(rec.get("language") or "en"),
            timezone=rec.get("timezone"),
        )
        for cid, rec in sorted((state.get("customers") or {}).items())
    )
    return Subscriber(
        phone=phone,
        customers=customers,
        line=str(facts.get("line", "unknown")),
        textable=bool(facts.get("textable", True)),
        country=facts.get("country"),
        number_timezone=facts.get("timezone"),
    )


class PartitionIndex:
    """phone -> Subscriber and region -> phones, for the numbers of one partition."""

    def __init__(self) -> None:
        self.subscribers: dict[str, Subscriber] = {}
        self.by_region: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self.subscribers)

    def upsert(self, sub: Subscriber) -> None:
        self.remove(sub.phone)
        self.subscribers[sub.phone] = sub
        for region in sub.regions:
            self.by_region.setdefault(region, set()).add(sub.phone)

    def remove(self, phone: str) -> None:
        old = self.subscribers.pop(phone, None)
        if old is None:
            return
        for region in old.regions:
            phones = self.by_region.get(region)
            if phones is not None:
                phones.discard(phone)
                if not phones:
                    del self.by_region[region]

    def phones_in(self, regions: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for region in regions:
            out |= self.by_region.get(region, set())
        return out


@dataclass(frozen=True, slots=True)
class Told:
    """What one number was last told about one outage."""

    version: int
    status: str
    """The outage phase told (see ``outage_phase``)."""
    eta: str | None
    kind: MessageKind


@dataclass
class OutageMemory:
    """Per partition: outage id -> phone -> Told, and every number ever texted."""

    told: dict[str, dict[str, Told]] = field(default_factory=dict)
    introduced: set[str] = field(default_factory=set)

    def apply(
        self,
        outage_id: str,
        version: int,
        status: str,
        eta: str | None,
        entries: Iterable[tuple[str, str]],
    ) -> None:
        """Fold one persisted chunk in; chunks may come in any order (highest version wins)."""
        phones = self.told.setdefault(outage_id, {})
        for phone, kind in entries:
            self.introduced.add(phone)
            prior = phones.get(phone)
            if prior is None or prior.version < version:
                phones[phone] = Told(version, status, eta, MessageKind(kind))


@dataclass(frozen=True, slots=True)
class OptOut:
    all_senders: bool = False
    senders: frozenset[str] = frozenset()

    def blocks(self, sender_id: str | None) -> bool:
        return self.all_senders or (sender_id is not None and sender_id in self.senders)


@dataclass(frozen=True, slots=True)
class FanoutRules:
    quiet_start: time = time(21, 0)
    quiet_end: time = time(8, 0)
    defer_service_alerts: bool = False
    """Quiet hours also hold back the first alert of a ``service`` outage."""
    eta_change: timedelta = timedelta(minutes=30)
    command_ttl: timedelta = timedelta(hours=12)
    default_timezone: str = "UTC"
    chunk_size: int = 1000
    """Recipients per audit record and per persisted memory record."""

    def in_quiet_hours(self, local: time) -> bool:
        if self.quiet_start == self.quiet_end:
            return False
        if self.quiet_start < self.quiet_end:
            return self.quiet_start <= local < self.quiet_end
        return local >= self.quiet_start or local < self.quiet_end


def command_id(outage_id: str, version: int, phone: str) -> str:
    """Deterministic: the same outage version and number give the same id, in any replay."""
    digest = hashlib.blake2b(f"{outage_id}\x1f{version}\x1f{phone}".encode(), digest_size=16)
    return "cmd-" + digest.hexdigest()


@dataclass
class FanoutChunk:
    """Output for up to ``chunk_size`` recipients, ready for the producer."""

    commands: list[tuple[str, bytes]] = field(default_factory=list)
    """(phone, SendCommand JSON)."""
    audits: list[tuple[str, bytes]] = field(default_factory=list)
    """(outage id, AuditRecord JSON): one record per decision group of this chunk."""
    told: list[tuple[str, str]] = field(default_factory=list)
    """(phone, kind) to persist in the outage memory once the commands are written."""


@dataclass
class FanoutSummary:
    counts: Counter[str] = field(default_factory=Counter)
    work: Counter[str] = field(default_factory=Counter)
    """Sender id -> messages (or segments) queued."""
    projection: Projection | None = None


class FanoutPlanner:
    def __init__(self, pool: SenderPool, templates: Templates, rules: FanoutRules) -> None:
        self.pool = pool
        self.templates = templates
        self.rules = rules
        self._zones: dict[str, ZoneInfo] = {}

    def _zone(self, name: str | None) -> ZoneInfo:
        key = name or self.rules.default_timezone
        zone = self._zones.get(key)
        if zone is None:
            try:
                zone = ZoneInfo(key)
            except (ZoneInfoNotFoundError, ValueError):
                zone = ZoneInfo(self.rules.default_timezone)
            self._zones[key] = zone
        return zone

    def _morning(self, zone: ZoneInfo, now: datetime) -> datetime | None:
        """None outside quiet hours, else the end of quiet hours in ``zone``, in UTC."""
        local = now.astimezone(zone)
        if not self.rules.in_quiet_hours(local.time()):
            return None
        day = local.date() if local.time() < self.rules.quiet_end else local.date() + timedelta(1)
        return datetime.combine(day, self.rules.quiet_end, zone).astimezone(UTC)

    def plan(
        self,
        outage: OutageEvent,
        partition: int,
        index: PartitionIndex,
        memory: OutageMemory,
        optouts: Mapping[str, OptOut],
        summary: FanoutSummary | None = None,
    ) -> Iterator[FanoutChunk]:
        """Decisions for every subscriber of this partition the outage concerns."""
        rules = self.rules
        summary = summary if summary is not None else FanoutSummary()
        oid, version = outage.outage_id, outage.version
        now = outage.occurred_at
        now_s = format_utc(now)
        life_safety = outage.severity is OutageSeverity.LIFE_SAFETY
        resolved = outage.status is OutageStatus.RESOLVED
        regions = frozenset(outage.regions)
        phase = outage_phase(outage)
        told = memory.told.get(oid, {})
        introduced = memory.introduced

        # Resolved: exactly those who were alerted. Otherwise: the region's subscribers, plus
        # anyone alerted earlier whose region has left the outage (their area is restored).
        if resolved:
            candidates = {p for p, t in told.items() if t.kind is not MessageKind.RESTORED}
        else:
            candidates = index.phones_in(regions)
            candidates.update(p for p, t in told.items() if t.kind is not MessageKind.RESTORED)

        texts: dict[tuple[MessageKind, str, str | None, bool], Rendered] = {}
        morning: dict[str, datetime | None] = {}
        eta_local: dict[tuple[str, str], str | None] = {}
        base_cmd: dict[str, Any] = {
            "schema_version": 1,
            "outage_id": oid,
            "outage_version": version,
            "created_at": now_s,
        }
        chunk = FanoutChunk()
        groups: dict[tuple[Decision, str | None], list[list[Any]]] = {}
        counts = summary.counts

        def flush() -> FanoutChunk:
            nonlocal chunk, groups
            for (decision, reason), entries in sorted(
                groups.items(), key=lambda kv: (kv[0][0].value, kv[0][1] or "")
            ):
                first = entries[0][0]
                audit = {
                    "schema_version": 1,
                    "audit_id": f"{oid}:{version}:p{partition}:{decision.value}:"
                    f"{reason or 'none'}:{first}",
                    "decision": decision.value,
                    "reason": reason,
                    "phone": None,
                    "outage_id": oid,
                    "outage_version": version,
                    "facts": {
                        "partition": partition,
                        "severity": outage.severity.value,
                        "status": outage.status.value,
                        "recipients": entries,
                    },
                    "at": now_s,
                }
                chunk.audits.append((oid, orjson.dumps(audit)))
            out, chunk, groups = chunk, FanoutChunk(), {}
            return out

        def record(decision: Decision, reason: str | None, entry: list[Any]) -> None:
            counts[f"{decision.value}:{reason or '-'}"] += 1
            groups.setdefault((decision, reason), []).append(entry)

        n_in_chunk = 0
        for phone in sorted(candidates):
            if n_in_chunk >= rules.chunk_size:
                yield flush()
                n_in_chunk = 0
            n_in_chunk += 1
            prior = told.get(phone)
            sub = index.subscribers.get(phone)

            # Lifecycle: what, if anything, this number should hear about this version.
            matching = (
                [c for c in sub.customers if not regions.isdisjoint(c.regions)]
                if sub is not None and not resolved
                else []
            )
            if prior is not None and prior.version >= version:
                record(Decision.SKIPPED, Reason.DUPLICATE, [phone, None, None])
                continue
            if resolved or (prior is not None and not matching):
                kind = MessageKind.RESTORED
                if prior is None or prior.kind is MessageKind.RESTORED:
                    continue
            elif prior is None or prior.kind is MessageKind.RESTORED:
                kind = MessageKind.ALERT
            elif prior.status != phase or _eta_moved(prior.eta, outage.eta, rules.eta_change):
                kind = MessageKind.UPDATE
            else:
                record(Decision.SKIPPED, Reason.NO_SIGNIFICANT_CHANGE, [phone, None, None])
                continue

            # Compliance, in the order an auditor reads it.
            if sub is None:
                # The customer record is gone (tombstone): no consent on file any more.
                record(Decision.SUPPRESSED, Reason.NO_CONSENT, [phone, None, {"customers": []}])
                continue
            people = matching or list(sub.customers)
            consenting = [c for c in people if c.consent]
            if not sub.textable:
                reason = Reason.LANDLINE if sub.line.startswith("fixed") else Reason.INVALID_NUMBER
                record(Decision.SUPPRESSED, reason, [phone, None, {"line": sub.line}])
                continue
            sender = self.pool.choose(phone, sub.country)
            if sender is None:
                where = {"country": sub.country}
                record(Decision.SUPPRESSED, Reason.NO_SENDER, [phone, None, where])
                continue
            bypass: list[str] = []
            if not consenting:
                if not life_safety:
                    record(
                        Decision.SUPPRESSED,
                        Reason.NO_CONSENT,
                        [phone, None, {"customers": [c.customer_id for c in people]}],
                    )
                    continue
                bypass.append(Reason.NO_CONSENT.value)
            opt = optouts.get(phone)
            if opt is not None and opt.blocks(sender.id):
                scope = "all" if opt.all_senders else "sender"
                if not life_safety:
                    record(
                        Decision.SUPPRESSED,
                        Reason.OPTED_OUT,
                        [phone, None, {"scope": scope, "sender": sender.id}],
                    )
                    continue
                bypass.append(Reason.OPTED_OUT.value)

            person = (consenting or people)[0]
            zone_name = person.timezone or sub.number_timezone or rules.default_timezone
            if zone_name not in morning:
                morning[zone_name] = self._morning(self._zone(zone_name), now)
            not_before = None
            if not life_safety and morning[zone_name] is not None:
                if kind is not MessageKind.ALERT or rules.defer_service_alerts:
                    not_before = morning[zone_name]

            first = phone not in introduced
            lang = person.language
            tkey = (zone_name, lang)
            if tkey not in eta_local:
                eta_local[tkey] = format_eta(outage.eta, self._zone(zone_name), now, lang)
            text_key = (kind, lang, eta_local[tkey], first)
            text = texts.get(text_key)
            if text is None:
                text = self.templates.render(
                    kind, lang, outage.summary, eta_local[tkey], outage.status_url, first
                )
                texts[text_key] = text

            cid = command_id(oid, version, phone)
            start = not_before or now
            cmd = dict(base_cmd)
            cmd.update(
                command_id=cid,
                kind=kind.value,
                to=phone,
                body=text.body,
                encoding=text.encoding.value,
                segments=text.segments,
                language=lang,
                life_safety_bypass=bool(bypass),
                not_before=format_utc(not_before) if not_before else None,
                expires_at=format_utc(start + rules.command_ttl),
            )
            cmd["from"] = sender.id
            chunk.commands.append((phone, orjson.dumps(cmd)))
            chunk.told.append((phone, kind.value))
            summary.work[sender.id] += text.segments if sender.per_segment else 1
            facts: dict[str, Any] = {"kind": kind.value, "sender": sender.id}
            if bypass:
                facts["bypassed"] = bypass
                record(Decision.TARGETED, Reason.LIFE_SAFETY_BYPASS, [phone, cid, facts])
            elif not_before is not None:
                facts["not_before"] = cmd["not_before"]
                facts["timezone"] = zone_name
                record(Decision.TARGETED, Reason.QUIET_HOURS_DEFERRAL, [phone, cid, facts])
            else:
                record(Decision.TARGETED, None, [phone, cid, facts])

        if n_in_chunk:
            yield flush()
        summary.projection = self.pool.project(summary.work)

    @staticmethod
    def remember(
        memory: OutageMemory, outage: OutageEvent, told: Iterable[tuple[str, str]]
    ) -> None:
        """Record what was sent, once the commands are safely on the topic."""
        eta = format_utc(outage.eta) if outage.eta is not None else None
        memory.apply(outage.outage_id, outage.version, outage_phase(outage), eta, told)


def outage_phase(outage: OutageEvent) -> str:
    """What a status change means to a customer: detected and updated are both "ongoing";
    a move to life-safety, or resolution, is news worth a text."""
    if outage.status is OutageStatus.RESOLVED:
        return "resolved"
    return f"ongoing:{outage.severity.value}"


def _eta_moved(told: str | None, eta: datetime | None, threshold: timedelta) -> bool:
    if (told is None) != (eta is None):
        return True
    if told is None or eta is None:
        return False
    return abs(datetime.fromisoformat(told) - eta) > threshold
