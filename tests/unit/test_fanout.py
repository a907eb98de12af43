"""Fan-out planning: lifecycle, compliance, quiet hours, determinism, chunking, audit."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.fanout as fanout_module
from schemas import AuditRecord, MessageKind, OutageEvent, SendCommand
from streams.fanout import (
    Customer,
    FanoutChunk,
    FanoutPlanner,
    FanoutRules,
    FanoutSummary,
    OptOut,
    OutageMemory,
    PartitionIndex,
    Subscriber,
    Told,
    command_id,
    in_order,
    outage_phase,
    subscriber_from_state,
)
from streams.senders import SenderPool, parse_pool
from streams.templates import Templates

SHORT_CODE = "87654"
US_POOL = (
    f'[{{"id": "{SHORT_CODE}", "type": "short_code", "rate": 100, "countries": ["US", "CA"]}}]'
)
OID = "OUT-1"
URL = "https://status.citypower.example/o/1"
SUMMARY = "Transformer failure on Main St."
STOP = "Reply STOP to opt out."

#: 11:00 in Los Angeles, 14:00 in New York, 18:00 UTC: outside quiet hours everywhere used.
T0 = datetime(2024, 7, 1, 18, 0, tzinfo=UTC)
ETA = T0 + timedelta(hours=3)  # 2:00 PM in Los Angeles
#: 23:00 on 1 July in Los Angeles (PDT, UTC-7): inside the default quiet hours.
NIGHT = datetime(2024, 7, 2, 6, 0, tzinfo=UTC)
LA_MORNING = "2024-07-02T15:00:00Z"  # 08:00 PDT on 2 July

A, B, C = "+14155550101", "+14155550102", "+14155550103"


def phone(n: int) -> str:
    return f"+1415555{n:04d}"


def outage(
    version: int = 1,
    *,
    status: str = "detected",
    severity: str = "service",
    regions: Iterable[str] = ("R1",),
    eta: datetime | None = ETA,
    at: datetime = T0,
    summary: str = SUMMARY,
    status_url: str | None = URL,
    outage_id: str = OID,
) -> OutageEvent:
    return OutageEvent(
        outage_id=outage_id,
        version=version,
        status=status,
        severity=severity,
        regions=list(regions),
        summary=summary,
        eta=eta,
        status_url=status_url,
        occurred_at=at,
    )


def customer(
    cid: str = "C1",
    regions: Iterable[str] = ("R1",),
    *,
    consent: bool = True,
    language: str = "en",
    timezone: str | None = None,
) -> Customer:
    return Customer(cid, frozenset(regions), consent, language, timezone)


def subscriber(
    number: str,
    *customers: Customer,
    line: str = "fixed_line_or_mobile",
    textable: bool = True,
    country: str | None = "US",
    number_timezone: str | None = "America/Los_Angeles",
) -> Subscriber:
    return Subscriber(number, customers or (customer(),), line, textable, country, number_timezone)


def index_of(*subs: Subscriber) -> PartitionIndex:
    index = PartitionIndex()
    for sub in subs:
        index.upsert(sub)
    return index


def planner(rules: FanoutRules | None = None, pool: SenderPool | None = None) -> FanoutPlanner:
    return FanoutPlanner(
        pool or parse_pool(US_POOL), Templates("City Power"), rules or FanoutRules()
    )


@dataclass(frozen=True)
class Decision:
    phone: str
    decision: str
    reason: str | None
    command_id: str | None
    facts: dict[str, Any] | None
    group_facts: dict[str, Any]


@dataclass
class Run:
    chunks: list[FanoutChunk]
    summary: FanoutSummary
    audits: list[dict[str, Any]] = field(init=False)
    decisions: list[Decision] = field(init=False)

    def __post_init__(self) -> None:
        self.audits = [orjson.loads(v) for c in self.chunks for _, v in c.audits]
        self.decisions = []
        for audit in self.audits:
            group = {k: v for k, v in audit["facts"].items() if k != "recipients"}
            for entry in audit["facts"]["recipients"]:
                facts = entry[2] if len(entry) > 2 else None
                self.decisions.append(
                    Decision(entry[0], audit["decision"], audit["reason"], entry[1], facts, group)
                )

    @property
    def commands(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for c in self.chunks:
            for key, raw in c.commands:
                p = key.decode()
                assert p not in out, f"two commands for {p}"
                out[p] = orjson.loads(raw)
                assert out[p]["to"] == p  # the record key is the number
        return out

    @property
    def told(self) -> list[tuple[str, str]]:
        return [t for c in self.chunks for t in c.told]

    def decision(self, number: str) -> Decision:
        found = [d for d in self.decisions if d.phone == number]
        assert len(found) == 1, f"{number}: {found}"
        return found[0]

    def outcome(self, number: str) -> tuple[str, str | None]:
        d = self.decision(number)
        return d.decision, d.reason

    def kinds(self) -> dict[str, str]:
        return {p: cmd["kind"] for p, cmd in self.commands.items()}


def run(
    fanout: FanoutPlanner,
    event: OutageEvent,
    index: PartitionIndex,
    memory: OutageMemory,
    optouts: Mapping[str, OptOut] | None = None,
    *,
    remember: bool = True,
    partition: int = 0,
) -> Run:
    """Plan, then (like the worker once the broker acknowledged) remember what was told."""
    summary = FanoutSummary()
    chunks = list(fanout.plan(event, partition, index, memory, optouts or {}, summary))
    result = Run(chunks, summary)
    if remember:
        FanoutPlanner.remember(memory, event, result.told)
    return result


# --- pure helpers ------------------------------------------------------------------------


def test_command_id_is_stable_and_shaped() -> None:
    cid = command_id(OID, 3, A)
    assert cid == command_id(OID, 3, A)
    assert cid.startswith("cmd-")
    assert len(cid) == 4 + 32
    int(cid[4:], 16)


@pytest.mark.parametrize(
    "other",
    [("OUT-2", 3, A), (OID, 4, A), (OID, 3, B)],
    ids=["outage", "version", "phone"],
)
def test_command_id_changes_with_each_input(other: tuple[str, int, str]) -> None:
    assert command_id(OID, 3, A) != command_id(*other)


def test_command_id_fields_cannot_run_together() -> None:
    assert command_id("OUT-1", 12, A) != command_id("OUT-11", 2, A)
    assert command_id("OUT", 1, "1" + A) != command_id("OUT", 11, A)


@pytest.mark.parametrize(
    ("status", "severity", "phase"),
    [
        ("detected", "service", "ongoing:service"),
        ("updated", "service", "ongoing:service"),
        ("detected", "life_safety", "ongoing:life_safety"),
        ("updated", "life_safety", "ongoing:life_safety"),
        ("resolved", "service", "resolved"),
        ("resolved", "life_safety", "resolved"),
    ],
)
def test_outage_phase_groups_detected_and_updated(status: str, severity: str, phase: str) -> None:
    assert outage_phase(outage(status=status, severity=severity)) == phase


@pytest.mark.parametrize(
    ("local", "quiet"),
    [
        (time(20, 59, 59), False),
        (time(21, 0), True),
        (time(23, 59), True),
        (time(0, 0), True),
        (time(7, 59, 59), True),
        (time(8, 0), False),
        (time(12, 0), False),
    ],
)
def test_default_quiet_hours_cross_midnight(local: time, quiet: bool) -> None:
    assert FanoutRules().in_quiet_hours(local) is quiet


@pytest.mark.parametrize(
    ("local", "quiet"),
    [(time(12, 59), False), (time(13, 0), True), (time(14, 59), True), (time(15, 0), False)],
)
def test_quiet_hours_window_within_one_day(local: time, quiet: bool) -> None:
    rules = FanoutRules(quiet_start=time(13, 0), quiet_end=time(15, 0))
    assert rules.in_quiet_hours(local) is quiet


@pytest.mark.parametrize("local", [time(0, 0), time(8, 0), time(21, 0), time(23, 59)])
def test_equal_quiet_start_and_end_means_no_quiet_hours(local: time) -> None:
    rules = FanoutRules(quiet_start=time(8, 0), quiet_end=time(8, 0))
    assert not rules.in_quiet_hours(local)


@pytest.mark.parametrize(
    ("optout", "sender", "blocked"),
    [
        (OptOut(all_senders=True), SHORT_CODE, True),
        (OptOut(all_senders=True), None, True),
        (OptOut(senders=frozenset({SHORT_CODE})), SHORT_CODE, True),
        (OptOut(senders=frozenset({"99999"})), SHORT_CODE, False),
        (OptOut(senders=frozenset({SHORT_CODE})), None, False),
        (OptOut(), SHORT_CODE, False),
    ],
)
def test_optout_blocks_all_senders_or_only_the_named_ones(
    optout: OptOut, sender: str | None, blocked: bool
) -> None:
    assert optout.blocks(sender) is blocked


def test_subscriber_from_state_reads_facts_and_sorts_accounts() -> None:
    state = {
        "p": 3,
        "facts": {
            "line": "mobile",
            "textable": True,
            "country": "US",
            "timezone": "America/Chicago",
        },
        "customers": {
            "C2": {"regions": ["R2"], "sms_consent": False, "language": "es", "timezone": None},
            "C1": {
                "regions": ["R1", "R3"],
                "sms_consent": True,
                "timezone": "America/Denver",
            },
        },
    }
    sub = subscriber_from_state(A, state)
    assert sub == Subscriber(
        A,
        (
            Customer("C1", frozenset({"R1", "R3"}), True, "en", "America/Denver"),
            Customer("C2", frozenset({"R2"}), False, "es", None),
        ),
        "mobile",
        True,
        "US",
        "America/Chicago",
    )
    assert sub.regions == {"R1", "R2", "R3"}


def test_subscriber_from_state_without_facts_is_textable_unknown_line_without_country() -> None:
    sub = subscriber_from_state(A, {"customers": {"C1": {"regions": ["R1"]}}})
    assert (sub.line, sub.textable, sub.country, sub.number_timezone) == (
        "unknown",
        True,
        None,
        None,
    )
    assert sub.customers == (Customer("C1", frozenset({"R1"}), False, "en", None),)


def _decoded(phone: str, cid: str) -> Mapping[str, Any]:
    """A table value as the store hands it over: freshly decoded, nothing shared."""
    state = {
        "p": 0,
        "facts": {"line": "mobile", "textable": True, "country": "US", "timezone": None},
        "customers": {
            cid: {
                "regions": ["R1", "R2"],
                "sms_consent": True,
                "language": "es",
                "timezone": "America/Chicago",
            }
        },
    }
    decoded: Mapping[str, Any] = orjson.loads(orjson.dumps(state))
    return decoded


def test_subscribers_share_one_copy_of_each_repeated_value() -> None:
    first = subscriber_from_state(A, _decoded(A, "C1"))
    second = subscriber_from_state(B, _decoded(B, "C2"))
    one, two = first.customers[0], second.customers[0]
    assert one.regions is two.regions
    assert one.language is two.language
    assert one.timezone is two.timezone
    assert first.line is second.line
    assert first.country is second.country
    assert one.customer_id == "C1" and two.customer_id == "C2"


def test_only_strings_are_shared_so_equal_values_of_other_types_stay_apart() -> None:
    assert fanout_module._share(1) == 1
    assert fanout_module._share(True) is True
    assert fanout_module._share(None) is None
    assert None not in fanout_module._shared and 1 not in fanout_module._shared


def test_values_past_the_sharing_bound_are_kept_as_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fanout_module, "_shared", {})
    monkeypatch.setattr(fanout_module, "SHARED_VALUES_MAX", 0)
    first = subscriber_from_state(A, _decoded(A, "C1"))
    second = subscriber_from_state(B, _decoded(B, "C2"))
    assert first.customers[0].timezone is not second.customers[0].timezone
    assert first.customers[0] == replace(second.customers[0], customer_id="C1")
    assert fanout_module._shared == {}


def test_partition_index_maps_regions_to_phones() -> None:
    index = index_of(
        subscriber(A, customer("C1", ["R1"]), customer("C2", ["R2"])),
        subscriber(B, customer("C3", ["R2"])),
    )
    assert len(index) == 2
    assert set(in_order(index, ["R1"], set())) == {A}
    assert set(in_order(index, ["R2"], set())) == {A, B}
    assert set(in_order(index, ["R1", "R2", "R9"], set())) == {A, B}
    assert set(in_order(index, ["R9"], set())) == set()


def test_partition_index_upsert_replaces_old_regions_and_drops_empty_ones() -> None:
    index = index_of(subscriber(A, customer("C1", ["R1"])))
    index.upsert(subscriber(A, customer("C1", ["R2"])))
    assert set(in_order(index, ["R1"], set())) == set()
    assert "R1" not in index.by_region
    assert set(in_order(index, ["R2"], set())) == {A}
    assert len(index) == 1


def test_partition_index_remove_forgets_the_number_and_ignores_unknown_ones() -> None:
    index = index_of(subscriber(A), subscriber(B))
    index.remove(A)
    index.remove(C)
    assert len(index) == 1
    assert set(in_order(index, ["R1"], set())) == {B}
    index.remove(B)
    assert index.by_region == {}


_NUMBERS = [f"+1415555{i:04d}" for i in range(12)]
_REGIONS = ["R1", "R2", "R3"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["upsert", "remove", "order"]),
            st.sampled_from(_NUMBERS),
            st.sets(st.sampled_from(_REGIONS), min_size=1),
            st.sets(st.sampled_from(_REGIONS), min_size=1),
        ),
        max_size=40,
    ),
    st.sets(st.sampled_from(_NUMBERS)),
)
def test_ordered_regions_equal_sorting_whatever_the_changes(
    ops: list[tuple[str, str, set[str], set[str]]], extra: set[str]
) -> None:
    """The kept, repaired order of each region is what ``sorted`` would give, and the
    planner's candidates are the sorted union of the regions and the numbers alerted."""
    index = PartitionIndex()
    for op, number, regions, asked in ops:
        if op == "upsert":
            index.upsert(subscriber(number, customer(regions=regions)))
        elif op == "remove":
            index.remove(number)
        else:
            for region in _REGIONS:
                assert index.ordered(region) == sorted(index.by_region.get(region, ()))
            expected = sorted(extra.union(*(index.by_region.get(r, ()) for r in asked)))
            assert in_order(index, asked, extra) == expected
    index.prepare()
    for region in _REGIONS:
        assert index.ordered(region) == sorted(index.by_region.get(region, ()))


