"""Audit replay: re-derive every decision from the input topics and compare with ``sms.audit``.

Pure: no Kafka, no Faust. The caller (``outage_sms.replay``) reads ``customer.regions``,
``outage.events`` and ``sms.inbound``, merges their partitions by record timestamp (each
partition in offset order) and feeds the decoded records to :class:`ReplayEngine`, which
runs them through the very functions the agents call (``streams.intake``,
``streams.customers``, ``streams.fanout``, ``streams.replies``) over state held in dicts,
shaped and updated as the agents update their tables and views:

- ``customers`` agent: ``customer_id -> phone``; each by-phone change folds into the
  subscriber state at once (the live pipeline has an internal topic in between);
- ``outages`` agent: content check, newest version only, then a fan-out per partition
  (partition = Kafka's default partitioner on the phone, injected as ``partition_of``);
- ``inbound`` agent: opt-outs, loop windows, the status bot's copy of every outage.

What the engine cannot re-derive from the input topics, it says so:

- the dispatcher's send-time audits (``<command>:dispatch:<reason>``) use the wall clock
  at the turn of the command. They are re-checked with ``streams.dispatch.decide`` at the
  RECORDED time (the audit's ``at``) against the replayed opt-out and outage state of that
  moment; ``duplicate`` depends on the dispatcher's ledger, not on any input, and is
  reported as irreproducible; so is ``not_alerted`` unless the replay itself re-derived
  the suppression of that number's alert for the outage (``streams.first_contact``: an
  alert can also end unsent by expiry or a provider failure, which only the ledger shows);
- ``receipt_unlinked`` and any other record not derived from an input topic is counted
  and left alone.

Known approximation: the live agents run concurrently, so a customer change or a STOP
that reaches the broker within the pipeline's latency of an outage may be applied on the
other side of the fan-out than record-timestamp order says. Such races show up as
divergences (with examples); they are not hidden.

Copied from ``topology/`` because the agents keep it inline (see the module's report):
``optout_from_state`` (``topology.views``), the partition views (``LocalViews``,
``AreaViews``) and the ``fanout_summary`` record (``topology.app.run_fanout``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from schemas import AuditRecord, MessageKind, OutageEvent, SendCommand

from .content import ContentPolicy
from .customers import apply_subscriber_change, decode_phone_change, rekey_customer
from .dispatch import DispatchRules, Send, Terminal, decide
from .fanout import (
    FanoutPlanner,
    FanoutSummary,
    OptOut,
    OutageMemory,
    PartitionIndex,
    subscriber_from_state,
)
from .fanout import summary_record as fanout_summary_record
from .intake import Accepted, Rejected, Tombstone, decode_customer, decode_inbound, decode_outage
from .replies import AreaOutage, ReplyRules, area_outage_from_state, handle_inbound
from .reply_texts import ReplyTexts

__all__ = [
    "Comparison",
    "InputRecord",
    "Mismatch",
    "RecordClass",
    "ReplayConfig",
    "ReplayEngine",
    "SendTimeCheck",
    "Source",
    "classify_recorded",
    "compare",
    "diff_fields",
    "optout_from_state",
    "parse_time",
    "summarise_checks",
    "summary_record",
]


class Source(StrEnum):
    """The input topic a record came from; the value is the tie-break rank."""

    CUSTOMERS = "customers"
    OUTAGES = "outages"
    INBOUND = "inbound"


SOURCE_RANK = {Source.CUSTOMERS: 0, Source.OUTAGES: 1, Source.INBOUND: 2}
"""Equal timestamps: customers first (state), then outages, then texts."""


@dataclass(frozen=True, slots=True)
class InputRecord:
    source: Source
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    in_scope: bool = True
    """False: only builds state (warm-up before the range); its decisions are not compared."""


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """The rules, built from the same settings the worker uses."""

    partitions: int
    partition_of: Callable[[str], int]
    """E.164 phone -> partition of every phone-keyed topic (Kafka's default partitioner)."""
    planner: FanoutPlanner
    content: ContentPolicy
    reply_texts: ReplyTexts
    reply_rules: ReplyRules
    max_record_bytes: int = 64 * 1024
    fanout_warn_hours: float = 4.0
    dispatch_rules: DispatchRules = field(default_factory=DispatchRules)


# ---- copied from topology/ (one shared copy belongs in streams/) ----------------------


def optout_from_state(state: Any) -> OptOut | None:
    """The ``optouts`` table value -> the fan-out's ``OptOut`` (``topology.views``)."""
    if not state:
        return None
    senders = frozenset(state.get("senders") or ())
    everyone = bool(state.get("all"))
    return OptOut(everyone, senders) if everyone or senders else None


def summary_record(
    outage: OutageEvent, partition: int, summary: FanoutSummary, config: ReplayConfig
) -> AuditRecord:
    """The ``fanout_summary`` audit record, from the function the fan-out agent uses."""
    record, _ = fanout_summary_record(
        outage,
        partition,
        summary,
        config.planner.pool,
        config.partitions,
        config.fanout_warn_hours,
    )
    return record


# ---- classifying recorded audit records -------------------------------------------


class RecordClass(StrEnum):
    DERIVED = "derived"
    """Made by an agent from an input record: re-derived and compared."""
    SEND_TIME = "send_time"
    """Made by the dispatcher at a command's turn (wall clock): re-checked at its ``at``."""
    OTHER = "other"
    """Not derived from an input topic (e.g. ``receipt_unlinked``): counted only."""


def classify_recorded(audit: Mapping[str, Any]) -> tuple[RecordClass, str | None]:
    """(class, source key): the source names the input that explains the record."""
    aid = str(audit.get("audit_id") or "")
    oid, version = audit.get("outage_id"), audit.get("outage_version")
    outage_source = f"outage:{oid}:{version}" if oid is not None and version is not None else None
    if ":dispatch:" in aid:
        return RecordClass.SEND_TIME, outage_source
    if aid.startswith("inbound:") and audit.get("message_id"):
        return RecordClass.DERIVED, f"inbound:{audit['message_id']}"
    if outage_source is not None and aid.startswith(f"{oid}:{version}:p"):
        return RecordClass.DERIVED, outage_source
    return RecordClass.OTHER, None


# ---- the engine ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendTimeCheck:
    audit_id: str
    verdict: str
    """``confirmed``, ``divergent`` or ``irreproducible``."""
    recorded: str
    replayed: str
    note: str = ""


_IRREPRODUCIBLE_DUPLICATE = (
    "depends on the dispatcher's ledger (what it had already sent), not on the input topics"
)
_IRREPRODUCIBLE_NOT_ALERTED = (
    "the alert ended unsent for a reason only the dispatcher's ledger and delivery status "
    "show (expired, failed)"
)


class ReplayEngine:
    """Feeds input records, in merged order, into the agents' domain functions."""

    def __init__(self, config: ReplayConfig) -> None:
        self.config = config
        # Agent tables (same keys and value shapes).
        self.customer_phone: dict[str, str] = {}
        self.subscribers: dict[str, dict[str, Any]] = {}
        self.outages: dict[str, dict[str, Any]] = {}
        self.optouts: dict[str, dict[str, Any]] = {}
        self.reply_guard: dict[str, dict[str, Any]] = {}
        # Views the fan-out and the status bot read, per partition as the agents keep them.
        self.index: dict[int, PartitionIndex] = {}
        self.memory: dict[int, OutageMemory] = {}
        self.optout_views: dict[int, dict[str, OptOut]] = {}
        self.areas: dict[str, AreaOutage] = {}
        """Every partition receives every outage: one shared copy stands for all of them."""
        # Output.
        self.derived: dict[str, bytes] = {}
        """audit_id -> record bytes, for in-scope inputs only."""
        self.sources: dict[str, bool] = {}
        """Source key of every input that was processed -> whether any of it was in scope."""
        self.stats: Counter[str] = Counter()
        self.send_time: list[SendTimeCheck] = []
        self._checks: list[tuple[int, str, dict[str, Any]]] = []
        self._next_check = 0
        self._wanted: set[str] = set()
        self._unsent_alerts: set[tuple[str, str]] = set()
        """(number, outage) whose alert the replay re-derived as suppressed at send time."""
        self._commands: dict[str, tuple[bytes, bool]] = {}

    # -- send-time audits, re-checked at their recorded time --------------------------

    def expect_send_time(self, audits: Iterable[Mapping[str, Any]]) -> None:
        """Recorded dispatcher audits, checked when the replay reaches their ``at``."""
        for a in audits:
            at = datetime.fromisoformat(str(a["at"]))
            self._checks.append((int(at.timestamp() * 1000), str(a["audit_id"]), dict(a)))
            if a.get("command_id"):
                self._wanted.add(str(a["command_id"]))
        self._checks.sort(key=lambda c: (c[0], c[1]))

    def _run_checks(self, until_ms: int | None) -> None:
        checks = self._checks
        while self._next_check < len(checks) and (
            until_ms is None or checks[self._next_check][0] < until_ms
        ):
            result = self._check(checks[self._next_check][2])
            if result is not None:
                self.send_time.append(result)
            self._next_check += 1

    def _check(self, audit: Mapping[str, Any]) -> SendTimeCheck | None:
        aid = str(audit["audit_id"])
        recorded = f"{audit.get('decision')}:{audit.get('reason')}"
        detail = (audit.get("facts") or {}).get("detail")
        if audit.get("reason") == "duplicate":
            return SendTimeCheck(aid, "irreproducible", recorded, "-", _IRREPRODUCIBLE_DUPLICATE)
        found = self._commands.get(str(audit.get("command_id")))
        if found is None:
            return SendTimeCheck(
                aid, "unknown_command", recorded, "-", "no input record re-derives this command"
            )
        raw, in_scope = found
        if not in_scope:
            return None
        cmd = SendCommand.from_bytes(raw)
        at = datetime.fromisoformat(str(audit["at"]))
        outage = self.outages.get(cmd.outage_id) if cmd.outage_id else None
        alert = (cmd.to, cmd.outage_id) if cmd.outage_id is not None else None
        d = decide(
            cmd,
            self.optouts.get(cmd.to),
            outage,
            False,
            at,
            self.config.dispatch_rules,
            never_alerted=alert in self._unsent_alerts,
        )
        if alert is not None:
            if cmd.kind is MessageKind.ALERT and isinstance(d, Terminal):
                if audit.get("decision") == "suppressed_at_send":
                    self._unsent_alerts.add(alert)
            elif cmd.kind is MessageKind.RESTORED:
                # The outage is over for this number (a reopened one starts afresh).
                never = alert in self._unsent_alerts
                self._unsent_alerts.discard(alert)
                if audit.get("reason") == "not_alerted" and not never:
                    return SendTimeCheck(
                        aid, "irreproducible", recorded, "-", _IRREPRODUCIBLE_NOT_ALERTED
                    )
        if isinstance(d, Terminal) and d.outcome.value == "suppressed":
            replayed, why = f"suppressed_at_send:{d.reason}", d.detail
        elif isinstance(d, Send) and d.bypassed:
            replayed, why = f"life_safety_bypass:{','.join(d.bypassed)}", None
        else:
            what = d.outcome.value if isinstance(d, Terminal) else type(d).__name__.lower()
            replayed, why = f"not audited ({what})", None
        if replayed == recorded and why == detail:
            return SendTimeCheck(aid, "confirmed", recorded, replayed)
        return SendTimeCheck(
            aid,
            "divergent",
            recorded + (f" ({detail})" if detail else ""),
            replayed + (f" ({why})" if why else ""),
            f"state replayed up to the recorded time {audit['at']}",
        )

    def _keep_command(self, raw: bytes, cid: str, in_scope: bool) -> None:
        if cid in self._wanted:
            self._commands[cid] = (raw, in_scope)

    # -- inputs ----------------------------------------------------------------------

    def feed(self, rec: InputRecord) -> None:
        if self._next_check < len(self._checks):
            self._run_checks(rec.timestamp_ms)
        self.stats["input_records"] += 1
        self.stats["in_scope_records" if rec.in_scope else "warmup_records"] += 1
        if rec.source is Source.OUTAGES:
            self._outage(rec)
        elif rec.source is Source.INBOUND:
            self._inbound(rec)
        else:
            self._customer(rec)

    def feed_all(self, records: Iterable[InputRecord]) -> ReplayEngine:
        for rec in records:
            self.feed(rec)
        return self.finish()

    def finish(self) -> ReplayEngine:
        self._run_checks(None)
        return self

    def _reject(self, rec: InputRecord, rejected: Rejected) -> None:
        self.stats[f"rejected:{rec.source.value}:{rejected.reason.value}"] += 1

    def _customer(self, rec: InputRecord) -> None:
        decoded = decode_customer(rec.key, rec.value, self.config.max_record_bytes)
        if isinstance(decoded, Rejected):
            self._reject(rec, decoded)
            return
        if isinstance(decoded, Tombstone):
            customer_id, record = decoded.key, None
        else:
            customer_id, record = decoded.record.customer_id, decoded.record
        phone, changes = rekey_customer(self.customer_phone.get(customer_id), customer_id, record)
        for key, envelope in changes:
            self._subscriber_change(key, envelope)
        if phone is not None:
            self.customer_phone[customer_id] = phone
        else:
            self.customer_phone.pop(customer_id, None)

    def _subscriber_change(self, phone: str, envelope: bytes) -> None:
        partition = self.config.partition_of(phone)
        customer_id, customer = decode_phone_change(envelope)
        state = apply_subscriber_change(
            self.subscribers.get(phone), phone, partition, customer_id, customer
        )
        index = self.index.setdefault(partition, PartitionIndex())
        if state is not None:
            self.subscribers[phone] = state
            index.upsert(subscriber_from_state(phone, state))
        else:
            self.subscribers.pop(phone, None)
            index.remove(phone)

    def _outage(self, rec: InputRecord) -> None:
        cfg = self.config
        decoded = decode_outage(rec.key, rec.value, cfg.max_record_bytes)
        if isinstance(decoded, Rejected):
            self._reject(rec, decoded)
            return
        ev = decoded.record
        violation = cfg.content.violation(ev.summary, ev.status_url)
        if violation is not None:
            self.stats["rejected:outages:forbidden_content"] += 1
            return
        known = self.outages.get(ev.outage_id)
        if known is not None and known["version"] >= ev.version:
            self.stats["outages_ignored_older_version"] += 1
            return
        source = f"outage:{ev.outage_id}:{ev.version}"
        self.sources[source] = self.sources.get(source, False) or rec.in_scope
        area = area_outage_from_state({**ev.model_dump(mode="json", by_alias=True)})
        known_area = self.areas.get(ev.outage_id)
        if known_area is None or known_area.version < ev.version:
            self.areas[ev.outage_id] = area
        for partition in range(cfg.partitions):
            self._fanout(ev, partition, rec.in_scope)
        self.outages[ev.outage_id] = ev.model_dump(mode="json")

    def _fanout(self, outage: OutageEvent, partition: int, in_scope: bool) -> None:
        planner = self.config.planner
        memory = self.memory.setdefault(partition, OutageMemory())
        summary = FanoutSummary()
        derived = self.derived
        wanted = self._wanted
        decisions = 0
        for chunk in planner.plan(
            outage,
            partition,
            self.index.setdefault(partition, PartitionIndex()),
            memory,
            self.optout_views.setdefault(partition, {}),
            summary,
        ):
            if in_scope:
                for _oid, raw in chunk.audits:
                    obj = orjson.loads(raw)
                    derived[obj["audit_id"]] = raw
                    decisions += len(obj["facts"].get("recipients") or ())
                self.stats["derived_records"] += len(chunk.audits)
            if wanted:
                for _phone, raw in chunk.commands:
                    self._keep_command(raw, raw[15 : raw.index(b'"', 15)].decode(), in_scope)
            if chunk.told:
                planner.remember(memory, outage, chunk.told)
        if in_scope:
            record = summary_record(outage, partition, summary, self.config)
            derived[record.audit_id] = record.to_bytes()
            self.stats["derived_records"] += 1
            self.stats["derived_decisions"] += decisions
            self.stats["fanout_runs"] += 1

    def _inbound(self, rec: InputRecord) -> None:
        cfg = self.config
        decoded = decode_inbound(rec.key, rec.value, cfg.max_record_bytes)
        if isinstance(decoded, Rejected):
            self._reject(rec, decoded)
            return
        assert isinstance(decoded, Accepted)  # noqa: S101  (decode_inbound never tombstones)
        sms = decoded.record
        phone = sms.from_
        partition = cfg.partition_of(phone)
        if partition != rec.partition:
            # The live worker moves it to its number's partition first (inbound-by-phone).
            self.stats["inbound_rekeyed"] += 1
        source = f"inbound:{sms.message_id}"
        self.sources[source] = self.sources.get(source, False) or rec.in_scope
        # The fan-out index holds subscriber_from_state(phone, subscribers[phone]) for
        # every subscribed number (both are updated together in _subscriber_change).
        index = self.index.get(partition)
        out = handle_inbound(
            sms,
            partition,
            self.optouts.get(phone),
            self.reply_guard.get(phone),
            index.subscribers.get(phone) if index is not None else None,
            list(self.areas.values()),
            cfg.reply_texts,
            cfg.reply_rules,
        )
        if out.optout_changed and out.optout is not None:
            self.optouts[phone] = out.optout
            view = self.optout_views.setdefault(partition, {})
            opt = optout_from_state(out.optout)
            if opt is None:
                view.pop(phone, None)
            else:
                view[phone] = opt
        self.reply_guard[phone] = out.guard
        if out.command is not None and self._wanted:
            raw = out.command[1]
            self._keep_command(raw, raw[15 : raw.index(b'"', 15)].decode(), rec.in_scope)
        if rec.in_scope:
            for record in out.audits:
                self.derived[record.audit_id] = record.to_bytes()
            self.stats["derived_records"] += len(out.audits)
            self.stats["derived_decisions"] += len(out.audits)


# ---- comparison ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mismatch:
    status: str
    """``missing`` (re-derived, not in sms.audit), ``unexpected`` (in sms.audit, not
    re-derived) or ``divergent`` (same audit_id, different content)."""
    audit_id: str
    decision: str | None
    reason: str | None
    differences: tuple[tuple[str, Any, Any], ...] = ()
    """(field path, recorded, replayed), at most a few per record."""


@dataclass
class Comparison:
    matched: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    recorded_total: int = 0
    recorded_in_scope: int = 0
    recorded_out_of_scope: int = 0
    recorded_duplicates: int = 0
    recorded_conflicts: list[str] = field(default_factory=list)
    """audit_ids written twice with different content (a retried fan-out, a bug)."""
    other: Counter[str] = field(default_factory=Counter)
    """Records not derived from input topics, by decision."""
    recipient_changes: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(outage:version, phone, recorded decision, replayed decision) in mismatched fan-out
    records: the per-recipient explanation of a record-level mismatch."""

    def count(self, status: str) -> int:
        return sum(1 for m in self.mismatches if m.status == status)


def diff_fields(recorded: Any, replayed: Any, path: str = "", limit: int = 8) -> list[Any]:
    """Field-by-field differences as (path, recorded, replayed), at most ``limit``."""
    out: list[tuple[str, Any, Any]] = []

    def walk(a: Any, b: Any, p: str) -> None:
        if len(out) >= limit or a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if k == "schema_version":
                    continue
                walk(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{p}.{k}" if p else k)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{p}[{i}]")
        else:
            out.append((p or "<record>", a, b))

    walk(recorded, replayed, path)
    return out


def _recipients(obj: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    facts = obj.get("facts") or {}
    label = f"{obj.get('decision')}:{obj.get('reason') or '-'}"
    if facts.get("kind"):
        label += f" ({facts['kind']})"
    src = f"{obj.get('outage_id')}:{obj.get('outage_version')}"
    out: dict[tuple[str, str], str] = {}
    for entry in facts.get("recipients") or ():
        extra = entry[2] if len(entry) > 2 and isinstance(entry[2], dict) else {}
        kind = f" ({extra['kind']})" if "kind" in extra and not facts.get("kind") else ""
        out[(src, str(entry[0]))] = label + kind
    return out


def compare(
    derived: Mapping[str, bytes],
    recorded: Iterable[tuple[dict[str, Any], bytes]],
    sources: Mapping[str, bool],
    claims_unknown: Callable[[str | None, Mapping[str, Any]], bool],
) -> Comparison:
    """Record by record, by ``audit_id``.

    ``recorded``: (parsed, raw) audit records in topic order. A record whose source the
    replay processed in scope is compared; one from warm-up input is out of scope; one
    whose source the replay never read counts as ``unexpected`` when
    ``claims_unknown(source, record)`` says the scope covers it (a full replay covers
    everything), else as out of scope. Send-time records are checked by the engine.
    """
    result = Comparison()
    seen: dict[str, bytes] = {}
    in_scope: dict[str, dict[str, Any]] = {}
    for obj, raw in recorded:
        result.recorded_total += 1
        cls, source = classify_recorded(obj)
        if cls is RecordClass.SEND_TIME:
            continue
        if cls is RecordClass.OTHER:
            result.other[str(obj.get("decision"))] += 1
            continue
        aid = str(obj["audit_id"])
        if aid in seen:
            result.recorded_duplicates += 1
            if seen[aid] != raw and orjson.loads(seen[aid]) != obj:
                result.recorded_conflicts.append(aid)
            continue
        seen[aid] = raw
        scoped = sources.get(source or "")
        if scoped is None:
            scoped = claims_unknown(source, obj)
        if not scoped:
            result.recorded_out_of_scope += 1
            continue
        result.recorded_in_scope += 1
        in_scope[aid] = obj
        mine = derived.get(aid)
        if mine is None:
            result.mismatches.append(
                Mismatch("unexpected", aid, obj.get("decision"), obj.get("reason"))
            )
        elif mine == raw:
            result.matched += 1
        else:
            theirs = orjson.loads(mine)
            diffs = diff_fields(obj, theirs)
            if diffs:
                result.mismatches.append(
                    Mismatch("divergent", aid, obj.get("decision"), obj.get("reason"), tuple(diffs))
                )
            else:
                result.matched += 1
    for aid in sorted(derived.keys() - in_scope.keys()):
        obj = orjson.loads(derived[aid])
        result.mismatches.append(Mismatch("missing", aid, obj.get("decision"), obj.get("reason")))
    result.mismatches.sort(key=lambda m: (m.status, m.audit_id))

    # Per recipient: which decision each number got on each side, for fan-out records.
    before: dict[tuple[str, str], str] = {}
    after: dict[tuple[str, str], str] = {}
    for m in result.mismatches:
        if m.status != "missing" and m.audit_id in in_scope:
            before.update(_recipients(in_scope[m.audit_id]))
        if m.status != "unexpected" and m.audit_id in derived:
            after.update(_recipients(orjson.loads(derived[m.audit_id])))
    for key in sorted(before.keys() | after.keys()):
        b, a = before.get(key, "-"), after.get(key, "-")
        if a != b:
            result.recipient_changes.append((key[0], key[1], b, a))
    return result


def parse_time(value: str) -> datetime:
    """ISO-8601 with a zone (``Z`` or an offset); naive times are refused."""
    t = datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise ValueError(f"{value!r}: give a time zone (e.g. 2026-11-24T20:00:00Z)")
    return t


def summarise_checks(checks: Sequence[SendTimeCheck]) -> Counter[str]:
    return Counter(c.verdict for c in checks)
