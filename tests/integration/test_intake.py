"""Bad input never crashes an agent and is never silently dropped (real broker, real worker)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaError

from outage_sms.admin import ensure_topics
from tests import builders
from tests.kafka_helpers import TopicReader, WorkerProcess, produce
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

pytestmark = pytest.mark.integration

Reader = Callable[[Role], TopicReader]

NOW = "2026-11-22T20:00:00Z"
PHONE_A = "+14155550101"
PHONE_B = "+14155550102"
PHONE_C = "+14155550103"
OURS = "+14155550100"


def accounts(reader: TopicReader, phone: str) -> dict[str, Any]:
    """The customer accounts on one number in the subscriber table."""
    return dict(reader.table()[phone]["customers"])


def outage(oid: str, version: int, **over: object) -> bytes:
    fields = {"summary": "Power outage", "eta": "2026-11-22T23:00:00Z", "occurred_at": NOW}
    return builders.outage(oid, version, **{**fields, **over})[1]


def without(value: bytes, field: str) -> bytes:
    rec = orjson.loads(value)
    del rec[field]
    return orjson.dumps(rec)


def customer(cid: str, phone: str, **over: object) -> bytes:
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
    return orjson.dumps(rec)


def inbound(mid: str, sender: str, **over: object) -> bytes:
    rec = {"message_id": mid, "from": sender, "to": OURS, "body": "STATUS", "received_at": NOW}
    rec.update(over)
    return orjson.dumps(rec)


@pytest.fixture
async def worker(settings: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    await ensure_topics(settings)
    w = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        yield w
    finally:
        w.stop_cleanly()


def reasons(r: TopicReader) -> Counter[str]:
    return Counter(v["reason"] for v in r.json_values())


async def test_every_kind_of_bad_input_lands_in_its_dlq_and_later_records_are_processed(
    settings: Settings, worker: WorkerProcess, read: Reader
) -> None:
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    big = b'{"pad":"' + b"x" * (settings.max_record_bytes + 10) + b'"}'

    await produce(
        bs,
        reg[Role.OUTAGE_EVENTS].name,
        [
            (b"O1", b"{not json"),  # malformed_json
            (b"O1", outage("O1", "two")),  # wrong type -> validation
            (b"O1", orjson.dumps({"outage_id": "O1", "version": 1})),  # missing fields
            (b"O1", outage("O1", 1, status="exploded")),  # unknown enum
            (b"O1", without(outage("O1", 2, severity="life_safety"), "severity")),  # no default
            (b"O1", big),  # oversized
            (None, outage("O1", 1)),  # null key
            (b"O9", outage("O1", 1)),  # key mismatch
            (b"O1", b"[1,2,3]"),  # not an object
            (b"O1", outage("O1", 1, schema_version=2)),  # unsupported version
            (b"O1", outage("O1", 3)),  # good, after all of them
        ],
    )
    await produce(
        bs,
        reg[Role.CUSTOMER_REGIONS].name,
        [
            (b"C1", customer("C1", "+1415555")),  # invalid phone
            (b"C1", customer("C1", "4155550101")),  # not E.164
            (b"C1", customer("C1", PHONE_A, sms_consent="maybe")),  # wrong type
            (b"C1", customer("C1", PHONE_A, timezone="Mars/Base")),  # unknown zone
            (b"C1", b"\xff\xfe"),  # not UTF-8 / JSON
            (b"C1", big),  # oversized
            (b"C1", customer("C1", PHONE_A)),  # good
            (b"C2", customer("C2", PHONE_B)),  # good
        ],
    )
    await produce(
        bs,
        reg[Role.INBOUND].name,
        [
            (PHONE_C.encode(), inbound("M1", "+1999")),  # invalid phone
            (PHONE_C.encode(), inbound("M1", PHONE_C, received_at="2026-11-22T20:00:00")),  # naive
            (PHONE_C.encode(), inbound("M1", PHONE_C, body=None)),  # wrong type
            (None, inbound("M1", PHONE_C)),  # null key
            (PHONE_A.encode(), inbound("M1", PHONE_C)),  # key is not the sender
            (PHONE_C.encode(), None),  # null value
            (PHONE_C.encode(), big),  # oversized
            (PHONE_C.encode(), inbound("M2", PHONE_C)),  # good
        ],
    )

    # A compacted topic cannot hold a record without a key: Apache Kafka refuses it at the
    # broker; Tansu accepts it, and then the worker must dead-letter it.
    null_key_customer = [(None, customer("C1", PHONE_A))]
    if settings.broker_kind == "kafka":
        with pytest.raises(KafkaError):
            await produce(bs, reg[Role.CUSTOMER_REGIONS].name, null_key_customer)
    else:
        await produce(bs, reg[Role.CUSTOMER_REGIONS].name, null_key_customer)
    customer_null_keys = 0 if settings.broker_kind == "kafka" else 1

    out_dlq = await read(Role.OUTAGE_EVENTS_DLQ).until(
        lambda r: len(r.records) >= 10, what="10 outage dead letters"
    )
    assert reasons(out_dlq) == Counter(
        {
            "malformed_json": 1,
            "validation": 4,
            "oversized": 1,
            "null_key": 1,
            "key_mismatch": 1,
            "not_an_object": 1,
            "unsupported_schema_version": 1,
        }
    )
    cust_dlq = await read(Role.CUSTOMER_REGIONS_DLQ).until(
        lambda r: len(r.records) >= 6 + customer_null_keys, what="customer dead letters"
    )
    assert reasons(cust_dlq) == Counter(
        {
            "invalid_phone": 2,
            "validation": 2,
            "null_key": customer_null_keys,
            "malformed_json": 1,
            "oversized": 1,
        }
    )
    in_dlq = await read(Role.INBOUND_DLQ).until(
        lambda r: len(r.records) >= 7, what="7 inbound dead letters"
    )
    assert reasons(in_dlq) == Counter(
        {
            "invalid_phone": 1,
            "validation": 3,
            "null_key": 1,
            "key_mismatch": 1,
            "oversized": 1,
        }
    )

    # Every dead letter carries the original bytes (or a hash of what was cut) and a reason.
    for letter in out_dlq.json_values() + cust_dlq.json_values() + in_dlq.json_values():
        assert letter["error"]
        assert letter["source_topic"].startswith(settings.topic_prefix)
        if letter["value_size"]:
            assert letter["value_b64"] and letter["value_sha256"]
    assert any("severity" in v["error"] for v in out_dlq.json_values()), "never downgraded"
    oversized = [v for v in out_dlq.json_values() if v["reason"] == "oversized"][0]
    assert oversized["value_truncated"] and oversized["value_size"] == len(big)

    # The good records behind the bad ones were all processed.
    outages = await read(Role.OUTAGES_CHANGELOG).until(
        lambda r: r.table().get("O1", {}).get("version") == 3, what="outage O1 v3"
    )
    assert set(outages.table()) == {"O1"}
    subs = await read(Role.SUBSCRIBERS_CHANGELOG).until(
        lambda r: set(r.table()) == {PHONE_A, PHONE_B}, what="two subscribers"
    )
    assert subs.table()[PHONE_A]["customers"]["C1"]["regions"] == ["R1"]
    audit = await read(Role.AUDIT).until(
        lambda r: any(v.get("message_id") == "M2" for v in r.json_values()), what="M2 audited"
    )
    received = [v for v in audit.json_values() if v["decision"] == "inbound_received"]
    assert [v["message_id"] for v in received] == ["M2"]
    print(
        f"dead letters: outage={len(out_dlq.records)} customer={len(cust_dlq.records)} "
        f"inbound={len(in_dlq.records)}; good records processed: 1 outage, 2 customers, 1 sms"
    )


async def test_customer_phone_change_retracts_old_number_and_tombstone_deletes(
    settings: Settings, worker: WorkerProcess, read: Reader
) -> None:
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    topic = reg[Role.CUSTOMER_REGIONS].name
    subs = read(Role.SUBSCRIBERS_CHANGELOG)

    await produce(
        bs,
        topic,
        [
            (b"C1", customer("C1", PHONE_A)),
            (b"S1", customer("S1", PHONE_B)),
            (b"S2", customer("S2", PHONE_B, regions=["R2"])),
        ],
    )
    # S1 and S2 are on different customer partitions: wait for both, in any order.
    await subs.until(
        lambda r: set(r.table()) == {PHONE_A, PHONE_B} and len(accounts(r, PHONE_B)) == 2,
        what="A, and B shared by S1 and S2",
    )
    assert set(accounts(subs, PHONE_B)) == {"S1", "S2"}, "a shared number keeps both accounts"

    await produce(bs, topic, [(b"C1", customer("C1", PHONE_C)), (b"S1", None)])
    await subs.until(
        lambda r: set(r.table()) == {PHONE_B, PHONE_C} and set(accounts(r, PHONE_B)) == {"S2"},
        what="A retracted, C added, S1 deleted",
    )
    assert subs.table()[PHONE_C]["customers"]["C1"]["phone"] == PHONE_C


async def test_older_outage_version_never_overwrites_a_newer_one(
    settings: Settings, worker: WorkerProcess, read: Reader
) -> None:
    reg = TopicRegistry(settings)
    bs = settings.bootstrap_servers or ""
    await produce(
        bs,
        reg[Role.OUTAGE_EVENTS].name,
        [
            (b"O7", outage("O7", 2, status="updated", summary="v2")),
            (b"O7", outage("O7", 1, summary="v1 late")),
            # Same key, same partition, handled in order: once v3 is stored, v1 was handled
            # before it. Proof by what follows, not by the absence of output after a wait.
            (b"O7", outage("O7", 3, status="updated", summary="v3")),
        ],
    )
    state = await read(Role.OUTAGES_CHANGELOG).until(
        lambda r: r.table().get("O7", {}).get("version") == 3, what="O7 v3 stored"
    )
    # The changelog of one key is one partition, written in order: v1 is not in it.
    assert [orjson.loads(v or b"null")["version"] for _, v in state.records] == [2, 3]
    # v3 was copied to every partition before it was stored: the copies are all there now,
    # and v1 was copied to none (each partition sees v2, then v3).
    fanout = await read(Role.OUTAGE_FANOUT).catch_up()
    per_partition: dict[int, list[int]] = {}
    for (_, v), p in zip(fanout.records, fanout.partitions, strict=True):
        per_partition.setdefault(p, []).append(orjson.loads(v or b"null")["version"])
    assert per_partition == {p: [2, 3] for p in range(settings.partitions)}