def test_outage_memory_keeps_the_highest_version_whatever_the_order() -> None:
    memory = OutageMemory()
    memory.apply(OID, 2, "ongoing:service", None, [(A, "update")])
    memory.apply(OID, 1, "ongoing:service", "2024-07-01T21:00:00Z", [(A, "alert"), (B, "alert")])
    assert memory.told[OID][A] == Told(2, "ongoing:service", None, MessageKind.UPDATE)
    assert memory.told[OID][B].kind is MessageKind.ALERT
    assert memory.introduced == {A, B}


def test_outage_memory_same_answer_in_every_chunk_order() -> None:
    """Newer versions take the bulk path, older ones the per-entry one: same result."""
    chunks = [
        (1, "ongoing:service", [(A, "alert"), (B, "alert"), (C, "alert")]),
        (2, "ongoing:service", [(A, "update"), (B, "restored")]),
        (2, "ongoing:service", [(C, "update")]),
        (3, "resolved", [[A, "restored"]]),  # as read back from JSON
        (1, "ongoing:service", []),
    ]
    expected = {
        A: Told(3, "resolved", None, MessageKind.RESTORED),
        B: Told(2, "ongoing:service", None, MessageKind.RESTORED),
        C: Told(2, "ongoing:service", None, MessageKind.UPDATE),
    }
    for order in itertools.permutations(chunks):
        memory = OutageMemory()
        for version, phase, entries in order:
            memory.apply(OID, version, phase, None, entries)
        assert memory.told[OID] == expected, order
        assert memory.introduced == {A, B, C}


