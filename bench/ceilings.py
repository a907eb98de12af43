"""Ceilings of this machine and broker: what the raw clients do with the same records.

Later figures (fan-out commands/s, replay records/s) are reported as a share of these,
because absolute numbers on a shared 2-core machine move from run to run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

__all__ = ["Measurement", "consumer_getmany", "make_records", "producer_batch", "producer_send"]


@dataclass(frozen=True, slots=True)
class Measurement:
    name: str
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("inf")


def make_records(n: int) -> list[tuple[bytes, bytes]]:
    """About 200-byte JSON values keyed by E.164 number, like send commands."""
    out = []
    for i in range(n):
        phone = f"+1415{i:07d}"
        value = orjson.dumps(
            {
                "command_id": f"cmd-{i:012d}",
                "kind": "alert",
                "outage_id": "OUT-1",
                "outage_version": 1,
                "from": "+14155550100",
                "to": phone,
                "body": "Power outage in your area. Est. restore 3:30 PM. Reply STOP to opt out",
                "encoding": "gsm7",
                "segments": 1,
            }
        )
        out.append((phone.encode(), value))
    return out


async def _topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def _producer(bootstrap: str, topic: str, partitions: int) -> AIOKafkaProducer:
    """A fresh topic and a started producer, the same for every producer measurement."""
    await _topic(bootstrap, topic, partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    return producer


async def producer_batch(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], partitions: int
) -> Measurement:
    """aiokafka's batch API: one batch per partition, filled until full, then sent."""
    producer = await _producer(bootstrap, topic, partitions)
    try:
        start = time.perf_counter()
        batches = {p: producer.create_batch() for p in range(partitions)}
        pending = []
        for key, value in records:
            p = hash(key) % partitions
            if batches[p].append(key=key, value=value, timestamp=None) is None:
                batches[p].close()
                pending.append(await producer.send_batch(batches[p], topic, partition=p))
                batches[p] = producer.create_batch()
                batches[p].append(key=key, value=value, timestamp=None)
        for p, batch in batches.items():
            if batch.record_count():
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*pending)
        return Measurement(
            "aiokafka producer, batch API", len(records), time.perf_counter() - start
        )
    finally:
        await producer.stop()


async def producer_send(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], partitions: int
) -> Measurement:
    """``await send()`` per message, futures gathered at the end."""
    producer = await _producer(bootstrap, topic, partitions)
    try:
        start = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        return Measurement(
            "aiokafka producer, send() per message", len(records), time.perf_counter() - start
        )
    finally:
        await producer.stop()


async def consumer_getmany(bootstrap: str, topic: str, expected: int) -> Measurement:
    """Read a topic from the start with ``getmany`` and decode every value with orjson."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + 30
        while not parts and time.monotonic() < deadline:  # metadata lags topic creation
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise RuntimeError(f"topic {topic} has no partitions in metadata")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        start = time.perf_counter()
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            for msgs in batch.values():
                for m in msgs:
                    orjson.loads(m.value or b"null")
                seen += len(msgs)
        return Measurement("aiokafka consumer, getmany + orjson", seen, time.perf_counter() - start)
    finally:
        await consumer.stop()
