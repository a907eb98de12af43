"""Audit replay on a real broker: a worker's run is reproduced exactly, twice; the same
run replayed under a changed rule is reported as divergent (exit 1)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from outage_sms.admin import ConfigurationError, ensure_topics
from outage_sms.replay import OffsetRange, ReplayRequest, run_replay
from tests.kafka_helpers import TopicReader, WorkerProcess, end_offsets, produce, settings_env
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

pytestmark = pytest.mark.integration

Reader = Callable[[Role], TopicReader]

A = "+14155550121"  # R1, consenting; texts STOP after the alert
B = "+14155550122"  # R1, no consent
C = "+14155550123"  # R1 and R2, asks for the status
D = "+14155550124"  # R2 only
NOON_LA = "2026-11-24T20:00:00Z"
SHORT = "87654"


def customer(cid: str, phone: str, regions: list[str], consent: bool = True) -> tuple[bytes, bytes]:
    rec = {
        "schema_version": 1,
        "customer_id": cid,
        "phone": phone,
        "regions": regions,
        "sms_consent": consent,
        "language": "en",
        "timezone": "America/Los_Angeles",
    }
    return cid.encode(), orjson.dumps(rec)


def outage(version: int, **over: Any) -> tuple[bytes, bytes]:
    rec = {
        "schema_version": 1,
        "outage_id": "O1",
        "version": version,
        "status": "detected",
        "severity": "service",
        "regions": ["R1"],
        "summary": "Storm damage on Main St",
        "eta": "2026-11-24T23:30:00Z",
        "status_url": "https://status.example.com/o/1",
        "occurred_at": NOON_LA,
    }
    rec.update(over)
    return b"O1", orjson.dumps(rec)


def text(mid: str, phone: str, body: str, at: str) -> tuple[bytes, bytes]:
    rec = {
        "schema_version": 1,
        "message_id": mid,
        "from": phone,
        "to": SHORT,
        "body": body,
        "received_at": at,
    }
    return phone.encode(), orjson.dumps(rec)


MARKS: dict[str, dict[str, datetime]] = {}
"""Settings' topic prefix -> wall-clock times between the run's steps (for --from/--to)."""


@pytest.fixture
async def run(settings: Settings, tmp_path: Path, read: Reader) -> AsyncIterator[Settings]:
    """A worker's run: customers, an outage detected, updated twice and resolved, a STOP
    and a status question between the versions. Yields once it is all audited."""
    await ensure_topics(settings)
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    worker = WorkerProcess(settings, tmp_path / "worker.log", env={"OUTAGE_SMS_LOG_LEVEL": "INFO"})
    worker.start()
    try:
        await worker.log_contains("Worker ready")
        audit = read(Role.AUDIT)

        def summaries(version: int) -> Callable[[TopicReader], bool]:
            return lambda r: (
                sum(
                    1
                    for a in r.json_values()
                    if a["decision"] == "fanout_summary" and a["outage_version"] == version
                )
                >= settings.partitions
            )

        def audited(mid: str) -> Callable[[TopicReader], bool]:
            return lambda r: any(a.get("message_id") == mid for a in r.json_values())

        await produce(
            bs,
            reg[Role.CUSTOMER_REGIONS].name,
            [
                customer("CA", A, ["R1"]),
                customer("CB", B, ["R1"], consent=False),
                customer("CC", C, ["R1", "R2"]),
                customer("CD", D, ["R2"]),
            ],
        )
        await read(Role.SUBSCRIBERS_CHANGELOG).until(
            lambda r: {orjson.loads(k) for k, _ in r.records} >= {A, B, C, D}, what="subscribers"
        )
        await produce(bs, reg[Role.OUTAGE_EVENTS].name, [outage(1)])
        await audit.until(summaries(1), what="v1 fan-out")
        await produce(
            bs,
            reg[Role.INBOUND].name,
            [
                text("m-stop", A, "STOP", "2026-11-24T20:05:00Z"),
                text("m-status", C, "when will the power be back?", "2026-11-24T20:06:00Z"),
            ],
        )
        await audit.until(lambda r: audited("m-stop")(r) and audited("m-status")(r), what="replies")
        # ETA +10 minutes: under the default 30-minute rule, nothing to say.
        await produce(
            bs,
            reg[Role.OUTAGE_EVENTS].name,
            [
                outage(
                    2,
                    status="updated",
                    eta="2026-11-24T23:40:00Z",
                    occurred_at="2026-11-24T20:10:00Z",
                )
            ],
        )
        await audit.until(summaries(2), what="v2 fan-out")
        # Reaches R2; ETA +50 minutes: an update.
        await produce(
            bs,
            reg[Role.OUTAGE_EVENTS].name,
            [
                outage(
                    3,
                    status="updated",
                    regions=["R1", "R2"],
                    eta="2026-11-25T00:30:00Z",
                    occurred_at="2026-11-24T20:20:00Z",
                )
            ],
        )
        await audit.until(summaries(3), what="v3 fan-out")
        await produce(
            bs,
            reg[Role.INBOUND].name,
            [text("m-help", D, "HELP", "2026-11-24T20:25:00Z")],
        )
        await audit.until(audited("m-help"), what="help")
        await asyncio.sleep(0.05)
        MARKS[settings.topic_prefix] = {"before_v4": datetime.now(UTC)}
        await produce(
            bs,
            reg[Role.OUTAGE_EVENTS].name,
            [outage(4, status="resolved", occurred_at="2026-11-24T21:00:00Z")],
        )
        await audit.until(summaries(4), what="v4 fan-out")
        yield settings
    finally:
        worker.stop_cleanly()


async def test_a_replay_reproduces_the_run_exactly_and_twice_the_same(run: Settings) -> None:
    first = await run_replay(run, ReplayRequest())
    assert first.render().endswith("reproduced: every in-scope decision matches sms.audit"), (
        first.render()
    )
    c = first.comparison
    assert first.exit_code == 0
    assert c.mismatches == [] and c.recorded_conflicts == []
    assert c.matched == c.recorded_in_scope == c.recorded_total
    assert first.stats["input_records"] == 4 + 4 + 3
    # 4 versions x 4 partitions summaries, plus the recipients' groups and the replies.
    assert c.matched > 16 + 3
    decisions = {a for a in c.other}  # nothing but agents' records in this run
    assert decisions == set()

    second = await run_replay(run, ReplayRequest())
    assert second.to_json()["result"] == first.to_json()["result"]

    # One outage only, and an offset range: both reproduce too.
    only = await run_replay(run, ReplayRequest(outage_id="O1"))
    assert only.exit_code == 0 and only.comparison.matched > 16
    assert only.comparison.recorded_out_of_scope > 0  # the replies' records
    name = TopicRegistry(run)[Role.OUTAGE_EVENTS].name
    ends = await end_offsets(run.bootstrap_servers or "", name)
    (part,) = [p for p, end in ends.items() if end]
    ranged = await run_replay(
        run, ReplayRequest(offsets=(OffsetRange(name, part, ends[part] - 1, None),))
    )
    assert ranged.exit_code == 0, ranged.render()
    assert ranged.stats["in_scope_records"] == 1  # v4, with v1-v3 and the rest as warm-up
    assert ranged.comparison.matched >= 4


def _cli(settings: Settings, tmp_path: Path, **env: str) -> tuple[int, str, dict[str, Any]]:
    out = tmp_path / "replay.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "outage_sms",
            "audit",
            "replay",
            "--json",
            str(out),
            "--csv",
            str(tmp_path / "replay.csv"),
        ],
        env={**settings_env(settings), **env},
        capture_output=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout.decode(), orjson.loads(out.read_bytes())


async def test_a_changed_rule_is_reported_as_divergent(run: Settings, tmp_path: Path) -> None:
    code, stdout, report = _cli(run, tmp_path)
    assert code == 0, stdout
    assert report["result"]["verdict"] == "reproduced"

    code, stdout, report = _cli(run, tmp_path, OUTAGE_SMS_ETA_CHANGE_MINUTES="5")
    assert code == 1, stdout
    result = report["result"]
    assert result["verdict"] == "divergent"
    assert result["rules"]["eta_change_minutes"] == 5
    assert result["counts"]["missing"] and result["counts"]["unexpected"]
    # v2's 10-minute move: C (consenting, not opted out) would now get an update.
    assert {
        "outage": "O1:2",
        "phone": C,
        "recorded": "skipped:no_significant_change",
        "replayed": "targeted:- (update)",
    } in result["recipient_changes"]
    assert "DIVERGENT" in stdout and "per recipient" in stdout
    rows = (tmp_path / "replay.csv").read_text().splitlines()
    assert rows[0].startswith("status,audit_id,decision")
    assert len(rows) > 1

    code, stdout, report = _cli(run, tmp_path, OUTAGE_SMS_QUIET_HOURS="11:00-13:00")
    assert code == 1, stdout
    assert any(
        ch["replayed"].startswith("targeted:quiet_hours_deferral")
        for ch in report["result"]["recipient_changes"]
    )


async def test_a_time_range_replays_only_what_it_covers(run: Settings) -> None:
    start = MARKS[run.topic_prefix]["before_v4"]
    if run.broker_kind == "tansu":
        with pytest.raises(ConfigurationError, match="replay by time needs Apache Kafka"):
            await run_replay(run, ReplayRequest(start=start))
        return
    result = await run_replay(run, ReplayRequest(start=start))
    assert result.exit_code == 0, result.render()
    assert result.stats["in_scope_records"] == 1  # v4; everything before is warm-up
    assert result.comparison.matched >= run.partitions
    assert result.comparison.recorded_out_of_scope > 0