def test_outage_memory_first_entry_for_a_number_wins_within_a_version() -> None:
    fresh = OutageMemory()  # nothing as new: the bulk path
    fresh.apply(OID, 1, "ongoing:service", None, [(A, "alert"), (B, "update"), (A, "update")])
    assert fresh.told[OID][A].kind is MessageKind.ALERT
    held = OutageMemory()  # B already at this version: the per-entry path
    held.apply(OID, 1, "ongoing:service", None, [(B, "alert")])
    held.apply(OID, 1, "ongoing:service", None, [(A, "alert"), (B, "update"), (A, "update")])
    assert held.told[OID][A].kind is MessageKind.ALERT
    assert held.told[OID][B].kind is MessageKind.ALERT


def test_remember_records_phase_eta_and_kind() -> None:
    memory = OutageMemory()
    FanoutPlanner.remember(memory, outage(2, status="updated"), [(A, "update")])
    FanoutPlanner.remember(memory, outage(3, status="resolved", eta=None), [(B, "restored")])
    assert memory.told[OID][A] == Told(2, "ongoing:service", "2024-07-01T21:00:00Z", "update")
    assert memory.told[OID][B] == Told(3, "resolved", None, MessageKind.RESTORED)


# --- lifecycle ---------------------------------------------------------------------------


def test_first_version_alerts_with_stop_footer_and_a_valid_command() -> None:
    result = run(planner(), outage(), index_of(subscriber(A)), OutageMemory())
    cmd = result.commands[A]
    assert cmd["kind"] == "alert"
    assert cmd["body"] == (
        "City Power: Outage in your area. Transformer failure on Main St. Est. restore 2:00 PM."
        f" Info: {URL} {STOP}"
    )
    assert cmd["from"] == SHORT_CODE
    assert (cmd["encoding"], cmd["segments"], cmd["language"]) == ("gsm7", 1, "en")
    assert cmd["not_before"] is None
    assert cmd["life_safety_bypass"] is False
    assert cmd["command_id"] == command_id(OID, 1, A)
    assert cmd["created_at"] == "2024-07-01T18:00:00Z"
    assert cmd["expires_at"] == "2024-07-02T06:00:00Z"
    # What the text states, for the dispatcher's staleness check at send time.
    assert (cmd["outage_severity"], cmd["outage_eta"]) == ("service", "2024-07-01T21:00:00Z")
    parsed = SendCommand.from_bytes(result.chunks[0].commands[0][1])
    assert parsed.to == A
    assert parsed.created_at == T0
    assert result.told == [(A, "alert")]
    assert result.outcome(A) == ("targeted", None)


