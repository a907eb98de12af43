"""Inbound replies on a real broker: STOP/START/HELP, the status bot, loop protection,
and opt-outs that hold across a worker restart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from outage_sms.admin import ensure_topics
from streams.replies import reply_command_id
from tests.builders import SHORT, customer, outage, text
from tests.kafka_helpers import (
    TopicReader,
    WorkerProcess,
    await_committed,
    nanp_phone,
    produce,
)
from topology.settings import Settings
from topology.topics import Role, TopicRegistry
from topology.views import phone_partition

pytestmark = pytest.mark.integration

Reader = Callable[[Role], TopicReader]

A = "+14155550111"  # customer in R1
B = "+14155550112"  # customer in R2, no outage there
STRANGER = "+14155550199"  # not a customer


def message_id(record: tuple[bytes, bytes]) -> str:
    return str(orjson.loads(record[1])["message_id"])


@pytest.fixture
async def started(settings: Settings, tmp_path: Path) -> AsyncIterator[list[WorkerProcess]]:
    """Workers a test starts (one at a time); each is stopped cleanly at teardown."""
    await ensure_topics(settings)
    workers: list[WorkerProcess] = []
    yield workers
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            w.stop_cleanly()


async def start(
    settings: Settings,
    tmp_path: Path,
    workers: list[WorkerProcess],
    env: dict[str, str] | None = None,
) -> WorkerProcess:
    """A worker, once it says "Worker ready": records that arrive while a worker recovers
    its tables can be lost by faust-streaming 0.15.3 (issue notes of 2026-11-24)."""
    log = tmp_path / f"worker{len(workers)}.log"
    w = WorkerProcess(settings, log, env={"OUTAGE_SMS_LOG_LEVEL": "INFO", **(env or {})}).start()
    workers.append(w)
    await w.log_contains("Worker ready")
    return w


def commands_to(reader: TopicReader, phone: str) -> list[dict[str, Any]]:
    return [c for c in reader.json_values() if c["to"] == phone]


def audits_of(audit: TopicReader, mid: str) -> list[tuple[str, str | None]]:
    return [(a["decision"], a["reason"]) for a in audit.json_values() if a.get("message_id") == mid]


def fanout_suppressed(audit: TopicReader, oid: str, reason: str) -> set[str]:
    return {
        entry[0]
        for a in audit.json_values()
        if a.get("outage_id") == oid and a["decision"] == "suppressed" and a["reason"] == reason
        for entry in a["facts"].get("recipients", [])
    }


async def test_status_help_and_stop_end_to_end(
    settings: Settings, tmp_path: Path, started: list[WorkerProcess], read: Reader
) -> None:
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    await start(settings, tmp_path, started)
    commands, audit = read(Role.SEND_COMMANDS), read(Role.AUDIT)

    await produce(
        bs, reg[Role.CUSTOMER_REGIONS].name, [customer("CA", A, ["R1"]), customer("CB", B, ["R2"])]
    )
    await read(Role.SUBSCRIBERS_CHANGELOG).until(
        lambda r: {orjson.loads(k) for k, _ in r.records} >= {A, B}, what="both subscribers"
    )
    await produce(bs, reg[Role.OUTAGE_EVENTS].name, [outage("O1", 1)])
    await commands.until(lambda r: len(commands_to(r, A)) == 1, what="A's alert")

    question = text(A, "When will it be fixed?")
    fine = text(B, "is the power back?")
    stranger = text(STRANGER, "status")
    help_ = text(A, "HELP")
    await produce(bs, reg[Role.INBOUND].name, [question, fine, stranger, help_])
    await audit.until(
        lambda r: all(
            ("reply", None) in audits_of(r, message_id(m))
            for m in (question, fine, stranger, help_)
        ),
        what="four replies audited",
    )
    await commands.catch_up()
    a_replies = [c for c in commands_to(commands, A) if c["kind"] in ("reply", "help")]
    assert {c["kind"] for c in a_replies} == {"reply", "help"}
    status = next(c for c in a_replies if c["kind"] == "reply")
    assert "Outage in your area" in status["body"] and "3:30 PM" in status["body"]
    assert status["from"] == SHORT and status["expires_at"] is not None
    assert "No known outage" in commands_to(commands, B)[-1]["body"]
    generic = commands_to(commands, STRANGER)[-1]["body"]
    assert "no account" in generic and "3:30" not in generic and "status.example" not in generic

    stop = text(A, "Stop texting me please")
    await produce(bs, reg[Role.INBOUND].name, [stop])
    optouts = await read(Role.OPTOUTS_CHANGELOG).until(lambda r: A in r.table(), what="A's opt-out")
    state = optouts.table()[A]
    assert state["senders"] == [SHORT] and not state["all"]
    assert state["history"][-1]["message_id"] == message_id(stop)
    assert state["history"][-1]["words"] == "stop texting me"
    await audit.until(lambda r: ("reply", None) in audits_of(r, message_id(stop)), what="confirm")
    await commands.catch_up()
    confirmations = [c for c in commands_to(commands, A) if c["kind"] == "confirmation"]
    assert len(confirmations) == 1 and "unsubscribed" in confirmations[0]["body"]

    # Already queued behind the opt-out: the next outage version must not reach A.
    after = text(A, "when will it be fixed?", at="2026-11-24T20:05:00Z")
    await produce(bs, reg[Role.INBOUND].name, [after])
    await produce(bs, reg[Role.OUTAGE_EVENTS].name, [outage("O1", 2, eta="2026-11-25T03:00:00Z")])
    await audit.until(
        lambda r: A in fanout_suppressed(r, "O1", "opted_out"), what="v2 suppressed for A"
    )
    await audit.until(
        lambda r: ("reply_suppressed", "opted_out") in audits_of(r, message_id(after)),
        what="no answer after STOP",
    )
    await commands.catch_up()
    assert not [c for c in commands_to(commands, A) if c.get("outage_version") == 2]
    print(f"commands to A: {[c['kind'] for c in commands_to(commands, A)]}")


async def test_stop_and_loop_cooldown_hold_across_a_restart(
    settings: Settings, tmp_path: Path, started: list[WorkerProcess], read: Reader
) -> None:
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    env = {"OUTAGE_SMS_COMMIT_INTERVAL_SECONDS": "600"}
    first = await start(settings, tmp_path, started, env)
    commands, audit = read(Role.SEND_COMMANDS), read(Role.AUDIT)
    await produce(
        bs, reg[Role.CUSTOMER_REGIONS].name, [customer("CA", A, ["R1"]), customer("CB", B, ["R1"])]
    )
    await read(Role.SUBSCRIBERS_CHANGELOG).until(
        lambda r: {orjson.loads(k) for k, _ in r.records} >= {A, B}, what="both subscribers"
    )
    stop = text(A, "STOP")
    echo = text(B, "Outage Alerts: Outage in your area. Reply STOP to opt out.")
    await produce(bs, reg[Role.INBOUND].name, [stop, echo])
    await audit.until(
        lambda r: (
            ("loop_detected", "loop_echo") in audits_of(r, message_id(echo))
            and ("opt_out", None) in audits_of(r, message_id(stop))
        ),
        what="opt-out and loop audited",
    )
    await read(Role.REPLY_GUARD_CHANGELOG).until(lambda r: B in r.table(), what="B's guard")
    first.stop_cleanly()

    await start(settings, tmp_path, started)
    later = text(B, "when will it be fixed?", at="2026-11-24T20:10:00Z")
    await produce(bs, reg[Role.INBOUND].name, [later])
    await produce(bs, reg[Role.OUTAGE_EVENTS].name, [outage("O2", 1)])
    await audit.until(
        lambda r: ("reply_suppressed", "loop_cooldown") in audits_of(r, message_id(later)),
        what="the cool-down survived the restart",
    )
    await audit.until(
        lambda r: A in fanout_suppressed(r, "O2", "opted_out"),
        what="the STOP survived the restart",
    )
    await commands.catch_up()
    to_a = commands_to(commands, A)
    assert [c["kind"] for c in to_a] == ["confirmation"], to_a
    to_b = commands_to(commands, B)
    assert [c["kind"] for c in to_b] == ["alert"], "B gets the outage, but no bot replies"


async def test_a_stop_on_the_wrong_partition_is_rekeyed_and_still_blocks_the_fanout(
    settings: Settings, tmp_path: Path, started: list[WorkerProcess], read: Reader
) -> None:
    """A producer with another partitioner (librdkafka's CRC32) puts a STOP where the
    number's state is not: it must still be honoured where the fan-out looks."""
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    await start(settings, tmp_path, started)
    commands, audit = read(Role.SEND_COMMANDS), read(Role.AUDIT)
    await produce(bs, reg[Role.CUSTOMER_REGIONS].name, [customer("CA", A, ["R1"])])
    await read(Role.SUBSCRIBERS_CHANGELOG).until(
        lambda r: A in {orjson.loads(k) for k, _ in r.records}, what="A subscribed"
    )
    home = phone_partition(A.encode(), settings.partitions)
    wrong = (home + 1) % settings.partitions
    stop = text(A, "STOP")
    producer = AIOKafkaProducer(bootstrap_servers=bs)
    await producer.start()
    try:
        await producer.send_and_wait(reg[Role.INBOUND].name, stop[1], key=stop[0], partition=wrong)
    finally:
        await producer.stop()
    optouts = await read(Role.OPTOUTS_CHANGELOG).until(lambda r: A in r.table(), what="opt-out")
    assert optouts.partitions[-1] == home
    await produce(bs, reg[Role.OUTAGE_EVENTS].name, [outage("O3", 1)])
    await audit.until(
        lambda r: A in fanout_suppressed(r, "O3", "opted_out"), what="the fan-out saw the STOP"
    )
    await commands.catch_up()
    assert [c["kind"] for c in commands_to(commands, A)] == ["confirmation"]


async def test_texts_read_directly_are_answered_once_across_a_rebalance_and_committed(
    settings: Settings, tmp_path: Path, started: list[WorkerProcess], read: Reader
) -> None:
    """On Apache Kafka the replies read ``sms.inbound`` with their own consumer on the
    partitions Faust assigns (topology.inbound_reader). A second worker joining takes half
    of them over: every text is answered, none twice (the revoke commits what was done
    before the partitions move), and the group's commits reach the end of the topic.
    Commits only at a revoke and at a shutdown here (a 10-minute interval), so a
    duplicate or a missing commit names those two."""
    if settings.broker_kind == "tansu":
        pytest.skip("Tansu keeps Faust's per-event path for the replies")
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    inbound = reg[Role.INBOUND].name
    commands = read(Role.SEND_COMMANDS)
    env = {"OUTAGE_SMS_COMMIT_INTERVAL_SECONDS": "600"}
    first = await start(settings, tmp_path, started, env)
    await first.log_contains("directly: partitions")

    waves = [[text(nanp_phone(i), "status") for i in range(w * 150, (w + 1) * 150)] for w in (0, 1)]
    await produce(bs, inbound, waves[0])
    await commands.until(lambda r: len(r.records) >= 150, what="the first wave answered")
    second = await start(settings, tmp_path, started, env)
    await second.log_contains("directly: partitions")
    await first.log_contains("directly: partitions", count=2)  # its share, after the revoke
    await produce(bs, inbound, waves[1])
    await commands.until(lambda r: len(r.records) >= 300, what="the second wave answered")

    for w in started:
        w.stop_cleanly()
    await await_committed(bs, settings.faust_id, [inbound], timeout=5)
    await commands.catch_up()
    ids = sorted(c["command_id"] for c in commands.json_values())
    want = sorted(reply_command_id(message_id(t), t[0].decode()) for t in waves[0] + waves[1])
    assert ids == want
