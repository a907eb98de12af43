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
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from operator import attrgetter, itemgetter
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from schemas import (
    AuditRecord,
    MessageKind,
    OutageEvent,
    OutageSeverity,
    OutageStatus,
    format_utc,
)

from .senders import Projection, Sender, SenderPool
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
    "summary_record",
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


#: At most this many distinct values are shared (below); past it, new ones are kept as
#: decoded. Languages, zones, line types, countries and region sets number in the
#: hundreds; the bound only stops a flood of odd values from growing the table for good.
SHARED_VALUES_MAX = 65_536
_shared: dict[Any, Any] = {}


def _share(value: Any) -> Any:
    """One object for every equal string many subscribers hold.

    Each decoded table value brings its own copy of "en", "America/Chicago", "US",
    "fixed_line_or_mobile" and its own region set, and the views keep a million of them.
    Measured with tracemalloc on 100,000 US subscribers: 851 bytes each in the views
    before, 345 after, so about 480 MiB less for a million, against the worker's 1.5 GiB.
    Only exact ``str`` values (and, in ``_regions``, sets of them): no two values of
    different types may stand for each other, and anything else is kept as it came.
    """
    if type(value) is not str:
        return value
    return _kept(value)


def _regions(values: Any) -> frozenset[str]:
    regions = frozenset(values or ())
    if not all(type(r) is str for r in regions):
        return regions
    found: frozenset[str] | None = _shared.get(regions)
    return found if found is not None else _kept(frozenset(map(_share, regions)))


def _kept(value: Any) -> Any:
    """The shared object equal to ``value``, which becomes it if none is (under the bound)."""
    found = _shared.get(value)
    if found is not None:
        return found
    if len(_shared) < SHARED_VALUES_MAX:
        _shared[value] = value
    return value


def subscriber_from_state(phone: str, state: Mapping[str, Any]) -> Subscriber:
    """The subscriber table value -> ``Subscriber`` (see ``streams.customers``)."""
    facts = state.get("facts") or {}
    customers = tuple(
        Customer(
            customer_id=cid,
            regions=_regions(rec.get("regions")),
            consent=bool(rec.get("sms_consent")),
            language=_share(str(rec.get("language") or "en")),
            timezone=_share(rec.get("timezone")),
        )
        for cid, rec in sorted((state.get("customers") or {}).items())
    )
    return Subscriber(
        phone=phone,
        customers=customers,
        line=_share(str(facts.get("line", "unknown"))),
        textable=bool(facts.get("textable", True)),
        country=_share(facts.get("country")),
        number_timezone=_share(facts.get("timezone")),
    )


class PartitionIndex:
    """phone -> Subscriber and region -> phones, for the numbers of one partition."""

    def __init__(self) -> None:
        self.subscribers: dict[str, Subscriber] = {}
        self.by_region: dict[str, set[str]] = {}
        # region -> its phones in order, and the regions whose order is out of date. The
        # fan-out walks numbers in order (same chunks, same audit ids in every replay);
        # sorting a region of a million on every outage was a tenth of its time.
        self._ordered: dict[str, list[str]] = {}
        self._changed: set[str] = set()

    def __len__(self) -> int:
        return len(self.subscribers)

    def upsert(self, sub: Subscriber) -> None:
        self.remove(sub.phone)
        self.subscribers[sub.phone] = sub
        for region in sub.regions:
            self.by_region.setdefault(region, set()).add(sub.phone)
            self._changed.add(region)

    def remove(self, phone: str) -> None:
        old = self.subscribers.pop(phone, None)
        if old is None:
            return
        for region in old.regions:
            self._changed.add(region)
            phones = self.by_region.get(region)
            if phones is not None:
                phones.discard(phone)
                if not phones:
                    del self.by_region[region]

    def ordered(self, region: str) -> list[str]:
        """The region's numbers in order; the caller must not change the list."""
        phones = self.by_region.get(region)
        if not phones:
            self._ordered.pop(region, None)
            self._changed.discard(region)
            return []
        known = self._ordered.get(region)
        if known is None:
            known = sorted(phones)
        elif region in self._changed:
            # Repair rather than re-sort: the numbers still there keep their order, the new
            # ones are sorted apart, and timsort merges the two runs in linear time.
            kept = list(filter(phones.__contains__, known))
            if len(kept) < len(phones):
                kept += sorted(phones.difference(kept))
                kept.sort()
            known = kept
        else:
            return known
        self._ordered[region] = known
        self._changed.discard(region)
        return known

    def prepare(self) -> None:
        """Put every region in order now (after a rebuild), not during the next outage."""
        for region in list(self.by_region):
            self.ordered(region)


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
        entries: Iterable[Sequence[str]],
    ) -> None:
        """Fold one persisted chunk of (phone, kind) in; chunks may come in any order
        (highest version wins; within a version, the first entry for a number)."""
        phones = self.told.setdefault(outage_id, {})
        entries = entries if isinstance(entries, list) else list(entries)
        numbers = list(map(_first, entries))
        self.introduced.update(numbers)
        # One shared (frozen) Told per kind: a million-recipient chunk list would otherwise
        # build a million equal objects (a fifth of the fan-out's time, by profile).
        shared = {k: Told(version, status, eta, MessageKind(k)) for k in set(map(_second, entries))}
        priors = filter(None, map(phones.get, numbers))
        if max(map(_version, priors), default=version - 1) < version:
            # Nothing here for these numbers is as new (the fan-out's case): replace them
            # all in C. The per-entry loop below was about a tenth of the offline fan-out.
            if len(shared) == 1:
                phones.update(dict.fromkeys(numbers, next(iter(shared.values()))))
            else:  # reversed: the first entry for a number wins, as in the loop
                kinds = map(shared.__getitem__, map(_second, reversed(entries)))
                phones.update(zip(reversed(numbers), kinds, strict=True))
            return
        for phone, kind in entries:
            prior = phones.get(phone)
            if prior is None or prior.version < version:
                phones[phone] = shared[kind]