def test_audit_records_are_valid_and_describe_the_group() -> None:
    index = index_of(subscriber(A), subscriber(B, customer(consent=False)))
    result = run(planner(), outage(), index, OutageMemory(), partition=5)
    records = [AuditRecord.from_bytes(v) for c in result.chunks for _, v in c.audits]
    assert all(r.outage_id == OID and r.outage_version == 1 and r.at == T0 for r in records)
    assert all(k == OID for c in result.chunks for k, _ in c.audits)
    sent = result.decision(A)
    assert sent.group_facts == {
        "partition": 5,
        "severity": "service",
        "status": "detected",
        "kind": "alert",
        "sender": SHORT_CODE,
    }
    assert sent.command_id == command_id(OID, 1, A)
    refused = result.decision(B)
    assert (refused.command_id, refused.facts) == (None, {"customers": ["C1"]})
    assert len({r.audit_id for r in records}) == len(records)


def test_subscribers_outside_the_outage_regions_are_not_considered() -> None:
    index = index_of(subscriber(A), subscriber(B, customer(regions=["R2"])))
    result = run(planner(), outage(regions=["R1"]), index, OutageMemory())
    assert {d.phone for d in result.decisions} == {A}
    assert set(result.commands) == {A}


def alerted(index: PartitionIndex, **kwargs: Any) -> OutageMemory:
    memory = OutageMemory()
    run(planner(), outage(1, **kwargs), index, memory)
    return memory


@pytest.mark.parametrize(
    ("new_eta", "kind"),
    [
        (ETA + timedelta(minutes=31), "update"),
        (ETA - timedelta(minutes=45), "update"),
        (None, "update"),
        (ETA + timedelta(minutes=30), None),
        (ETA - timedelta(minutes=10), None),
        (ETA, None),
    ],
    ids=["later-31m", "earlier-45m", "eta-withdrawn", "exactly-30m", "earlier-10m", "same"],
)
def test_update_only_when_the_eta_moves_more_than_the_threshold(
    new_eta: datetime | None, kind: str | None
) -> None:
    index = index_of(subscriber(A))
    memory = alerted(index)
    event = outage(2, status="updated", eta=new_eta, at=T0 + timedelta(minutes=5))
    result = run(planner(), event, index, memory)
    if kind is None:
        assert result.commands == {}
        assert result.outcome(A) == ("skipped", "no_significant_change")
        assert memory.told[OID][A].version == 1
    else:
        cmd = result.commands[A]
        assert cmd["kind"] == kind
        assert cmd["body"].startswith(f"City Power update: {SUMMARY}")
        assert STOP not in cmd["body"]
        assert result.outcome(A) == ("targeted", None)


def test_eta_given_after_an_alert_without_one_is_an_update() -> None:
    index = index_of(subscriber(A))
    memory = alerted(index, eta=None)
    result = run(planner(), outage(2, status="updated"), index, memory)
    assert result.kinds() == {A: "update"}
    assert "Est. restore 2:00 PM." in result.commands[A]["body"]


def test_small_eta_moves_add_up_against_what_the_customer_was_told() -> None:
    index = index_of(subscriber(A))
    memory = alerted(index)
    fanout = planner()
    step = run(fanout, outage(2, eta=ETA + timedelta(minutes=20)), index, memory)
    assert step.outcome(A) == ("skipped", "no_significant_change")
    step = run(fanout, outage(3, eta=ETA + timedelta(minutes=40)), index, memory)
    assert step.kinds() == {A: "update"}
    assert memory.told[OID][A].eta == "2024-07-01T21:40:00Z"


def test_custom_eta_threshold_is_used() -> None:
    index = index_of(subscriber(A))
    memory = alerted(index)
    fanout = planner(FanoutRules(eta_change=timedelta(minutes=5)))
    result = run(fanout, outage(2, eta=ETA + timedelta(minutes=10)), index, memory)
    assert result.kinds() == {A: "update"}


@pytest.mark.parametrize("version", [1, 2], ids=["replay-same-version", "older-version"])
def test_version_already_told_is_skipped_as_duplicate(version: int) -> None:
    index = index_of(subscriber(A))
    memory = OutageMemory()
    fanout = planner()
    run(fanout, outage(1), index, memory)
    run(fanout, outage(2, eta=ETA + timedelta(hours=2)), index, memory)
    result = run(fanout, outage(version, eta=ETA + timedelta(hours=5)), index, memory)
    assert result.commands == {}
    assert result.outcome(A) == ("skipped", "duplicate")
    assert memory.told[OID][A].version == 2


def test_escalation_to_life_safety_is_an_update_even_with_the_same_eta() -> None:
    index = index_of(subscriber(A))
    memory = alerted(index)
    result = run(planner(), outage(2, status="updated", severity="life_safety"), index, memory)
    assert result.kinds() == {A: "update"}
    assert result.commands[A]["command_id"] == command_id(OID, 2, A)


def test_status_detected_to_updated_alone_is_no_news() -> None:
    index = index_of(subscriber(A))
    memory = alerted(index)
    result = run(planner(), outage(2, status="updated"), index, memory)
    assert result.outcome(A) == ("skipped", "no_significant_change")


def test_resolved_restores_only_numbers_that_were_alerted() -> None:
    index = index_of(
        subscriber(A),
        subscriber(B, customer(consent=False)),
        subscriber(C, customer(regions=["R2"])),
    )
    memory = alerted(index)
    assert set(memory.told[OID]) == {A}
    result = run(planner(), outage(2, status="resolved", eta=None), index, memory)
    assert result.kinds() == {A: "restored"}
    assert result.commands[A]["body"] == (
        f"City Power: Service has been restored in your area. Info: {URL}"
    )
    assert {d.phone for d in result.decisions} == {A}
    assert memory.told[OID][A].kind is MessageKind.RESTORED


