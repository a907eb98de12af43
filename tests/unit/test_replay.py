"""The audit replay engine: state built as the agents build it, the same decisions, the
comparison with recorded audit records, send-time audits re-checked at their time."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from outage_sms.replay import build_config
from schemas import AuditRecord
from streams.replay import (
    InputRecord,
    RecordClass,
    ReplayConfig,
    ReplayEngine,
    Source,
    classify_recorded,
    compare,
    diff_fields,
)
from topology.settings import Settings

A = "+14155550101"  # R1, consenting
B = "+14155550102"  # R1, no consent
C = "+14155550103"  # R2
T0 = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)  # noon in Los Angeles
SHORT = "87654"


def config(**over: Any) -> ReplayConfig:
    return build_config(Settings(partitions=4, **over))


_offsets = itertools.count()


def rec(source: Source, key: str, value: dict[str, Any] | None, at: datetime, **kw: Any) -> Any:
    return InputRecord(
        source,
        kw.pop("partition", 0),
        next(_offsets),
        int(at.timestamp() * 1000),
        key.encode(),
        orjson.dumps(value) if value is not None else None,
        **kw,
    )


def customer(cid: str, phone: str, regions: list[str], consent: bool = True) -> dict[str, Any]:
    return {
        "customer_id": cid,
        "phone": phone,
        "regions": regions,
        "sms_consent": consent,
        "language": "en",
        "timezone": "America/Los_Angeles",
    }


def outage(version: int, minutes: int, **over: Any) -> dict[str, Any]:
    ev = {
        "outage_id": "O1",
        "version": version,
        "status": "detected" if version == 1 else "updated",
        "severity": "service",
        "regions": ["R1"],
        "summary": "Storm damage on Main St",
        "eta": (T0 + timedelta(hours=3)).isoformat().replace("+00:00", "Z"),
        "status_url": "https://status.example.com/o/1",
        "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
    }
    ev.update(over)
    return ev


def text(mid: str, phone: str, body: str, minutes: int) -> dict[str, Any]:
    at = T0 + timedelta(minutes=minutes)
    return {
        "message_id": mid,
        "from": phone,
        "to": SHORT,
        "body": body,
        "received_at": at.isoformat().replace("+00:00", "Z"),
    }


def eta(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def run_records(in_scope: bool = True) -> list[InputRecord]:
    """Customers, an outage detected / updated twice / resolved, a STOP and questions."""
    C_, O_, I_ = Source.CUSTOMERS, Source.OUTAGES, Source.INBOUND
    return [
        rec(C_, "CA", customer("CA", A, ["R1"]), T0, in_scope=in_scope),
        rec(C_, "CB", customer("CB", B, ["R1"], consent=False), T0, in_scope=in_scope),
        rec(C_, "CC", customer("CC", C, ["R2"]), T0, in_scope=in_scope),
        rec(O_, "O1", outage(1, 1), T0 + timedelta(minutes=1), in_scope=in_scope),
        rec(I_, A, text("m1", A, "when will it be fixed?", 2), T0 + timedelta(minutes=2)),
        # ETA +10 min: not worth a text under the default 30-minute rule.
        rec(O_, "O1", outage(2, 3, eta=eta(190)), T0 + timedelta(minutes=3)),
        rec(I_, C, text("m2", C, "STOP", 4), T0 + timedelta(minutes=4)),
        rec(I_, A, text("m3", A, "HELP", 5), T0 + timedelta(minutes=5)),
        # ETA +45 min: an update.
        rec(O_, "O1", outage(3, 6, eta=eta(235), regions=["R1", "R2"]), T0 + timedelta(minutes=6)),
        rec(O_, "O1", outage(4, 7, status="resolved"), T0 + timedelta(minutes=7)),
        rec(I_, A, text("m4", A, "status", 8), T0 + timedelta(minutes=8)),
    ]


def derived_of(engine: ReplayEngine) -> list[dict[str, Any]]:
    return [orjson.loads(v) for v in engine.derived.values()]


def recorded_from(engine: ReplayEngine) -> list[tuple[dict[str, Any], bytes]]:
    return [(orjson.loads(raw), raw) for raw in engine.derived.values()]


def everything(_src: str | None, _rec: Any) -> bool:
    return True


def recipients(audits: list[dict[str, Any]], decision: str, reason: str | None) -> set[str]:
    return {
        e[0]
        for a in audits
        if a["decision"] == decision and a["reason"] == reason
        for e in a["facts"].get("recipients", [])
    }


def test_the_agents_decisions_are_re_derived() -> None:
    engine = ReplayEngine(config()).feed_all(run_records())
    audits = derived_of(engine)
    v = {n: [a for a in audits if a.get("outage_version") == n] for n in range(1, 5)}
    assert recipients(v[1], "targeted", None) == {A}
    assert recipients(v[1], "suppressed", "no_consent") == {B}
    assert recipients(v[2], "skipped", "no_significant_change") == {A}
    # v3 reaches R2, where C opted out before; A's ETA moved by 45 minutes.
    assert recipients(v[3], "suppressed", "opted_out") == {C}
    assert recipients(v[3], "targeted", None) == {A}
    assert recipients(v[4], "targeted", None) == {A}  # restored, only to the alerted
    # Four partitions, one summary each, per version.
    assert sum(1 for a in audits if a["decision"] == "fanout_summary") == 16
    by_id = {a["audit_id"]: a for a in audits}
    assert by_id["inbound:m2:opt_out"]["reason"] is None
    assert by_id["inbound:m1:status_answer"]["facts"]["outages"] == [["O1", 1]]
    assert by_id["inbound:m4:status_answer"]["facts"]["outages"] == [["O1", 4]]
    assert engine.stats["input_records"] == 11
    assert engine.stats["derived_decisions"] > engine.stats["input_records"]


def test_replaying_twice_gives_identical_records() -> None:
    first = ReplayEngine(config()).feed_all(run_records())
    second = ReplayEngine(config()).feed_all(run_records())
    assert first.derived == second.derived
    assert first.stats == second.stats


def test_a_replay_of_the_same_rules_reproduces_the_record() -> None:
    live = ReplayEngine(config()).feed_all(run_records())
    replay = ReplayEngine(config()).feed_all(run_records())
    result = compare(replay.derived, recorded_from(live), replay.sources, everything)
    assert result.mismatches == []
    assert result.matched == len(live.derived)


def test_a_changed_eta_rule_is_reported_per_record_and_per_recipient() -> None:
    live = ReplayEngine(config()).feed_all(run_records())
    replay = ReplayEngine(config(eta_change_minutes=5)).feed_all(run_records())
    result = compare(replay.derived, recorded_from(live), replay.sources, everything)
    statuses = {m.status for m in result.mismatches}
    assert statuses >= {"missing", "unexpected", "divergent"}
    # v2 moved the ETA by 10 minutes: under a 5-minute rule, A gets an update.
    assert ("O1:2", A, "skipped:no_significant_change", "targeted:- (update)") in (
        result.recipient_changes
    )
    summary = next(m for m in result.mismatches if m.audit_id.endswith(":summary"))
    assert summary.status == "divergent"
    assert any(f.startswith("facts.counts") for f, _, _ in summary.differences)


def test_quiet_hours_given_to_the_replay_defer_updates() -> None:
    live = ReplayEngine(config()).feed_all(run_records())
    replay = ReplayEngine(config(quiet_hours="11:00-13:00")).feed_all(run_records())
    result = compare(replay.derived, recorded_from(live), replay.sources, everything)
    assert ("O1:3", A, "targeted:- (update)", "targeted:quiet_hours_deferral (update)") in (
        result.recipient_changes
    )


def test_warm_up_builds_state_but_is_not_compared() -> None:
    records = run_records()
    scoped = [
        InputRecord(r.source, r.partition, r.offset, r.timestamp_ms, r.key, r.value, i >= 8)
        for i, r in enumerate(records)
    ]
    full = ReplayEngine(config()).feed_all(records)
    part = ReplayEngine(config()).feed_all(scoped)
    assert part.stats["warmup_records"] == 8
    # What the in-scope records derive is exactly what they derived in the full run.
    assert part.derived.items() <= full.derived.items()
    assert {orjson.loads(v)["outage_version"] for v in part.derived.values()} >= {3, 4}
    assert not any(k.startswith("O1:1:") for k in part.derived)
    # Recorded audits of warm-up inputs are out of scope, not "unexpected".
    result = compare(part.derived, recorded_from(full), part.sources, lambda s, r: False)
    assert result.mismatches == []
    assert result.recorded_out_of_scope == len(full.derived) - len(part.derived)


def test_compare_names_each_kind_of_difference() -> None:
    def raw(aid: str, **facts: Any) -> bytes:
        return AuditRecord(
            audit_id=aid, decision="opt_out", message_id=aid.split(":")[1], facts=facts, at=T0
        ).to_bytes()

    derived = {"inbound:a:x": raw("inbound:a:x", n=1), "inbound:b:x": raw("inbound:b:x", n=1)}
    sources = {"inbound:a": True, "inbound:b": True, "inbound:c": True, "inbound:w": False}
    recorded = [
        raw("inbound:a:x", n=2),  # divergent
        raw("inbound:c:x", n=1),  # unexpected: re-derived nothing like it
        raw("inbound:w:x", n=1),  # warm-up input: out of scope
        raw("inbound:z:x", n=1),  # input never read: claimed by the scope -> unexpected
        raw("inbound:c:x", n=9),  # the same id again, different content
    ]
    result = compare(derived, [(orjson.loads(r), r) for r in recorded], sources, everything)
    got = {(m.status, m.audit_id) for m in result.mismatches}
    assert got == {
        ("divergent", "inbound:a:x"),
        ("missing", "inbound:b:x"),
        ("unexpected", "inbound:c:x"),
        ("unexpected", "inbound:z:x"),
    }
    divergent = next(m for m in result.mismatches if m.status == "divergent")
    assert divergent.differences == (("facts.n", 2, 1),)
    assert result.recorded_out_of_scope == 1
    assert result.recorded_conflicts == ["inbound:c:x"]


def test_diff_fields_walks_nested_lists() -> None:
    a = {"facts": {"recipients": [["+1", "c1"], ["+2", "c2"]]}, "schema_version": 1}
    b = {"facts": {"recipients": [["+1", "c1"], ["+2", "c3"]]}}
    assert diff_fields(a, b) == [("facts.recipients[1][1]", "c2", "c3")]


@pytest.mark.parametrize(
    ("audit", "cls"),
    [
        ({"audit_id": "inbound:m1:reply", "message_id": "m1"}, RecordClass.DERIVED),
        (
            {"audit_id": "O1:2:p0:targeted:-:+1", "outage_id": "O1", "outage_version": 2},
            RecordClass.DERIVED,
        ),
        (
            {"audit_id": "cmd-1:dispatch:opted_out", "outage_id": "O1", "outage_version": 2},
            RecordClass.SEND_TIME,
        ),
        ({"audit_id": "receipt:genesys:x:unlinked"}, RecordClass.OTHER),
    ],
)
def test_classify_recorded(audit: dict[str, Any], cls: RecordClass) -> None:
    assert classify_recorded(audit)[0] is cls


def _alert_command(engine: ReplayEngine) -> str:
    audits = derived_of(engine)
    (cid,) = (
        e[1]
        for a in audits
        if a.get("outage_version") == 1 and a["decision"] == "targeted"
        for e in a["facts"]["recipients"]
    )
    return str(cid)


def send_time_audit(cid: str, reason: str, at: datetime, detail: str | None) -> dict[str, Any]:
    return {
        "audit_id": f"{cid}:dispatch:{reason}",
        "decision": "suppressed_at_send",
        "reason": reason,
        "phone": A,
        "outage_id": "O1",
        "outage_version": 1,
        "command_id": cid,
        "facts": {"sender": SHORT, "kind": "alert", "detail": detail},
        "at": at.isoformat().replace("+00:00", "Z"),
    }


def test_send_time_audits_are_checked_at_their_recorded_time() -> None:
    cid = _alert_command(ReplayEngine(config()).feed_all(run_records()))
    checks = [
        # v3 (ETA +45 min, worth an update) arrived at minute 6: superseded at minute 6.5.
        # v2 (minute 3, ETA +10 min) sent nobody anything, so the alert still went at
        # minute 4: a recorded "superseded by version 2" there is divergent.
        send_time_audit(cid, "stale", T0 + timedelta(minutes=6.5), "superseded by version 3"),
        send_time_audit(cid, "stale", T0 + timedelta(minutes=4), "superseded by version 2"),
        send_time_audit(cid, "duplicate", T0 + timedelta(minutes=4), None),
        send_time_audit("cmd-unknown", "opted_out", T0 + timedelta(minutes=4), "this sender"),
    ]
    checks[1]["audit_id"] += ":early"
    engine = ReplayEngine(config())
    engine.expect_send_time(checks)
    engine.feed_all(run_records())
    verdicts = {c.audit_id: c.verdict for c in engine.send_time}
    assert verdicts == {
        f"{cid}:dispatch:stale": "confirmed",
        f"{cid}:dispatch:stale:early": "divergent",
        f"{cid}:dispatch:duplicate": "irreproducible",
        "cmd-unknown:dispatch:opted_out": "unknown_command",
    }
    early = next(c for c in engine.send_time if c.verdict == "divergent")
    assert early.replayed == "not audited (send)"


def _command_of(engine: ReplayEngine, version: int) -> str:
    (cid,) = (
        e[1]
        for a in derived_of(engine)
        if a.get("outage_version") == version and a["decision"] == "targeted"
        for e in a["facts"]["recipients"]
    )
    return str(cid)


@pytest.mark.parametrize("alert_suppressed", [True, False])
def test_not_alerted_is_confirmed_only_after_a_replayed_suppression_of_the_alert(
    alert_suppressed: bool,
) -> None:
    """The dispatcher suppresses "restored" when the number's alert ended unsent; the
    replay confirms it only if it re-derived that suppression (expiry or a provider
    failure it cannot see: irreproducible, never divergent)."""
    derived = ReplayEngine(config()).feed_all(run_records())
    alert, restored = _alert_command(derived), _command_of(derived, 4)
    checks = [send_time_audit(restored, "not_alerted", T0 + timedelta(minutes=8), "alert not sent")]
    checks[0].update(outage_version=4, facts={"sender": SHORT, "kind": "restored"})
    checks[0]["facts"]["detail"] = "alert not sent"
    if alert_suppressed:
        checks.insert(0, send_time_audit(alert, "stale", T0 + timedelta(minutes=7.5), "resolved"))
    engine = ReplayEngine(config())
    engine.expect_send_time(checks)
    engine.feed_all(run_records())
    verdicts = {c.audit_id: c.verdict for c in engine.send_time}
    expected = "confirmed" if alert_suppressed else "irreproducible"
    assert verdicts[f"{restored}:dispatch:not_alerted"] == expected
    if alert_suppressed:
        assert verdicts[f"{alert}:dispatch:stale"] == "confirmed"


def test_rejected_and_stale_inputs_are_counted_not_derived() -> None:
    bad = InputRecord(Source.INBOUND, 0, 1, 0, A.encode(), b"{not json", True)
    old = rec(Source.OUTAGES, "O1", outage(1, 1), T0)
    engine = ReplayEngine(config()).feed_all([*run_records()[:4], bad, old])
    assert engine.stats["rejected:inbound:malformed_json"] == 1
    assert engine.stats["outages_ignored_older_version"] == 1


@pytest.mark.parametrize("argv", [["audit"], ["audit", "replay"]])
def test_the_audit_commands_answer_help(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from outage_sms.cli import main

    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: outage-sms audit" in capsys.readouterr().out


def test_time_ranges_need_a_zone_and_offsets_a_shape() -> None:
    from outage_sms.cli import main

    assert main(["audit", "replay", "--from", "2026-11-24T20:00:00"]) == 2
    assert main(["audit", "replay", "--offsets", "outage.events:x"]) == 2
