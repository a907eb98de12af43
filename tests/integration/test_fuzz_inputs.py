"""A fuzzed corpus on every input topic: no agent crashes, every record the decoder refuses
is in its dead-letter topic, and the good records around the bad ones are processed.

Seeded, so a failure reproduces. Mutations of valid records: bytes flipped, truncated,
fields deleted, values swapped for other JSON types, keys changed. Which mutations are
still valid is decided by the same decoders the agents use (``streams.intake``); this
test is about what the running worker does with each record, not about the rules.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from outage_sms.admin import ensure_topics
from streams.intake import Rejected, Tombstone, decode_customer, decode_inbound, decode_outage
from tests.kafka_helpers import TopicReader, WorkerProcess, produce
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

pytestmark = pytest.mark.integration

Reader = Callable[[Role], TopicReader]
Record = tuple[bytes | None, bytes | None]
NOW = "2026-11-22T20:00:00Z"
SEED = 20261124
JUNK: list[Any] = [None, True, 0, -1, 2**64 - 1, 1.5, "", "x" * 300, [], {}, [1, "a"], {"a": {}}]


def outage(i: int) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "outage_id": f"F{i}",
        "version": 1,
        "status": "detected",
        "severity": "service",
        "regions": ["FUZZ"],
        "summary": "Power outage",
        "eta": "2026-11-22T23:00:00Z",
        "status_url": "https://status.example.com/o/1",
        "occurred_at": NOW,
    }


def customer(i: int) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "customer_id": f"FC{i}",
        "phone": f"+1415556{i:04d}",
        "regions": ["FUZZ"],
        "sms_consent": True,
        "language": "en",
        "timezone": "America/Los_Angeles",
    }


def inbound(i: int) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "message_id": f"FM{i}",
        "from": f"+1415557{i:04d}",
        "to": "87654",
        "body": "STATUS",
        "received_at": NOW,
    }


def key_of(topic: str, rec: dict[str, Any]) -> bytes:
    field = {"outage": "outage_id", "customer": "customer_id", "inbound": "from"}[topic]
    return str(rec[field]).encode()


def mutate(rng: random.Random, topic: str, rec: dict[str, Any]) -> Record:
    """One random way to break (or, sometimes, not break) a valid record."""
    key: bytes | None = key_of(topic, rec)
    how = rng.randrange(7)
    if how == 0:  # a field deleted
        rec = dict(rec)
        del rec[rng.choice(sorted(rec))]
    elif how == 1:  # a field's value replaced by another JSON type
        rec = dict(rec)
        rec[rng.choice(sorted(rec))] = rng.choice(JUNK)
    elif how == 2:  # an unknown field
        rec = {**rec, rng.choice(["extra", "Phone", "__proto__"]): rng.choice(JUNK)}
    elif how == 3:  # another key
        key = rng.choice([None, b"", b"\xff\xfe", b"other"])
    value = orjson.dumps(rec)
    if how == 4:  # truncated
        value = value[: rng.randrange(len(value))]
    elif how == 5:  # bytes flipped
        data = bytearray(value)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        value = bytes(data)
    elif how == 6:  # not an object at all
        value = orjson.dumps(rng.choice(JUNK))
    return key, value


def accepted(topic: str, key: bytes | None, value: bytes | None, limit: int) -> bool:
    decode = {"outage": decode_outage, "customer": decode_customer, "inbound": decode_inbound}
    result = decode[topic](key, value, limit)
    return not isinstance(result, Rejected | Tombstone)


def corpus(
    rng: random.Random, topic: str, make: Callable[[int], dict[str, Any]], n: int, limit: int
) -> tuple[list[Record], int, list[dict[str, Any]]]:
    """n mutated records with a good one after every fifth; returns (records, bad, good)."""
    records: list[Record] = []
    good: list[dict[str, Any]] = []
    bad = 0
    for i in range(n):
        key, value = mutate(rng, topic, make(i))
        if key is None and topic == "customer":
            key = b"\xff\xfe"  # Kafka refuses null keys on compacted topics at the broker
        if accepted(topic, key, value, limit):
            continue  # a mutation that is still valid would change state: leave it out
        records.append((key, value))
        bad += 1
        if i % 5 == 4:
            rec = make(1000 + i)
            good.append(rec)
            records.append((key_of(topic, rec), orjson.dumps(rec)))
    return records, bad, good


async def test_fuzzed_bad_records_are_dead_lettered_and_good_ones_around_them_processed(
    settings: Settings, tmp_path: Path, read: Reader
) -> None:
    await ensure_topics(settings)
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    rng = random.Random(SEED)
    limit = settings.max_record_bytes
    outages, bad_outages, good_outages = corpus(rng, "outage", outage, 80, limit)
    customers, bad_customers, good_customers = corpus(rng, "customer", customer, 80, limit)
    texts, bad_texts, good_texts = corpus(rng, "inbound", inbound, 80, limit)

    w = WorkerProcess(settings, tmp_path / "worker.log", env={"OUTAGE_SMS_LOG_LEVEL": "INFO"})
    w.start()
    try:
        await w.log_contains("Worker ready")
        await produce(bs, reg[Role.OUTAGE_EVENTS].name, outages)
        await produce(bs, reg[Role.CUSTOMER_REGIONS].name, customers)
        await produce(bs, reg[Role.INBOUND].name, texts)

        out_dlq = await read(Role.OUTAGE_EVENTS_DLQ).until(
            lambda r: len(r.records) >= bad_outages, what=f"{bad_outages} outage letters"
        )
        cust_dlq = await read(Role.CUSTOMER_REGIONS_DLQ).until(
            lambda r: len(r.records) >= bad_customers, what=f"{bad_customers} customer letters"
        )
        in_dlq = await read(Role.INBOUND_DLQ).until(
            lambda r: len(r.records) >= bad_texts, what=f"{bad_texts} inbound letters"
        )
        want_outages = {o["outage_id"] for o in good_outages}
        await read(Role.OUTAGES_CHANGELOG).until(
            lambda r: set(r.table()) >= want_outages, what="every good outage"
        )
        want_phones = {c["phone"] for c in good_customers}
        await read(Role.SUBSCRIBERS_CHANGELOG).until(
            lambda r: set(r.table()) >= want_phones, what="every good customer"
        )
        want_texts = {t["message_id"] for t in good_texts}
        await read(Role.AUDIT).until(
            lambda r: (
                {
                    v.get("message_id")
                    for v in r.json_values()
                    if v["decision"] == "inbound_received"
                }
                >= want_texts
            ),
            what="every good text",
        )
        for dlq in (out_dlq, cust_dlq, in_dlq):
            await dlq.catch_up()
    finally:
        w.stop_cleanly()  # also proves no agent crashed the worker

    assert (len(out_dlq.records), len(cust_dlq.records), len(in_dlq.records)) == (
        bad_outages,
        bad_customers,
        bad_texts,
    )
    for letter in out_dlq.json_values() + cust_dlq.json_values() + in_dlq.json_values():
        assert letter["reason"] and letter["error"]
    print(
        f"checked: dead letters outage={bad_outages} customer={bad_customers} "
        f"inbound={bad_texts}; good processed: {len(good_outages)} outages, "
        f"{len(good_customers)} customers, {len(good_texts)} texts; worker exited 0"
    )