def test_resolved_again_after_restored_says_nothing() -> None:
    index = index_of(subscriber(A))
    memory = alerted(index)
    fanout = planner()
    run(fanout, outage(2, status="resolved"), index, memory)
    result = run(fanout, outage(3, status="resolved"), index, memory)
    assert result.chunks == []
    assert result.decisions == []


def test_number_whose_region_leaves_the_outage_is_restored() -> None:
    index = index_of(subscriber(A, customer(regions=["R1"])), subscriber(B, customer("C2", ["R2"])))
    memory = alerted(index, regions=["R1", "R2"])
    assert set(memory.told[OID]) == {A, B}
    result = run(planner(), outage(2, status="updated", regions=["R2"]), index, memory)
    assert result.kinds() == {A: "restored"}
    assert result.outcome(B) == ("skipped", "no_significant_change")
    # Once restored, the shrunken outage no longer concerns A.
    later = run(planner(), outage(3, regions=["R2"], eta=ETA + timedelta(hours=2)), index, memory)
    assert later.kinds() == {B: "update"}


def test_redetection_after_restored_alerts_again_without_stop_footer() -> None:
    index = index_of(subscriber(A))
    memory = alerted(index)
    fanout = planner()
    run(fanout, outage(2, status="resolved"), index, memory)
    result = run(fanout, outage(3, status="detected"), index, memory)
    assert result.kinds() == {A: "alert"}
    assert STOP not in result.commands[A]["body"]


def test_stop_footer_only_on_the_first_message_ever_sent_to_a_number() -> None:
    index = index_of(subscriber(A), subscriber(B))
    memory = OutageMemory()
    memory.introduced.add(B)  # B was texted before, about something else
    fanout = planner()
    first = run(fanout, outage(1), index, memory)
    assert first.commands[A]["body"].endswith(STOP)
    assert STOP not in first.commands[B]["body"]
    second = run(fanout, outage(1, outage_id="OUT-2"), index, memory)
    assert second.kinds() == {A: "alert", B: "alert"}
    assert all(STOP not in cmd["body"] for cmd in second.commands.values())


# --- compliance --------------------------------------------------------------------------


def test_no_consent_is_suppressed_for_a_service_outage() -> None:
    index = index_of(subscriber(A, customer(consent=False)))
    result = run(planner(), outage(), index, OutageMemory())
    assert result.commands == {}
    assert result.told == []
    assert result.outcome(A) == ("suppressed", "no_consent")
    assert result.summary.counts == {"suppressed:no_consent": 1}


def test_life_safety_bypasses_missing_consent_and_says_so() -> None:
    index = index_of(subscriber(A, customer(consent=False)))
    result = run(planner(), outage(severity="life_safety"), index, OutageMemory())
    cmd = result.commands[A]
    assert cmd["life_safety_bypass"] is True
    d = result.decision(A)
    assert (d.decision, d.reason) == ("targeted", "life_safety_bypass")
    assert d.command_id == cmd["command_id"]
    assert d.facts == {"kind": "alert", "sender": SHORT_CODE, "bypassed": ["no_consent"]}


@pytest.mark.parametrize(
    ("optout", "scope"),
    [(OptOut(all_senders=True), "all"), (OptOut(senders=frozenset({SHORT_CODE})), "sender")],
)
def test_opted_out_number_is_suppressed(optout: OptOut, scope: str) -> None:
    index = index_of(subscriber(A))
    result = run(planner(), outage(), index, OutageMemory(), {A: optout})
    assert result.commands == {}
    d = result.decision(A)
    assert (d.decision, d.reason) == ("suppressed", "opted_out")
    assert d.facts == {"scope": scope, "sender": SHORT_CODE}


def test_optout_from_a_different_sender_does_not_block() -> None:
    pool = parse_pool(
        '[{"id": "11111", "type": "short_code", "countries": ["US"]},'
        ' {"id": "22222", "type": "short_code", "countries": ["US"]}]'
    )
    numbers = [phone(n) for n in range(20)]
    chosen = {n: pool.choose(n, "US") for n in numbers}
    assert {s.id for s in chosen.values() if s} == {"11111", "22222"}
    optouts = {
        n: OptOut(senders=frozenset({"22222" if s and s.id == "11111" else "11111"}))
        for n, s in chosen.items()
    }
    index = index_of(*(subscriber(n) for n in numbers))
    result = run(planner(pool=pool), outage(), index, OutageMemory(), optouts)
    assert set(result.commands) == set(numbers)
    assert all(result.commands[n]["from"] == chosen[n].id for n in numbers)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("consent", "bypassed"),
    [(True, ["opted_out"]), (False, ["no_consent", "opted_out"])],
)
def test_life_safety_bypasses_optout_explicitly(consent: bool, bypassed: list[str]) -> None:
    index = index_of(subscriber(A, customer(consent=consent)))
    optouts = {A: OptOut(all_senders=True)}
    result = run(planner(), outage(severity="life_safety"), index, OutageMemory(), optouts)
    assert result.commands[A]["life_safety_bypass"] is True
    d = result.decision(A)
    assert (d.decision, d.reason) == ("targeted", "life_safety_bypass")
    assert d.facts is not None and d.facts["bypassed"] == bypassed


def test_life_safety_with_consent_and_no_optout_is_a_plain_send() -> None:
    index = index_of(subscriber(A))
    result = run(planner(), outage(severity="life_safety"), index, OutageMemory())
    assert result.commands[A]["life_safety_bypass"] is False
    assert result.outcome(A) == ("targeted", None)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("fixed_line", "landline"),
        ("voip", "invalid_number"),
        ("toll_free", "invalid_number"),
        ("invalid", "invalid_number"),
    ],
)
@pytest.mark.parametrize("severity", ["service", "life_safety"])
def test_non_textable_numbers_are_suppressed_even_for_life_safety(
    line: str, reason: str, severity: str
) -> None:
    index = index_of(subscriber(A, line=line, textable=False))
    result = run(planner(), outage(severity=severity), index, OutageMemory())
    assert result.commands == {}
    d = result.decision(A)
    assert (d.decision, d.reason, d.facts) == ("suppressed", reason, {"line": line})


