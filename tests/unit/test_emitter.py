"""BatchEmitter's appends, which bypass ``BatchBuilder.append``, build the same batches.

No broker: the producer is never started (building batches needs none) and the emitter's
``_send`` is replaced by a recorder. The emitter on a real broker is covered by every
fan-out integration test.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.record.memory_records import MemoryRecords

from topology.emitter import BatchEmitter

Records = list[tuple[bytes | None, bytes]]


def records(n: int, size: int = 300) -> Records:
    return [(f"+1415555{i:04d}".encode(), bytes([65 + i % 26]) * size) for i in range(n)]


def parsed(batch: Any) -> list[tuple[int, bytes | None, bytes | None, list[Any]]]:
    """The records of one built batch (timestamps apart: both take the clock's)."""
    built = MemoryRecords(bytes(batch._build())).next_batch()
    assert built is not None
    return [(r.offset, r.key, r.value, list(r.headers)) for r in built]


class Recorder(BatchEmitter):
    def __init__(self, max_batch_bytes: int) -> None:
        super().__init__("localhost:1", max_batch_bytes=max_batch_bytes)
        self.sent: list[tuple[str, int, Any]] = []

    async def _send(self, batch: Any, topic: str, partition: int) -> None:
        batch.close()
        self.sent.append((topic, partition, batch))


async def emitted(data: list[Records], max_batch_bytes: int) -> tuple[Recorder, list[Any]]:
    emitter = Recorder(max_batch_bytes)
    emitter._producer = AIOKafkaProducer(
        bootstrap_servers="localhost:1", max_batch_size=max_batch_bytes
    )
    emitter._started = True
    for chunk in data:
        await emitter.add("t", 3, chunk)
    batches = [b for _t, _p, b in emitter.sent]
    open_batch = emitter._open.get(("t", 3))
    if open_batch is not None and open_batch.record_count():
        batches.append(open_batch)
    await emitter._producer.stop()
    return emitter, batches


async def reference(data: list[Records], max_batch_bytes: int) -> list[Any]:
    """The same records through aiokafka's own ``BatchBuilder.append``."""
    producer = AIOKafkaProducer(bootstrap_servers="localhost:1", max_batch_size=max_batch_bytes)
    batches = [producer.create_batch()]
    for key, value in (r for chunk in data for r in chunk):
        if batches[-1].append(key=key, value=value, timestamp=None) is None:
            batches.append(producer.create_batch())
            assert batches[-1].append(key=key, value=value, timestamp=None) is not None
    await producer.stop()
    return batches


@pytest.mark.parametrize("max_batch_bytes", [16 * 1024, 512 * 1024])
async def test_batches_equal_batch_builder_append(max_batch_bytes: int) -> None:
    data = [records(700), records(1), records(1300)]
    emitter, ours = await emitted(data, max_batch_bytes)
    theirs = await reference(data, max_batch_bytes)
    assert [b.record_count() for b in ours] == [b.record_count() for b in theirs]
    assert [parsed(b) for b in ours] == [parsed(b) for b in theirs]
    assert emitter.records == 2001
    if max_batch_bytes == 16 * 1024:
        assert len(ours) > 2  # full batches went out as they filled


async def test_a_record_larger_than_a_batch_gets_one_of_its_own() -> None:
    """As with ``BatchBuilder.append``: aiokafka's builder takes any first record."""
    data: list[Records] = [[(b"a", b"small"), (b"b", b"x" * 40_000), (b"c", b"small")]]
    _emitter, ours = await emitted(data, 16 * 1024)
    theirs = await reference(data, 16 * 1024)
    assert [b.record_count() for b in ours] == [b.record_count() for b in theirs] == [1, 1, 1]
    assert [parsed(b) for b in ours] == [parsed(b) for b in theirs]


class CountingProducer:
    """Takes every batch at once; the ack completes when the test says so."""

    def __init__(self) -> None:
        self.taken: list[Any] = []
        self.acks: list[asyncio.Future[Any]] = []

    async def send_batch(self, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        self.taken.append(batch)
        self.acks.append(asyncio.get_running_loop().create_future())
        return self.acks[-1]

    async def stop(self) -> None:
        pass


async def test_batches_go_round_robin_over_connections_and_flush_waits_for_all() -> None:
    emitter = BatchEmitter("localhost:1", max_batch_bytes=1024, connections=3)
    builder = AIOKafkaProducer(bootstrap_servers="localhost:1", max_batch_size=1024)
    producers = [CountingProducer() for _ in range(3)]
    emitter._producers = producers
    emitter._producer = builder  # builds the batches
    emitter._started = True
    sent = records(9, size=400)  # two per 1 KiB batch: four full, one open
    await emitter.add("t", 0, sent)
    acked = await emitter.send_open()
    assert [len(p.taken) for p in producers] == [2, 2, 1]
    got = [r[1] for p in producers for b in p.taken for r in parsed(b)]
    assert sorted(got) == sorted(k for k, _ in sent)  # every record once, any order
    for p in producers[:2]:
        for ack in p.acks:
            ack.set_result(None)
    await asyncio.sleep(0)
    assert not acked.done()  # the third connection's batch is not acknowledged yet
    producers[2].acks[0].set_result(None)
    await asyncio.wait_for(acked, 1)
    emitter._producers = [builder]
    await builder.stop()


async def test_a_batch_closed_elsewhere_is_never_appended_to_or_sent_again() -> None:
    """The direct appends skip ``BatchBuilder.append``'s closed check: ``add`` makes it."""
    emitter = Recorder(16 * 1024)
    emitter._producer = AIOKafkaProducer(bootstrap_servers="localhost:1", max_batch_size=16 * 1024)
    emitter._started = True
    await emitter.add("t", 0, records(2))
    first = emitter._open[("t", 0)]
    await emitter._send(first, "t", 0)  # sent (and closed) by someone else
    await emitter.add("t", 0, records(1))
    assert emitter._open[("t", 0)] is not first
    assert first.record_count() == 2
    await emitter.send_open()
    assert [b.record_count() for _t, _p, b in emitter.sent] == [2, 1]  # first sent once
    await emitter._producer.stop()
