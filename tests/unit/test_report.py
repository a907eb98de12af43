"""One outage's funnel from the records the fan-out and the dispatcher write."""

from __future__ import annotations

from typing import Any

from streams.report import OutageReport, render_funnel

OID = "O-1"


def fanout(
    version: int,
    decision: str,
    reason: str | None,
    recipients: list[list[Any]],
    *,
    status: str = "detected",
    partition: int = 0,
    kind: str | None = "alert",
    outage: str = OID,
) -> dict[str, Any]:
    """A grouped fan-out audit record, as streams.fanout writes it."""
    facts: dict[str, Any] = {"partition": partition, "severity": "service", "status": status}
    if decision == "targeted" and reason is None and kind:
        facts["kind"], facts["sender"] = kind, "87654"
    facts["recipients"] = recipients
    return {
        "schema_version": 1,
        "audit_id": f"{outage}:{version}:p{partition}:{decision}:{reason}:{recipients[0][0]}",
        "decision": decision,
        "reason": reason,
        "phone": None,
        "outage_id": outage,
        "outage_version": version,
        "facts": facts,
        "at": f"2026-11-24T10:0{version}:00Z",
    }


def status(
    cid: str,
    outcome: str,
    version: int = 1,
    reason: str | None = None,
    second: int = 5,
    outage: str | None = OID,
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "command_id": cid,
        "outcome": outcome,
        "reason": reason,
        "kind": "alert",
        "outage_id": outage,
        "outage_version": version if outage else None,
        "at": f"2026-11-24T10:0{version}:{second:02d}Z",
    }


def test_the_funnel_counts_each_stage_and_reason() -> None:
    r = OutageReport(OID)
    r.add_audit(
        fanout(1, "targeted", None, [["+1", "c1"], ["+2", "c2"], ["+3", "c3"], ["+4", "c4"]])
    )
    r.add_audit(fanout(1, "suppressed", "no_consent", [["+5", None, {}], ["+6", None, {}]]))
    r.add_audit(fanout(1, "suppressed", "landline", [["+7", None, {"line": "fixed_line"}]]))
    r.add_audit(fanout(1, "targeted", "quiet_hours_deferral", [["+8", "c8", {"kind": "alert"}]]))
    r.add_status(status("c1", "sent", second=1))
    r.add_status(status("c2", "sent", second=2))
    r.add_status(status("c3", "suppressed", reason="opted_out", second=3))
    r.add_status(status("c1", "delivered", outage=None, second=9))  # a receipt, linked by id
    f = r.funnel()
    t = f.total
    assert t.targeted == 5 and t.deferred == 1
    assert dict(t.suppressed) == {"no_consent": 2, "landline": 1}
    assert t.sent == 2
    assert dict(t.suppressed_at_send) == {"opted_out": 1}
    assert t.delivered == 1
    assert t.pending == 2  # c4, and c8 waiting for the morning


def test_versions_are_separate_and_summed() -> None:
    r = OutageReport(OID)
    r.add_audit(fanout(1, "targeted", None, [["+1", "c1"], ["+2", "c2"]]))
    r.add_audit(fanout(2, "targeted", None, [["+1", "u1"]], status="updated", kind="update"))
    r.add_audit(
        fanout(2, "skipped", "no_significant_change", [["+2", None, None]], status="updated")
    )
    r.add_audit(fanout(3, "targeted", None, [["+1", "r1"]], status="resolved", kind="restored"))
    for cid, v in [("c1", 1), ("c2", 1), ("u1", 2), ("r1", 3)]:
        r.add_status(status(cid, "sent", version=v))
    f = r.funnel()
    assert [(v.version, v.status, v.targeted, v.sent) for v in f.versions] == [
        (1, "detected", 2, 2),
        (2, "updated", 1, 1),
        (3, "resolved", 1, 1),
    ]
    assert dict(f.total.targeted_by_kind) == {"alert": 2, "update": 1, "restored": 1}
    assert dict(f.total.skipped) == {"no_significant_change": 1}
    assert f.total.pending == 0
    whats = [e.what for e in f.timeline]
    assert whats[0].startswith("v1 detected: 2 targeted")
    assert whats[-1] == "v3 last outcome (1 commands ended)"
    assert [e.at for e in f.timeline] == sorted(e.at for e in f.timeline)


def test_records_read_twice_count_once() -> None:
    r = OutageReport(OID)
    group = fanout(1, "targeted", None, [["+1", "c1"]])
    r.add_audit(group)
    r.add_audit(group)  # a replayed fan-out
    r.add_status(status("c1", "failed", reason="outcome_unknown"))
    r.add_status(status("c1", "failed", reason="outcome_unknown"))  # repeated after a crash
    t = r.funnel().total
    assert t.targeted == 1
    assert dict(t.failed) == {"outcome_unknown": 1}
    assert t.outcomes["failed"] == 1


def test_other_outages_and_replies_are_ignored() -> None:
    r = OutageReport(OID)
    assert not r.add_audit(fanout(1, "targeted", None, [["+1", "x1"]], outage="O-2"))
    assert not r.add_status(status("x1", "sent", outage="O-2"))
    assert not r.add_status(status("reply-1", "sent", outage=None))
    reply_audit = {"decision": "reply", "phone": "+1", "message_id": "m1", "facts": {}}
    assert not r.add_audit(reply_audit)
    assert not r.funnel().found


def test_a_status_before_its_fanout_record_still_lands_in_its_version() -> None:
    r = OutageReport(OID)
    r.add_status(status("c1", "sent", version=2))
    r.add_audit(fanout(2, "targeted", None, [["+1", "c1"]], status="updated", kind="update"))
    (v,) = r.funnel().versions
    assert (v.version, v.targeted, v.sent, v.pending) == (2, 1, 1, 0)


def test_the_rendering_names_reasons_and_has_no_phone_numbers() -> None:
    r = OutageReport(OID)
    r.add_audit(fanout(1, "targeted", None, [["+12125550001", "c1"]]))
    r.add_audit(fanout(1, "suppressed", "opted_out", [["+12125550002", None, {}]]))
    r.add_audit(
        {
            "decision": "fanout_summary",
            "outage_id": OID,
            "outage_version": 1,
            "facts": {"partition": 0, "projected_completion_seconds": 12.5},
            "at": "2026-11-24T10:01:00Z",
        }
    )
    r.add_status(status("c1", "sent"))
    text = "\n".join(render_funnel(r.funnel()))
    assert "opted_out 1" in text and "projected completion 12.5s" in text
    assert "+1212" not in text
    js = r.funnel().to_json()
    assert js["total"]["suppressed_at_fanout"] == {"opted_out": 1}
    assert "+1212" not in str(js)