@pytest.mark.parametrize("country", ["GB", None, "us"])
def test_number_without_a_usable_sender_for_its_country_is_suppressed(country: str | None) -> None:
    pool = parse_pool(
        '[{"id": "87654", "type": "short_code", "countries": ["US"]},'
        ' {"id": "+447700900123", "type": "long_code", "countries": ["GB"], "status": "pending"}]'
    )
    index = index_of(subscriber(A, country=country))
    result = run(planner(pool=pool), outage(severity="life_safety"), index, OutageMemory())
    assert result.commands == {}
    d = result.decision(A)
    assert (d.decision, d.reason, d.facts) == ("suppressed", "no_sender", {"country": country})


def test_tombstoned_subscriber_gets_no_restored_text() -> None:
    index = index_of(subscriber(A), subscriber(B))
    memory = alerted(index)
    index.remove(A)
    result = run(planner(), outage(2, status="resolved"), index, memory)
    assert result.kinds() == {B: "restored"}
    d = result.decision(A)
    assert (d.decision, d.reason, d.facts) == ("suppressed", "no_consent", {"customers": []})


def test_consent_withdrawn_after_the_alert_suppresses_the_restored_text() -> None:
    index = index_of(subscriber(A))
    memory = alerted(index)
    index.upsert(subscriber(A, customer(consent=False)))
    result = run(planner(), outage(2, status="resolved"), index, memory)
    assert result.commands == {}
    assert result.outcome(A) == ("suppressed", "no_consent")


def test_shared_number_uses_the_consenting_account_in_the_outage_region() -> None:
    sub = subscriber(
        A,
        customer("C1", ["R2"], language="en"),
        customer("C2", ["R1"], language="es", timezone="America/New_York"),
    )
    result = run(planner(), outage(regions=["R1"]), index_of(sub), OutageMemory())
    cmd = result.commands[A]
    assert cmd["language"] == "es"
    assert cmd["body"].startswith("City Power: Corte de servicio en su zona.")
    assert "17:00" in cmd["body"]  # ETA in New York time, 24-hour clock


def test_shared_number_is_suppressed_when_the_affected_account_did_not_consent() -> None:
    sub = subscriber(A, customer("C1", ["R2"]), customer("C2", ["R1"], consent=False))
    result = run(planner(), outage(regions=["R1"]), index_of(sub), OutageMemory())
    d = result.decision(A)
    assert (d.decision, d.reason, d.facts) == ("suppressed", "no_consent", {"customers": ["C2"]})


# --- quiet hours -------------------------------------------------------------------------


def night_update(rules: FanoutRules | None = None, **sub_kwargs: Any) -> Run:
    index = index_of(subscriber(A, **sub_kwargs))
    memory = alerted(index)
    event = outage(2, status="updated", eta=ETA + timedelta(hours=6), at=NIGHT)
    return run(planner(rules), event, index, memory)


def test_update_in_quiet_hours_is_deferred_to_the_local_morning() -> None:
    result = night_update()
    cmd = result.commands[A]
    assert cmd["kind"] == "update"
    assert cmd["not_before"] == LA_MORNING
    assert cmd["expires_at"] == "2024-07-03T03:00:00Z"  # not_before + 12 h
    assert cmd["created_at"] == "2024-07-02T06:00:00Z"
    d = result.decision(A)
    assert (d.decision, d.reason) == ("targeted", "quiet_hours_deferral")
    assert d.command_id == cmd["command_id"]
    assert d.facts == {
        "kind": "update",
        "sender": SHORT_CODE,
        "not_before": LA_MORNING,
        "timezone": "America/Los_Angeles",
    }
    assert result.told == [(A, "update")]


def test_restored_in_quiet_hours_is_deferred() -> None:
    index = index_of(subscriber(A))
    memory = alerted(index)
    result = run(planner(), outage(2, status="resolved", at=NIGHT), index, memory)
    assert result.commands[A]["kind"] == "restored"
    assert result.commands[A]["not_before"] == LA_MORNING
    assert result.outcome(A) == ("targeted", "quiet_hours_deferral")


def test_service_alert_in_quiet_hours_goes_now_by_default() -> None:
    index = index_of(subscriber(A))
    result = run(planner(), outage(at=NIGHT), index, OutageMemory())
    assert result.commands[A]["not_before"] is None
    assert result.commands[A]["expires_at"] == "2024-07-02T18:00:00Z"
    assert result.outcome(A) == ("targeted", None)


def test_service_alert_in_quiet_hours_is_deferred_when_configured() -> None:
    index = index_of(subscriber(A))
    fanout = planner(FanoutRules(defer_service_alerts=True))
    result = run(fanout, outage(at=NIGHT), index, OutageMemory())
    assert result.commands[A]["not_before"] == LA_MORNING
    assert result.outcome(A) == ("targeted", "quiet_hours_deferral")


@pytest.mark.parametrize("status", ["detected", "updated", "resolved"])
def test_life_safety_is_never_deferred(status: str) -> None:
    index = index_of(subscriber(A))
    memory = alerted(index)
    fanout = planner(FanoutRules(defer_service_alerts=True))
    event = outage(2, status=status, severity="life_safety", at=NIGHT)
    result = run(fanout, event, index, memory)
    assert len(result.commands) == 1
    assert result.commands[A]["not_before"] is None


#: 23:30 PDT on 30 June, 02:30 EDT on 1 July, 06:30 UTC, 15:30 in Tokyo (not quiet).
LATE = datetime(2024, 7, 1, 6, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("customer_zone", "number_zone", "default_zone", "not_before"),
    [
        ("America/New_York", "America/Los_Angeles", "UTC", "2024-07-01T12:00:00Z"),
        (None, "America/Los_Angeles", "UTC", "2024-07-01T15:00:00Z"),
        (None, None, "UTC", "2024-07-01T08:00:00Z"),
        (None, None, "Asia/Tokyo", None),
        ("Asia/Tokyo", "America/Los_Angeles", "UTC", None),
    ],
)
def test_quiet_hours_zone_is_customer_then_number_then_default(
    customer_zone: str | None,
    number_zone: str | None,
    default_zone: str,
    not_before: str | None,
) -> None:
    index = index_of(subscriber(A, customer(timezone=customer_zone), number_timezone=number_zone))
    memory = alerted(index)
    fanout = planner(FanoutRules(default_timezone=default_zone))
    event = outage(2, eta=ETA + timedelta(hours=6), at=LATE)
    result = run(fanout, event, index, memory)
    assert result.commands[A]["not_before"] == not_before


