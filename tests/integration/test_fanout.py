"""Outage fan-out on a real broker: the join, the lifecycle, compliance, dedupe, partitions."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2

from outage_sms.admin import ensure_topics
from tests.kafka_helpers import TopicReader, WorkerProcess, produce
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

pytestmark = pytest.mark.integration

Reader = Callable[[Role], TopicReader]

NOON_LA = "2026-11-22T20:00:00Z"  # 12:00 in Los Angeles, 05:00 in Tokyo (quiet hours)
A = "+14155550101"  # consenting, R1
B = "+14155550102"  # no consent, R1
C = "+14155550103"  # R2 only
N = "+14155550104"  # consenting, R1, in Tokyo's time zone: quiet hours at NOON_LA
UK_LANDLINE = "+442079460958"
SENDERS = orjson.dumps(
    [
        {"id": "87654", "type": "short_code", "rate": 100, "countries": ["US", "CA"]},
        {"id": "+447911123456", "type": "long_code", "rate": 10, "countries": ["GB"]},
        {"id": "+447911123457", "type": "long_code", "status": "pending", "countries": ["GB"]},
    ]
).decode()
ENV = {"OUTAGE_SMS_SENDERS": SENDERS, "OUTAGE_SMS_PROGRAM_NAME": "City Power"}


def outage(version: int, **over: Any) -> tuple[bytes, bytes]:
    rec = {
        "schema_version": 1,
        "outage_id": "OUT-1",
        "version": version,
        "status": "detected",
        "severity": "service",
        "regions": ["R1"],
        "summary": "Tree on lines at Main St",
        "eta": "2026-11-22T23:00:00Z",
        "status_url": "https://status.citypower.example/o/1",
        "occurred_at": NOON_LA,
    }
    rec.update(over)
    return str(rec["outage_id"]).encode(), orjson.dumps(rec)


def customer(cid: str, phone: str, **over: Any) -> tuple[bytes, bytes]:
    rec = {
        "schema_version": 1,
        "customer_id": cid,
        "phone": phone,
        "regions": ["R1"],
        "sms_consent": True,
        "language": "en",
        "timezone": "America/Los_Angeles",
    }
    rec.update(over)
    return cid.encode(), orjson.dumps(rec)


CUSTOMERS = [
    customer("CA", A),
    customer("CB", B, sms_consent=False),
    customer("CC", C, regions=["R2"]),
    customer("CN", N, timezone="Asia/Tokyo"),
    customer("CL", UK_LANDLINE, timezone="Europe/London"),
]


@pytest.fixture
async def worker(settings: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    await ensure_topics(settings)
    w = WorkerProcess(settings, tmp_path / "worker.log", env=ENV).start()
    try:
        yield w
    finally:
        w.stop_cleanly()


def topic(settings: Settings, role: Role) -> str:
    return TopicRegistry(settings)[role].name


def summaries(audit: TopicReader, version: int) -> list[dict[str, Any]]:
    return [
        a
        for a in audit.json_values()
        if a["decision"] == "fanout_summary" and a["outage_version"] == version
    ]


async def all_partitions_done(
    audit: TopicReader, settings: Settings, version: int, *others: TopicReader
) -> None:
    """Every partition wrote its summary, which follows its commands: read those too."""
    await audit.until(
        lambda r: len(summaries(r, version)) >= settings.partitions,
        what=f"fan-out summaries of v{version} from every partition",
    )
    for reader in others:
        await reader.catch_up()


def recipients(audit: TopicReader, decision: str, reason: str | None) -> set[str]:
    return {
        entry[0]
        for a in audit.json_values()
        if a["decision"] == decision and a["reason"] == reason
        for entry in a["facts"].get("recipients", [])
    }


async def load_customers(settings: Settings, read: Reader) -> None:
    await produce(
        settings.bootstrap_servers or "", topic(settings, Role.CUSTOMER_REGIONS), CUSTOMERS
    )
    await read(Role.SUBSCRIBERS_CHANGELOG).until(
        lambda r: len(r.table()) == len(CUSTOMERS), what="every customer indexed by phone"
    )


async def test_lifecycle_alert_update_restored_each_once_with_compliance_audited(
    settings: Settings, worker: WorkerProcess, read: Reader
) -> None:
    bootstrap = settings.bootstrap_servers or ""
    events = topic(settings, Role.OUTAGE_EVENTS)
    commands, audit = read(Role.SEND_COMMANDS), read(Role.AUDIT)
    await load_customers(settings, read)

    # v1: the alert, now, for A and N; B has no consent; the UK landline cannot get SMS.
    await produce(bootstrap, events, [outage(1)])
    await all_partitions_done(audit, settings, 1, commands)
    v1 = {c["to"]: c for c in commands.json_values()}
    assert set(v1) == {A, N}
    assert v1[A]["kind"] == "alert" and v1[A]["not_before"] is None
    assert "Reply STOP to opt out" in v1[A]["body"] and "3:00 PM" in v1[A]["body"]
    assert v1[A]["from"] == "87654" and v1[A]["encoding"] == "gsm7" and v1[A]["segments"] == 1
    assert v1[N]["not_before"] is None, "a service alert goes out in quiet hours by default"
    assert recipients(audit, "suppressed", "no_consent") == {B}
    assert recipients(audit, "suppressed", "landline") == {UK_LANDLINE}
    assert recipients(audit, "targeted", None) == {A, N}

    # v2: the ETA moves by 10 minutes: not worth a text.
    await produce(bootstrap, events, [outage(2, status="updated", eta="2026-11-22T23:10:00Z")])
    await all_partitions_done(audit, settings, 2, commands)
    assert len(commands.json_values()) == 2
    assert recipients(audit, "skipped", "no_significant_change") == {A, N}

    # v3: the ETA moves by two hours: an update, without the opt-out footer this time;
    # N is in quiet hours, so N's update waits for 08:00 Tokyo (23:00 UTC).
    await produce(bootstrap, events, [outage(3, status="updated", eta="2026-11-23T01:00:00Z")])
    await all_partitions_done(audit, settings, 3, commands)
    v3 = {c["to"]: c for c in commands.json_values() if c["outage_version"] == 3}
    assert set(v3) == {A, N}
    assert v3[A]["kind"] == "update" and "STOP" not in v3[A]["body"]
    assert "5:00 PM" in v3[A]["body"]
    assert v3[N]["not_before"] == "2026-11-22T23:00:00Z"
    assert N in recipients(audit, "targeted", "quiet_hours_deferral")

    # An old version arriving late changes nothing; v4 resolves: restored, to those alerted.
    await produce(bootstrap, events, [outage(2, status="updated"), outage(4, status="resolved")])
    await all_partitions_done(audit, settings, 4, commands)
    sent = commands.json_values()
    kinds = Counter((c["to"], c["kind"]) for c in sent)
    assert kinds == {
        (A, "alert"): 1,
        (A, "update"): 1,
        (A, "restored"): 1,
        (N, "alert"): 1,
        (N, "update"): 1,
        (N, "restored"): 1,
    }
    assert len({c["command_id"] for c in sent}) == len(sent)
    print(f"checked {len(sent)} commands, {len(audit.records)} audit records")


async def test_forbidden_content_and_url_shorteners_are_dead_lettered_not_sent(
    settings: Settings, worker: WorkerProcess, read: Reader
) -> None:
    bootstrap = settings.bootstrap_servers or ""
    await load_customers(settings, read)
    bad = [
        outage(1, outage_id="BAD-1", status_url="https://bit.ly/3xYz"),
        outage(1, outage_id="BAD-2", summary="Casino night cancelled due to outage"),
    ]
    await produce(bootstrap, topic(settings, Role.OUTAGE_EVENTS), [*bad, outage(1)])
    dlq = await read(Role.OUTAGE_EVENTS_DLQ).until(lambda r: len(r.records) == 2, what="2 DLQ")
    letters = dlq.json_values()
    assert {d["reason"] for d in letters} == {"forbidden_content"}
    assert any("bit.ly" in d["error"] for d in letters)
    assert any("casino" in d["error"] for d in letters)
    commands = await read(Role.SEND_COMMANDS).until(
        lambda r: {c["to"] for c in r.json_values()} == {A, N}, what="the good outage's alerts"
    )
    assert {c["outage_id"] for c in commands.json_values()} == {"OUT-1"}


# Kafka only: on Tansu a restarted worker's table recovery sometimes never finishes (its
# reported high watermarks disagree with what it serves after batched writes; see the note
# in bench/results), so restart guarantees are proven on the reference broker.
@pytest.mark.kafka_only
async def test_no_second_message_for_the_same_version_after_restart_and_replayed_fanout(
    settings: Settings, tmp_path: Path, read: Reader
) -> None:
    bootstrap = settings.bootstrap_servers or ""
    await ensure_topics(settings)
    commands, audit = read(Role.SEND_COMMANDS), read(Role.AUDIT)
    first = WorkerProcess(settings, tmp_path / "w1.log", env=ENV).start()
    try:
        await load_customers(settings, read)
        await produce(bootstrap, topic(settings, Role.OUTAGE_EVENTS), [outage(1)])
        await all_partitions_done(audit, settings, 1, commands)
    finally:
        first.stop_cleanly()
    assert len(commands.json_values()) == 2

    # A retried fan-out after the restart: v1 copied to every partition again (as a crash
    # between the copy and the commit would do), then v2 as a marker that all is processed.
    fanout = topic(settings, Role.OUTAGE_FANOUT)
    key, v1 = outage(1)
    replay = [(key, v1)]
    # Wait for "Worker ready": records that arrive while a worker recovers its tables can
    # be lost by faust-streaming 0.15.3 (see the issue notes of 2026-11-24), which made this
    # test flaky; that fault is not what this test is about.
    second = WorkerProcess(
        settings, tmp_path / "w2.log", env={**ENV, "OUTAGE_SMS_LOG_LEVEL": "INFO"}
    ).start()
    try:
        from aiokafka import AIOKafkaProducer

        await second.log_contains("Worker ready")
        # Built in the background from "Worker ready", before any outage asks for them:
        # the replayed version below then finds its numbers in views it did not build.
        await second.log_contains("fan-out views rebuilt")

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for p in range(settings.partitions):
                for k, v in replay:
                    await producer.send_and_wait(fanout, v, key=k, partition=p)
        finally:
            await producer.stop()
        await audit.until(
            lambda r: len(summaries(r, 1)) >= 2 * settings.partitions, what="replayed v1 done"
        )
        await commands.catch_up()
    finally:
        second.stop_cleanly()
    assert len(commands.json_values()) == 2, "the replayed version sent nothing new"
    assert recipients(audit, "skipped", "duplicate") == {A, N}


async def test_fanout_runs_in_every_partition_across_two_workers_one_command_each(
    settings: Settings, tmp_path: Path, read: Reader
) -> None:
    bootstrap = settings.bootstrap_servers or ""
    await ensure_topics(settings)
    phones = [f"+1415555{i:04d}" for i in range(200, 400)]
    env = {**ENV, "OUTAGE_SMS_LOG_LEVEL": "INFO"}
    workers = [WorkerProcess(settings, tmp_path / f"w{i}.log", env=env) for i in (1, 2)]
    try:
        # One after the other, so the second join is sure to rebalance the first worker.
        await workers[0].start().log_contains("Worker ready")
        await workers[1].start().log_contains("Worker ready")
        await workers[0].log_contains("Setting newly assigned partitions", count=2)
        await workers[0].log_contains("Worker ready", count=2)
        await produce(
            bootstrap,
            topic(settings, Role.CUSTOMER_REGIONS),
            [customer(f"K{i}", p) for i, p in enumerate(phones)],
        )
        await read(Role.SUBSCRIBERS_CHANGELOG).until(
            lambda r: len(r.table()) == len(phones), what="200 subscribers"
        )
        await produce(bootstrap, topic(settings, Role.OUTAGE_EVENTS), [outage(1)])
        commands = await read(Role.SEND_COMMANDS).until(
            lambda r: len(r.records) >= len(phones), what="a command per subscriber"
        )
        audit = read(Role.AUDIT)
        await all_partitions_done(audit, settings, 1)
    finally:
        # Stop both before judging either, so a failure does not leave one running.
        started = [w for w in workers if w.proc is not None]
        early = [w.proc.poll() for w in started if w.proc is not None]
        codes = [w.stop() for w in started]
        for w, first_poll, code in zip(started, early, codes, strict=True):
            assert first_poll is None and code == 0, f"exit {first_poll}/{code}:\n{w.log_tail()}"
    sent = commands.json_values()
    assert Counter(c["to"] for c in sent) == Counter(phones), "each exactly once"
    for (key, _), partition in zip(commands.records, commands.partitions, strict=True):
        assert partition == (murmur2(key or b"") & 0x7FFFFFFF) % settings.partitions
    worked = [w for w in workers if "fan-out OUT-1 v1" in w.log_path.read_text()]
    assert len(worked) == 2, "both workers fanned out their own partitions"
    print(f"checked {len(sent)} commands over {settings.partitions} partitions, 2 workers")
