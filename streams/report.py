"""One outage's funnel and timeline, folded from ``sms.audit`` and ``sms.delivery-status``.

Operators and auditors ask "how many did we reach, who did we hold back and why, what is
still waiting?" The answer is already on two topics: the fan-out audits every decision
(grouped records whose ``facts.recipients`` hold ``[phone, command_id, ...]``), and the
dispatcher writes exactly one terminal status per command (receipts add delivered or
undelivered later). This module only folds records; reading them is the caller's job,
so it is testable without a broker and the same fold serves the CLI and the demo.

Records are plain decoded JSON (mappings): the report must keep working on records of a
newer schema version, and readers ignore unknown fields.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "TERMINAL",
    "Funnel",
    "OutageReport",
    "TimelineEvent",
    "VersionFunnel",
    "render_funnel",
]

#: Outcomes the dispatcher ends a command with (one per command).
TERMINAL = frozenset({"sent", "failed", "suppressed", "expired"})
#: Carrier receipts, linked to a command after it was sent.
RECEIPTS = frozenset({"delivered", "undelivered"})


@dataclass
class VersionFunnel:
    """What one version of the outage caused: decisions at fan-out, then outcomes."""

    version: int
    status: str | None = None
    """detected, updated or resolved (from the fan-out's audit facts)."""
    event_at: datetime | None = None
    targeted_by_kind: Counter[str] = field(default_factory=Counter)
    deferred: int = 0
    """Targeted, but held to the morning by quiet hours (``not_before``)."""
    bypassed: int = 0
    """Targeted despite no consent or an opt-out: life-safety, audited."""
    suppressed: Counter[str] = field(default_factory=Counter)
    """Reason -> recipients held back at fan-out (no_consent, opted_out, landline...)."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Reason -> recipients with nothing new to hear (duplicate, no_significant_change)."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """sent / failed / suppressed / expired, one per command."""
    suppressed_at_send: Counter[str] = field(default_factory=Counter)
    """Reason -> commands stopped by the dispatcher (a STOP meanwhile, stale, expired)."""
    failed: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    undelivered: int = 0
    pending: int = 0
    projected_seconds: float | None = None
    first_sent_at: datetime | None = None
    last_outcome_at: datetime | None = None

    @property
    def targeted(self) -> int:
        return sum(self.targeted_by_kind.values())

    @property
    def sent(self) -> int:
        return self.outcomes["sent"]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status,
            "event_at": _iso(self.event_at),
            "targeted": self.targeted,
            "targeted_by_kind": dict(sorted(self.targeted_by_kind.items())),
            "deferred_quiet_hours": self.deferred,
            "life_safety_bypass": self.bypassed,
            "suppressed_at_fanout": dict(sorted(self.suppressed.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "outcomes": dict(sorted(self.outcomes.items())),
            "suppressed_at_send": dict(sorted(self.suppressed_at_send.items())),
            "failed": dict(sorted(self.failed.items())),
            "delivered": self.delivered,
            "undelivered": self.undelivered,
            "pending": self.pending,
            "projected_completion_seconds": self.projected_seconds,
            "first_sent_at": _iso(self.first_sent_at),
            "last_outcome_at": _iso(self.last_outcome_at),
        }


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    at: datetime
    version: int | None
    what: str

    def to_json(self) -> dict[str, Any]:
        return {"at": _iso(self.at), "version": self.version, "what": self.what}


@dataclass
class Funnel:
    outage_id: str
    versions: list[VersionFunnel]
    total: VersionFunnel
    """Every version summed (``version`` 0)."""
    timeline: list[TimelineEvent]
    records_used: int

    @property
    def found(self) -> bool:
        return self.records_used > 0

    def to_json(self) -> dict[str, Any]:
        total = self.total.to_json()
        for k in ("version", "status", "event_at", "projected_completion_seconds"):
            total.pop(k)
        return {
            "outage_id": self.outage_id,
            "total": total,
            "versions": [v.to_json() for v in self.versions],
            "timeline": [e.to_json() for e in self.timeline],
            "records_used": self.records_used,
        }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


class OutageReport:
    """Feed it audit and status records in any order; ask for the :class:`Funnel`.

    Commands are counted by id, so a record read twice (a replayed fan-out, a status the
    dispatcher repeated after a crash) counts once.
    """

    def __init__(self, outage_id: str) -> None:
        self.outage_id = outage_id
        self._versions: dict[int, VersionFunnel] = {}
        self._targeted: dict[str, int] = {}
        """command id -> version, from the fan-out."""
        self._terminal: dict[str, tuple[int | None, str, str | None, datetime | None]] = {}
        """command id -> (version, outcome, reason, at): the first terminal status."""
        self._receipts: dict[str, tuple[str, datetime | None]] = {}
        self._groups: set[str] = set()
        self._summaries: dict[tuple[int, Any], float] = {}
        self.records_used = 0

    def _version(self, v: int) -> VersionFunnel:
        row = self._versions.get(v)
        if row is None:
            row = self._versions[v] = VersionFunnel(v)
        return row

    def add_audit(self, rec: Mapping[str, Any]) -> bool:
        """Fold one ``sms.audit`` record; False when it is not about this outage's fan-out."""
        if rec.get("outage_id") != self.outage_id or not isinstance(rec.get("outage_version"), int):
            return False
        decision, reason = rec.get("decision"), rec.get("reason")
        facts = rec.get("facts") or {}
        version: int = rec["outage_version"]
        if decision == "fanout_summary":
            key = (version, facts.get("partition"))
            seconds = facts.get("projected_completion_seconds")
            if isinstance(seconds, int | float):
                self._summaries[key] = float(seconds)
            self.records_used += 1
            return True
        if decision not in ("targeted", "suppressed", "skipped"):
            return False  # the dispatcher's own audits: its statuses already count them
        audit_id = str(rec.get("audit_id"))
        if audit_id in self._groups:
            return True  # the same group read twice
        self._groups.add(audit_id)
        self.records_used += 1
        row = self._version(version)
        row.status = row.status or facts.get("status")
        row.event_at = _min(row.event_at, _when(rec.get("at")))
        recipients = facts.get("recipients") or []
        if decision == "suppressed":
            row.suppressed[str(reason)] += len(recipients)
        elif decision == "skipped":
            row.skipped[str(reason)] += len(recipients)
        else:
            for entry in recipients:
                cid = entry[1] if len(entry) > 1 else None
                if not cid or cid in self._targeted:
                    continue
                self._targeted[cid] = version
                extra = entry[2] if len(entry) > 2 and isinstance(entry[2], dict) else {}
                row.targeted_by_kind[str(extra.get("kind") or facts.get("kind") or "?")] += 1
                if reason == "quiet_hours_deferral":
                    row.deferred += 1
                elif reason == "life_safety_bypass":
                    row.bypassed += 1
        return True

    def add_status(self, rec: Mapping[str, Any]) -> bool:
        """Fold one ``sms.delivery-status`` record; False when it is not this outage's."""
        cid = rec.get("command_id")
        if not isinstance(cid, str):
            return False
        ours = rec.get("outage_id") == self.outage_id or cid in self._targeted
        outcome = rec.get("outcome")
        at = _when(rec.get("at"))
        if outcome in RECEIPTS:
            # A receipt may come without the outage (linked by command id only): keep it
            # and decide in funnel(), when every fan-out record has been seen.
            if cid not in self._receipts:
                self._receipts[cid] = (str(outcome), at)
            return ours
        if not ours or outcome not in TERMINAL:
            return False
        self.records_used += 1
        if cid not in self._terminal:
            v = rec.get("outage_version")
            self._terminal[cid] = (
                v if isinstance(v, int) else None,
                str(outcome),
                rec.get("reason"),
                at,
            )
        return True

    def funnel(self) -> Funnel:
        """The funnel as of the records folded so far."""
        rows = {v: _copy(r) for v, r in self._versions.items()}
        for cid, (v, outcome, reason, at) in self._terminal.items():
            version = self._targeted.get(cid, v)
            row = rows.get(version or 0)
            if row is None:
                row = rows[version or 0] = VersionFunnel(version or 0)
            row.outcomes[outcome] += 1
            if outcome == "suppressed":
                row.suppressed_at_send[str(reason)] += 1
            elif outcome == "failed":
                row.failed[str(reason)] += 1
            elif outcome == "sent":
                row.first_sent_at = _min(row.first_sent_at, at)
            row.last_outcome_at = _max(row.last_outcome_at, at)
        for cid, version in self._targeted.items():
            if cid not in self._terminal:
                rows[version].pending += 1
        receipts_used = 0
        for cid, (outcome, _at) in self._receipts.items():
            version = self._targeted.get(cid)
            if version is None and cid in self._terminal:
                version = self._terminal[cid][0]
            if version is None or version not in rows:
                continue
            receipts_used += 1
            if outcome == "delivered":
                rows[version].delivered += 1
            else:
                rows[version].undelivered += 1
        for (v, _p), seconds in self._summaries.items():
            if v in rows:
                rows[v].projected_seconds = max(rows[v].projected_seconds or 0.0, seconds)
        versions = [rows[v] for v in sorted(rows)]
        return Funnel(
            self.outage_id,
            versions,
            _sum(versions),
            _timeline(versions),
            self.records_used + receipts_used,
        )


def _copy(r: VersionFunnel) -> VersionFunnel:
    return VersionFunnel(
        r.version,
        r.status,
        r.event_at,
        Counter(r.targeted_by_kind),
        r.deferred,
        r.bypassed,
        Counter(r.suppressed),
        Counter(r.skipped),
    )


def _sum(rows: Iterable[VersionFunnel]) -> VersionFunnel:
    total = VersionFunnel(0)
    for r in rows:
        total.targeted_by_kind.update(r.targeted_by_kind)
        total.deferred += r.deferred
        total.bypassed += r.bypassed
        total.suppressed.update(r.suppressed)
        total.skipped.update(r.skipped)
        total.outcomes.update(r.outcomes)
        total.suppressed_at_send.update(r.suppressed_at_send)
        total.failed.update(r.failed)
        total.delivered += r.delivered
        total.undelivered += r.undelivered
        total.pending += r.pending
        total.first_sent_at = _min(total.first_sent_at, r.first_sent_at)
        total.last_outcome_at = _max(total.last_outcome_at, r.last_outcome_at)
    return total


def _reasons(c: Counter[str]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(c.items())) or "none"


def _timeline(rows: list[VersionFunnel]) -> list[TimelineEvent]:
    events: list[TimelineEvent] = []
    for r in rows:
        if r.event_at is not None:
            held = sum(r.suppressed.values())
            projected = (
                f"; projected completion {r.projected_seconds:g}s"
                if r.projected_seconds is not None
                else ""
            )
            events.append(
                TimelineEvent(
                    r.event_at,
                    r.version,
                    f"v{r.version} {r.status or '?'}: {r.targeted} targeted, {held} suppressed "
                    f"at fan-out{projected}",
                )
            )
        if r.first_sent_at is not None:
            events.append(
                TimelineEvent(r.first_sent_at, r.version, f"v{r.version} first text sent")
            )
        if r.last_outcome_at is not None:
            done = sum(r.outcomes.values())
            tail = f", {r.pending} still pending" if r.pending else ""
            events.append(
                TimelineEvent(
                    r.last_outcome_at,
                    r.version,
                    f"v{r.version} last outcome ({done} commands ended{tail})",
                )
            )
    return sorted(events, key=lambda e: (e.at, e.version or 0))


def render_funnel(f: Funnel) -> list[str]:
    """The funnel as an operator reads it: one line per stage, reasons spelled out."""
    t = f.total
    lines = [
        f"outage {f.outage_id}: {len(f.versions)} version(s)",
        f"  targeted   {t.targeted:>7}  ({_reasons(t.targeted_by_kind)})"
        + (f"; {t.deferred} deferred by quiet hours" if t.deferred else "")
        + (f"; {t.bypassed} life-safety bypass" if t.bypassed else ""),
        f"  suppressed {sum(t.suppressed.values()):>7}  at fan-out: {_reasons(t.suppressed)}",
        f"             {sum(t.suppressed_at_send.values()):>7}  at send:   "
        f"{_reasons(t.suppressed_at_send)}",
        f"  skipped    {sum(t.skipped.values()):>7}  ({_reasons(t.skipped)})",
        f"  sent       {t.sent:>7}",
        f"  delivered  {t.delivered:>7}   undelivered {t.undelivered}",
        f"  failed     {t.outcomes['failed']:>7}  ({_reasons(t.failed)})",
        f"  expired    {t.outcomes['expired']:>7}",
        f"  pending    {t.pending:>7}",
        "  by version:",
    ]
    for r in f.versions:
        lines.append(
            f"    v{r.version} {r.status or '?':9} targeted {r.targeted:>6}  sent {r.sent:>6}  "
            f"suppressed {sum(r.suppressed.values()) + sum(r.suppressed_at_send.values()):>6}  "
            f"failed {r.outcomes['failed']:>4}  pending {r.pending:>5}"
        )
    lines.append("  timeline (UTC):")
    for e in f.timeline:
        lines.append(f"    {e.at:%Y-%m-%d %H:%M:%S}  {e.what}")
    return lines