@pytest.mark.parametrize(
    ("at", "not_before"),
    [
        # 22:00 EST on 9 March; the clocks spring forward overnight: 08:00 EDT is 12:00 UTC.
        (datetime(2024, 3, 10, 3, 0, tzinfo=UTC), "2024-03-10T12:00:00Z"),
        # 22:00 EDT on 2 November; the clocks fall back overnight: 08:00 EST is 13:00 UTC.
        (datetime(2024, 11, 3, 2, 0, tzinfo=UTC), "2024-11-03T13:00:00Z"),
        # 07:30 EST on 15 January: half an hour to go.
        (datetime(2024, 1, 15, 12, 30, tzinfo=UTC), "2024-01-15T13:00:00Z"),
    ],
)
def test_quiet_hours_end_is_local_morning_across_dst_changes(at: datetime, not_before: str) -> None:
    index = index_of(subscriber(A, number_timezone="America/New_York"))
    memory = OutageMemory()
    run(planner(), outage(1, at=at - timedelta(hours=1), eta=None), index, memory)
    result = run(planner(), outage(2, at=at, eta=at + timedelta(hours=12)), index, memory)
    assert result.commands[A]["not_before"] == not_before


@pytest.mark.parametrize(
    ("at", "not_before"),
    [
        (datetime(2024, 7, 1, 14, 0, tzinfo=UTC), "2024-07-01T15:00:00Z"),
        (datetime(2024, 7, 1, 16, 0, tzinfo=UTC), None),
        (datetime(2024, 7, 1, 2, 0, tzinfo=UTC), None),
    ],
)
def test_quiet_hours_window_not_crossing_midnight(at: datetime, not_before: str | None) -> None:
    rules = FanoutRules(quiet_start=time(13, 0), quiet_end=time(15, 0))
    index = index_of(subscriber(A, number_timezone=None))
    memory = alerted(index, at=at - timedelta(hours=1), eta=None)
    result = run(planner(rules), outage(2, at=at, eta=at + timedelta(hours=2)), index, memory)
    assert result.commands[A]["not_before"] == not_before


def test_equal_quiet_start_and_end_never_defers() -> None:
    rules = FanoutRules(quiet_start=time(21, 0), quiet_end=time(21, 0), defer_service_alerts=True)
    result = night_update(rules)
    assert result.commands[A]["not_before"] is None
    assert result.outcome(A) == ("targeted", None)


# --- determinism, chunking, summary ------------------------------------------------------


def mixed_population(n: int) -> PartitionIndex:
    subs = []
    for i in range(n):
        if i % 5 == 0:
            subs.append(subscriber(phone(i), customer(consent=False)))
        elif i % 7 == 0:
            subs.append(subscriber(phone(i), line="fixed_line", textable=False))
        else:
            tz = ["America/New_York", None, "Europe/Madrid"][i % 3]
            lang = "es" if i % 2 else "en"
            subs.append(subscriber(phone(i), customer(language=lang, timezone=tz)))
    return index_of(*subs)


def test_same_inputs_give_byte_identical_commands_and_audits() -> None:
    def once() -> tuple[list[Any], list[Any], list[Any]]:
        index = mixed_population(40)
        memory = OutageMemory()
        fanout = planner(FanoutRules(chunk_size=7))
        run(fanout, outage(1), index, memory)
        result = run(fanout, outage(2, eta=ETA + timedelta(hours=2), at=NIGHT), index, memory)
        return (
            [c.commands for c in result.chunks],
            [c.audits for c in result.chunks],
            [c.told for c in result.chunks],
        )

    first, second = once(), once()
    assert first == second
    assert first[0] and first[1]


def test_replanning_the_same_version_reproduces_command_ids_and_bodies() -> None:
    index = mixed_population(12)
    fanout = planner()
    one = run(fanout, outage(), index, OutageMemory(), remember=False)
    two = run(fanout, outage(), index, OutageMemory(), remember=False)
    assert [c.commands for c in one.chunks] == [c.commands for c in two.chunks]
    assert all(cmd["command_id"] == command_id(OID, 1, p) for p, cmd in one.commands.items())


def test_created_at_is_event_time_and_expiry_follows_the_ttl() -> None:
    at = datetime(2024, 7, 1, 19, 45, 30, tzinfo=UTC)
    fanout = planner(FanoutRules(command_ttl=timedelta(hours=2)))
    result = run(fanout, outage(at=at), index_of(subscriber(A)), OutageMemory())
    cmd = result.commands[A]
    assert cmd["created_at"] == "2024-07-01T19:45:30Z"
    assert cmd["expires_at"] == "2024-07-01T21:45:30Z"
    assert all(a["at"] == "2024-07-01T19:45:30Z" for a in result.audits)


def test_recipients_are_chunked_in_sorted_order_each_once() -> None:
    index = mixed_population(35)
    result = run(planner(FanoutRules(chunk_size=10)), outage(), index, OutageMemory())
    assert len(result.chunks) == 4
    per_chunk = [
        [e[0] for _, raw in chunk.audits for e in orjson.loads(raw)["facts"]["recipients"]]
        for chunk in result.chunks
    ]
    assert [len(p) for p in per_chunk] == [10, 10, 10, 5]
    everyone = sorted(index.subscribers)
    assert [sorted(p) for p in per_chunk] == [everyone[i : i + 10] for i in range(0, 35, 10)]
    for chunk, phones in zip(result.chunks, per_chunk, strict=True):
        numbers = [key.decode() for key, _ in chunk.commands]
        assert set(numbers) <= set(phones)
        assert [p for p, _ in chunk.told] == numbers
        assert numbers == sorted(numbers)


def test_summary_counts_decisions_and_queued_work() -> None:
    index = index_of(
        subscriber(A),
        subscriber(B, customer(consent=False)),
        subscriber(C, line="fixed_line", textable=False),
        subscriber(phone(4)),
        subscriber(phone(5), country="GB"),
    )
    result = run(planner(), outage(), index, OutageMemory(), {phone(4): OptOut(all_senders=True)})
    assert result.summary.counts == {
        "targeted:-": 1,
        "suppressed:no_consent": 1,
        "suppressed:landline": 1,
        "suppressed:opted_out": 1,
        "suppressed:no_sender": 1,
    }
    assert result.summary.work == {SHORT_CODE: 1}


