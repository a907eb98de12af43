"""The inbound reader's offset bookkeeping, without a broker: an offset becomes
committable only once its batch and every batch before it were acknowledged, and never
past a batch whose outputs failed. (Reading, revoking and committing on a real broker:
``tests/integration/test_replies.py``.)"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaError
from faust.types import TP

from topology.inbound_reader import InboundReader
from topology.replies_batch import RepliesBatch

P0, P1 = TP("sms.inbound", 0), TP("sms.inbound", 1)


class FakeApp:
    """Faust's producer and consumer as the reader uses them: flush, then commit."""

    def __init__(self, accept: bool = True) -> None:
        self.calls: list[Any] = []
        self.accept = accept
        self.producer = SimpleNamespace(flush=self._flush)
        self.assigned = {P0, P1}
        self.consumer = SimpleNamespace(
            _commit=self._commit, _committed_offset={}, assignment=lambda: self.assigned
        )

    async def _flush(self) -> None:
        self.calls.append("flush")

    async def _commit(self, offsets: dict[TP, int]) -> bool:
        self.calls.append(dict(offsets))
        return self.accept


def reader(app: Any = None, crashes: list[BaseException] | None = None) -> InboundReader:
    async def crash(exc: BaseException) -> None:
        if crashes is not None:
            crashes.append(exc)

    replies = cast(RepliesBatch, SimpleNamespace(texts=0, batches=0))
    return InboundReader(
        app, replies, frozenset({"sms.inbound"}), crash=crash, bootstrap_servers="unused:9092"
    )


async def test_offsets_become_committable_in_the_order_batches_were_read() -> None:
    r = reader()
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    for fut, offsets in ((first, {P0: 10}), (second, {P0: 20, P1: 5})):
        r._pending.append((fut, offsets))
        fut.add_done_callback(r._on_acked)
    second.set_result(None)
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert r._done == {}  # the first batch is not acknowledged yet
    first.set_result(None)
    await asyncio.sleep(0)
    assert r._done == {P0: 20, P1: 5}
    assert not r._pending


async def test_never_past_a_batch_whose_outputs_failed() -> None:
    crashes: list[BaseException] = []
    r = reader(crashes=crashes)
    loop = asyncio.get_running_loop()
    ok, failed, later = loop.create_future(), loop.create_future(), loop.create_future()
    for fut, offsets in ((ok, {P0: 3}), (failed, {P0: 7}), (later, {P0: 9})):
        r._pending.append((fut, offsets))
        fut.add_done_callback(r._on_acked)
    ok.set_result(None)
    failed.set_exception(RuntimeError("broker refused"))
    later.set_result(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert r._done == {P0: 3}
    assert [str(e) for e in crashes] == ["broker refused"]


async def test_a_commit_flushes_faust_s_producer_first_and_records_what_was_accepted() -> None:
    app = FakeApp()
    r = reader(app)
    r._done = {P0: 12}
    await r._commit()
    assert app.calls == ["flush", {P0: 12}]
    assert r.committed == {P0: 12} and app.consumer._committed_offset == {P0: 12}
    assert r._done == {}
    await r._commit()  # nothing new: no call
    assert app.calls == ["flush", {P0: 12}]


async def test_offsets_of_partitions_no_longer_assigned_are_left_out() -> None:
    app = FakeApp()
    app.assigned = {P1}
    r = reader(app)
    r._done = {P0: 12, P1: 3}
    await r._commit()
    assert app.calls == ["flush", {P1: 3}] and r.committed == {P1: 3}


async def test_a_refused_commit_is_not_recorded() -> None:
    app = FakeApp(accept=False)
    r = reader(app)
    r._done = {P1: 4}
    await r._commit()
    assert r.committed == {} and app.consumer._committed_offset == {}


async def test_a_start_after_a_revoke_began_is_refused_until_the_next_assignment() -> None:
    """A recovery finishing while the next revoke runs must not start reading partitions
    that are about to move (the reader would write stores another worker owns)."""
    r = reader(FakeApp())
    r.halt()  # the revoke's first step
    await r.start({P0: 5})  # the earlier assignment's recovery, finishing late
    assert r._consumer is None and r._task is None
    r.allow()  # the next assignment
    assert not r._revoked


class FakeConsumer:
    """One record per fetch, on P0; halts the reader after ``fetches``."""

    def __init__(self, r: InboundReader, fetches: int) -> None:
        self.reader, self.left, self.offset = r, fetches, 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        if self.left == 0:
            self.reader.halt()
            return {}
        self.left -= 1
        self.offset += 1
        record = SimpleNamespace(
            topic=P0.topic, partition=0, offset=self.offset, timestamp=None, key=b"k", value=b"v"
        )
        return {P0: [record]}


async def test_back_pressure_counts_only_batches_the_broker_has_not_acknowledged() -> None:
    """An old batch waiting on a slow broker holds its successors in the queue, but they
    are acknowledged: they must not count against the limit (nor may unacknowledged ones
    pass it)."""
    loop = asyncio.get_running_loop()
    acks: list[asyncio.Future[Any]] = []

    async def decide(batch: list[Any]) -> asyncio.Future[Any]:
        fut = loop.create_future()
        if acks:  # every batch but the first is acknowledged at once
            fut.set_result(None)
        acks.append(fut)
        return fut

    r = reader(FakeApp())
    r._replies = cast(RepliesBatch, SimpleNamespace(texts=0, batches=0, decide=decide))
    r._faust_tp = {(P0.topic, 0): P0}
    await asyncio.wait_for(r._read_batches(cast(Any, FakeConsumer(r, 20))), timeout=5)
    assert len(acks) == 20 and r._done == {}  # nothing committable past the first

    acks.clear()

    async def never(batch: list[Any]) -> asyncio.Future[Any]:
        acks.append(loop.create_future())
        return acks[-1]

    r2 = reader(FakeApp())
    r2._replies = cast(RepliesBatch, SimpleNamespace(texts=0, batches=0, decide=never))
    r2._faust_tp = {(P0.topic, 0): P0}
    reading = asyncio.ensure_future(r2._read_batches(cast(Any, FakeConsumer(r2, 20))))
    await turns()
    assert len(acks) == InboundReader.MAX_INFLIGHT + 1 and not reading.done()
    acks[0].set_result(None)
    await turns()
    assert len(acks) == InboundReader.MAX_INFLIGHT + 2
    reading.cancel()


async def turns(n: int = 100) -> None:
    """Let every ready task run (nothing here waits on time or I/O)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_leftover_reader_is_stopped_and_does_not_refuse_the_next_start() -> None:
    """Stopping a reader left from an earlier generation is not a revoke: the start that
    stopped it goes on (here to the consumer's start, which has no broker to reach)."""
    r = reader(FakeApp())
    stopped: list[bool] = []

    async def stop() -> None:
        stopped.append(True)

    r._consumer = cast(Any, SimpleNamespace(stop=stop))
    r._task = asyncio.ensure_future(asyncio.sleep(0))
    with pytest.raises(KafkaError):
        await r.start({P0: 5})
    assert stopped == [True] and not r._revoked