_first = itemgetter(0)
_second = itemgetter(1)
_version = attrgetter("version")


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

    commands: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(phone, the record key; SendCommand JSON): ready for the producer as they are."""
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


def summary_record(
    outage: OutageEvent,
    partition: int,
    summary: FanoutSummary,
    pool: SenderPool,
    partitions: int,
    warn_hours: float,
) -> tuple[AuditRecord, Projection | None]:
    """The ``fanout_summary`` audit record of one partition's fan-out, and its projection.

    The partition has about 1/partitions of the recipients and, under a uniform hash, the
    same share of each sender's rate: its projection is the whole fan-out's.
    """
    projection = pool.project(summary.work, share=1 / partitions)
    seconds = projection.seconds if projection else 0.0
    record = AuditRecord(
        audit_id=f"{outage.outage_id}:{outage.version}:p{partition}:summary",
        decision="fanout_summary",
        outage_id=outage.outage_id,
        outage_version=outage.version,
        facts={
            "partition": partition,
            "counts": dict(sorted(summary.counts.items())),
            "queued_by_sender": dict(sorted(summary.work.items())),
            "projected_completion_seconds": round(seconds, 1),
            "exceeds_limit": seconds > warn_hours * 3600,
        },
        at=outage.occurred_at,
    )
    return record, projection


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
            except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory
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
        alerted = {p for p, t in told.items() if t.kind is not MessageKind.RESTORED}
        if resolved:
            candidates = sorted(alerted)
        else:
            candidates = in_order(index, regions, alerted)

        # Everything shared between recipients is computed once: texts, quiet-hours
        # answers per zone, timestamps. The loop below runs a million times; it avoids enum
        # attribute access and per-recipient formatting on purpose (bench/fanout.py).
        texts: dict[tuple[str, str, str | None, bool], Rendered] = {}
        per_zone: dict[str, tuple[datetime | None, str | None, str]] = {}
        eta_local: dict[tuple[str, str], str | None] = {}
        shapes: dict[tuple[Any, ...], tuple[bytes, str, int, str | None]] = {}
        # command_id()'s digest, its common prefix hashed once (the same ids, half the CPU).
        cid_base = hashlib.blake2b(
            f"{outage.outage_id}\x1f{outage.version}\x1f".encode(), digest_size=16
        )
        chunk = FanoutChunk()
        groups: dict[str, list[list[Any]]] = {}
        counts = summary.counts
        work = summary.work
        ttl = rules.command_ttl
        default_expiry = format_utc(now + ttl)
        alert, update, restored = MessageKind.ALERT, MessageKind.UPDATE, MessageKind.RESTORED
        kind_names = {k: k.value for k in MessageKind}
        choose = self.pool.choose
        sole = self.pool.sole
        defer_alerts = rules.defer_service_alerts
        eta_change = rules.eta_change
        g_dup = f"{Decision.SKIPPED.value}:{Reason.DUPLICATE.value}"
        g_same = f"{Decision.SKIPPED.value}:{Reason.NO_SIGNIFICANT_CHANGE.value}"
        g_consent = f"{Decision.SUPPRESSED.value}:{Reason.NO_CONSENT.value}"
        g_landline = f"{Decision.SUPPRESSED.value}:{Reason.LANDLINE.value}"
        g_invalid = f"{Decision.SUPPRESSED.value}:{Reason.INVALID_NUMBER.value}"
        g_nosender = f"{Decision.SUPPRESSED.value}:{Reason.NO_SENDER.value}"
        g_optout = f"{Decision.SUPPRESSED.value}:{Reason.OPTED_OUT.value}"
        g_bypass = f"{Decision.TARGETED.value}:{Reason.LIFE_SAFETY_BYPASS.value}"
        g_quiet = f"{Decision.TARGETED.value}:{Reason.QUIET_HOURS_DEFERRAL.value}"
        g_sent = f"{Decision.TARGETED.value}:-"
        severity_s, status_s = outage.severity.value, outage.status.value
        eta_s = format_utc(outage.eta) if outage.eta is not None else None

        def flush() -> FanoutChunk:
            nonlocal chunk, groups
            for group, entries in sorted(groups.items()):
                # "decision:reason" or, for plain sends, "decision:reason|kind|sender" with
                # entries [phone, command_id] (a million dicts are not free).
                base, *shared = group.split("|")
                decision, reason = base.split(":")
                counts[base] += len(entries)
                facts: dict[str, Any] = {
                    "partition": partition,
                    "severity": severity_s,
                    "status": status_s,
                }
                if shared:
                    facts["kind"], facts["sender"] = shared
                facts["recipients"] = entries
                audit = {
                    "schema_version": 1,
                    "audit_id": f"{oid}:{version}:p{partition}:{group}:{entries[0][0]}",
                    "decision": decision,
                    "reason": None if reason == "-" else reason,
                    "phone": None,
                    "outage_id": oid,
                    "outage_version": version,
                    "facts": facts,
                    "at": now_s,
                }
                chunk.audits.append((oid, orjson.dumps(audit)))
            out, chunk, groups = chunk, FanoutChunk(), {}
            return out

        def record(group: str, entry: list[Any]) -> None:
            entries = groups.get(group)
            if entries is None:
                groups[group] = [entry]
            else:
                entries.append(entry)

        def shape_of(
            kind: MessageKind, zone_name: str, lang: str, first: bool, sender: Sender, plain: bool
        ) -> tuple[bytes, str, int, str | None]:
            """(command tail, audit group, queued units, not_before) of one shape."""
            zone = per_zone.get(zone_name)
            if zone is None:
                morning = self._morning(self._zone(zone_name), now)
                zone = per_zone[zone_name] = (
                    morning,
                    format_utc(morning) if morning else None,
                    format_utc(morning + ttl) if morning else default_expiry,
                )
            not_before = None
            expires = default_expiry
            if zone[0] is not None and not life_safety and (kind is not alert or defer_alerts):
                not_before, expires = zone[1], zone[2]
            kind_s = kind_names[kind]
            local = eta_local.get((zone_name, lang), "?")
            if local == "?":
                local = eta_local[(zone_name, lang)] = format_eta(
                    outage.eta, self._zone(zone_name), now, lang
                )
            text = texts.get((kind_s, lang, local, first))
            if text is None:
                text = texts[(kind_s, lang, local, first)] = self.templates.render(
                    kind, lang, outage.summary, local, outage.status_url, first
                )
            # Every field but the id and the number: serialised once, the two spliced in
            # per recipient (both plain ASCII: hex, E.164).
            whole = orjson.dumps(
                {
                    "schema_version": 1,
                    "kind": kind_s,
                    "outage_id": oid,
                    "outage_version": version,
                    "from": sender.id,
                    "body": text.body,
                    "encoding": text.encoding.value,
                    "segments": text.segments,
                    "created_at": now_s,
                    "not_before": not_before,
                    "expires_at": expires,
                    "life_safety_bypass": not plain,
                    "language": lang,
                    "outage_severity": severity_s,
                    "outage_eta": eta_s,
                }
            )
            units = text.segments if sender.per_segment else 1
            return b"," + whole[1:], f"{g_sent}|{kind_s}|{sender.id}", units, not_before

        n_in_chunk = 0
        chunk_size = rules.chunk_size
        for phone in candidates:
            if n_in_chunk >= chunk_size:
                yield flush()
                n_in_chunk = 0
            n_in_chunk += 1
            prior = told.get(phone)
            sub = index.subscribers.get(phone)

            # Lifecycle: what, if anything, this number should hear about this version.
            # Most numbers have one account: test it without building a list.
            matching: tuple[Customer, ...]
            consenting: tuple[Customer, ...]
            if sub is not None and not resolved:
                customers = sub.customers
                if len(customers) == 1:
                    matching = () if regions.isdisjoint(customers[0].regions) else customers
                else:
                    matching = tuple(c for c in customers if not regions.isdisjoint(c.regions))
            else:
                matching = ()
            if prior is not None and prior.version >= version:
                record(g_dup, [phone, None, None])
                continue
            if resolved or (prior is not None and not matching):
                kind = restored
                if prior is None or prior.kind is restored:
                    continue
            elif prior is None or prior.kind is restored:
                kind = alert
            elif prior.status != phase or _eta_moved(prior.eta, outage.eta, eta_change):
                kind = update
            else:
                record(g_same, [phone, None, None])
                continue

            # Compliance, in the order an auditor reads it.
            if sub is None:
                # The customer record is gone (tombstone): no consent on file any more.
                record(g_consent, [phone, None, {"customers": []}])
                continue
            people = matching or sub.customers
            if not sub.textable:
                group = g_landline if sub.line.startswith("fixed") else g_invalid
                record(group, [phone, None, {"line": sub.line}])
                continue
            sender = sole.get(sub.country) or choose(phone, sub.country)
            if sender is None:
                record(g_nosender, [phone, None, {"country": sub.country}])
                continue
            if len(people) == 1:
                consenting = people if people[0].consent else ()
            else:
                consenting = tuple(c for c in people if c.consent)
            bypass: list[str] | None = None
            if not consenting:
                if not life_safety:
                    record(g_consent, [phone, None, {"customers": [c.customer_id for c in people]}])
                    continue
                bypass = [Reason.NO_CONSENT.value]
            opt = optouts.get(phone) if optouts else None
            if opt is not None and opt.blocks(sender.id):
                if not life_safety:
                    scope = "all" if opt.all_senders else "sender"
                    record(g_optout, [phone, None, {"scope": scope, "sender": sender.id}])
                    continue
                bypass = [*(bypass or ()), Reason.OPTED_OUT.value]

            person = (consenting or people)[0]
            zone_name = person.timezone or sub.number_timezone or rules.default_timezone
            first = phone not in introduced
            # Everything but the id and the number is shared by every recipient of the same
            # shape: worked out once per shape (text, quiet hours, the serialised tail).
            key = (kind, zone_name, person.language, first, sender.id, bypass is None)
            found = shapes.get(key)
            if found is None:
                found = shapes[key] = shape_of(
                    kind, zone_name, person.language, first, sender, bypass is None
                )
            tail, group, units, not_before = found

            number = phone.encode()
            digest = cid_base.copy()
            digest.update(number)
            cid = "cmd-" + digest.hexdigest()
            value = f'{{"command_id":"{cid}","to":"{phone}"'.encode() + tail
            chunk.commands.append((number, value))
            chunk.told.append((phone, kind_names[kind]))
            work[sender.id] += units
            if bypass is not None:
                facts = {"kind": kind_names[kind], "sender": sender.id, "bypassed": bypass}
                record(g_bypass, [phone, cid, facts])
            elif not_before is not None:
                facts = {
                    "kind": kind_names[kind],
                    "sender": sender.id,
                    "not_before": not_before,
                    "timezone": zone_name,
                }
                record(g_quiet, [phone, cid, facts])
            else:
                entries = groups.get(group)
                if entries is None:
                    groups[group] = [[phone, cid]]
                else:
                    entries.append([phone, cid])

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


def in_order(index: PartitionIndex, regions: Iterable[str], extra: set[str]) -> list[str]:
    """Every number of ``regions`` and ``extra``, once each, in order (= ``sorted`` of
    their union), from the index's ordered regions."""
    lists = [index.ordered(r) for r in sorted(regions)]
    lists = [lst for lst in lists if lst]
    if len(lists) == 1:
        out = lists[0]
    else:
        # Sorted runs: timsort merges them; a number in two regions is kept once.
        out = list(dict.fromkeys(sorted(itertools.chain.from_iterable(lists))))
    if extra:
        extra = extra.difference(*(index.by_region.get(r, ()) for r in regions))
        if extra:
            out = out + sorted(extra)
            out.sort()
    return out


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