def test_projection_is_recipients_over_the_sender_rate() -> None:
    index = index_of(*(subscriber(phone(i)) for i in range(300)))
    result = run(planner(), outage(), index, OutageMemory())
    assert result.summary.work == {SHORT_CODE: 300}
    assert result.summary.projection is not None
    assert result.summary.projection.seconds == pytest.approx(3.0)


@pytest.mark.parametrize(("per_segment", "seconds"), [(True, 2.0), (False, 1.0)])
def test_projection_counts_segments_when_the_sender_is_billed_per_segment(
    per_segment: bool, seconds: float
) -> None:
    pool = parse_pool(
        '[{"id": "87654", "type": "short_code", "rate": 10, "countries": ["US"],'
        f' "per_segment": {"true" if per_segment else "false"}}}]'
    )
    fanout = FanoutPlanner(pool, Templates("City Power", max_segments=2), FanoutRules())
    index = index_of(*(subscriber(phone(i)) for i in range(10)))
    result = run(fanout, outage(summary="Transformer failure. " * 12), index, OutageMemory())
    assert {cmd["segments"] for cmd in result.commands.values()} == {2}
    assert result.summary.projection is not None
    assert result.summary.projection.seconds == pytest.approx(seconds)


# --- property ----------------------------------------------------------------------------

_LINES = {"mobile": True, "fixed_line_or_mobile": True, "fixed_line": False, "voip": False}

_profile = st.fixed_dictionaries(
    {
        "in_region": st.booleans(),
        "consent": st.booleans(),
        "optout": st.sampled_from([None, "all", "this_sender", "other_sender"]),
        "line": st.sampled_from(sorted(_LINES)),
    }
)


def _expected(profile: dict[str, Any], life_safety: bool) -> tuple[str, str | None]:
    if not _LINES[profile["line"]]:
        return "suppressed", "landline" if profile["line"] == "fixed_line" else "invalid_number"
    blocked = profile["optout"] in ("all", "this_sender")
    if life_safety:
        return ("targeted", "life_safety_bypass" if blocked or not profile["consent"] else None)
    if not profile["consent"]:
        return "suppressed", "no_consent"
    if blocked:
        return "suppressed", "opted_out"
    return "targeted", None


@settings(max_examples=150, deadline=None)
@given(
    profiles=st.lists(_profile, max_size=25),
    chunk_size=st.integers(min_value=1, max_value=8),
    severity=st.sampled_from(["service", "life_safety"]),
)
def test_every_candidate_gets_exactly_one_decision_and_only_allowed_numbers_get_texts(
    profiles: list[dict[str, Any]], chunk_size: int, severity: str
) -> None:
    optout_for = {
        "all": OptOut(all_senders=True),
        "this_sender": OptOut(senders=frozenset({SHORT_CODE})),
        "other_sender": OptOut(senders=frozenset({"99999"})),
    }
    subs, optouts = [], {}
    for i, p in enumerate(profiles):
        region = "R1" if p["in_region"] else "R2"
        line = p["line"]
        subs.append(
            subscriber(
                phone(i),
                customer(regions=[region], consent=p["consent"]),
                line=line,
                textable=_LINES[line],
            )
        )
        if p["optout"]:
            optouts[phone(i)] = optout_for[p["optout"]]
    fanout = planner(FanoutRules(chunk_size=chunk_size))
    result = run(fanout, outage(severity=severity), index_of(*subs), OutageMemory(), optouts)

    candidates = {phone(i) for i, p in enumerate(profiles) if p["in_region"]}
    decided = [d.phone for d in result.decisions]
    assert sorted(decided) == sorted(candidates)  # each exactly once
    life_safety = severity == "life_safety"
    for i, p in enumerate(profiles):
        if p["in_region"]:
            assert result.outcome(phone(i)) == _expected(p, life_safety)
    allowed = {
        phone(i)
        for i, p in enumerate(profiles)
        if p["in_region"]
        and _LINES[p["line"]]
        and (life_safety or (p["consent"] and p["optout"] in (None, "other_sender")))
    }
    assert set(result.commands) == allowed
    assert sum(result.summary.counts.values()) == len(candidates)
    assert sum(len(c.audits) > 0 for c in result.chunks) == len(result.chunks)
    assert len(result.chunks) == -(-len(candidates) // chunk_size)


_step = st.tuples(
    st.sampled_from(["detected", "updated", "resolved"]),
    st.sampled_from(["service", "life_safety"]),
    st.frozensets(st.sampled_from(["R1", "R2", "R3"]), min_size=1),
    st.integers(min_value=-120, max_value=120),
)


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(_step, min_size=1, max_size=6))
def test_lifecycle_kinds_follow_what_each_number_was_told(
    steps: list[tuple[str, str, frozenset[str], int]],
) -> None:
    index = index_of(*(subscriber(phone(i), customer(regions=[f"R{i % 3 + 1}"])) for i in range(9)))
    memory = OutageMemory()
    fanout = planner()
    for version, (status, severity, regions, minutes) in enumerate(steps, start=1):
        event = outage(
            version,
            status=status,
            severity=severity,
            regions=sorted(regions),
            eta=ETA + timedelta(minutes=minutes),
            at=T0 + timedelta(minutes=version),
        )
        before = dict(memory.told.get(OID, {}))
        result = run(fanout, event, index, memory)
        decided = [d.phone for d in result.decisions]
        assert len(decided) == len(set(decided))
        for number, cmd in result.commands.items():
            prior = before.get(number)
            told_now = prior is not None and prior.kind is not MessageKind.RESTORED
            assert cmd["command_id"] == command_id(OID, version, number)
            if cmd["kind"] == "restored":
                assert told_now
            elif cmd["kind"] == "update":
                assert told_now
            else:
                assert not told_now
            assert (STOP in cmd["body"]) is (prior is None)
        for number, prior in before.items():
            if status == "resolved" and prior.kind is not MessageKind.RESTORED:
                assert result.kinds()[number] == "restored"
