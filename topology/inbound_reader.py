"""``sms.inbound`` read by a plain aiokafka consumer on the partitions Faust assigned.

Why: with Faust's stream as the input, the replies path cost 517-578 µs of worker CPU per
text and reached about half the rate of a plain Faust agent over the same topic (issue 4
wants 80%). Reading the same partitions with this consumer instead, the same decisions
cost about half that CPU (``bench/results``): Faust's consumer thread, its per-record
events and its stream queues were most of the cost, not the decisions.

Faust still owns the group: its assignor gives this worker the ``sms.inbound`` partitions
that match its tables' partitions, as before, and only the reading moves here:

- **Start**, after each recovery (``SafeRecovery._seek_then_resume``): Faust has sought
  the partitions to the group's committed offsets (or the earliest, for a new group) and
  keeps them paused; this consumer starts from those positions.
- **Commit**: a batch's offsets only once the broker has acknowledged every output of it
  (and of every batch before it on its partitions), through Faust's consumer, which is
  the group member; every ``commit_every`` seconds and at the end.
- **Stop**, at a revoke or a shutdown (``SafeTableManager``): no new batch starts at once
  (the synchronous hook Faust calls first); then the batch in hand finishes, its outputs
  are acknowledged, its offsets committed, before Faust hands the partitions on or closes
  the tables' stores (and before the worker's views are cleared). A start that a revoke
  has overtaken (the recovery of an assignment finishing while the next revoke runs) is
  refused until the next assignment.
- At least once, as before: a crash re-reads from the last commit, and the decisions
  (deterministic command ids, redelivery-aware state) make the repeat harmless.

Not used in exactly-once mode (outputs must join Faust's transaction) nor on Tansu, where
the replies keep Faust's per-event path (``topology.replies_batch``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from .replies_batch import RepliesBatch

__all__ = ["InboundReader"]

log = logging.getLogger(__name__)


class _Message:
    """What the replies path reads of a Faust ``Message``."""

    __slots__ = ("offset", "partition", "timestamp", "topic")

    def __init__(self, topic: str, partition: int, offset: int, timestamp: float | None) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp


class _Event:
    """What the replies path reads of a Faust ``Event``; weak-referenceable, as Faust's
    RocksDB store finds the current partition through a weak reference to the event."""

    __slots__ = ("__weakref__", "key", "message", "value")

    def __init__(self, key: bytes | None, value: bytes | None, message: _Message) -> None:
        self.key = key
        self.value = value
        self.message = message


class InboundReader:
    """Reads ``topics`` for :class:`RepliesBatch`; one per worker, started per generation."""

    MAX_INFLIGHT = RepliesBatch.MAX_INFLIGHT

    def __init__(
        self,
        app: Any,
        replies: RepliesBatch,
        topics: frozenset[str],
        *,
        crash: Callable[[BaseException], Awaitable[None]],
        bootstrap_servers: str,
        fetch_wait_ms: int = 500,
        commit_every: float = 2.8,
        max_records: int = 1000,
        stop_timeout: float = 10.0,
    ) -> None:
        self.topics = topics
        self._app = app
        self._replies = replies
        self._crash = crash
        self._tasks: set[asyncio.Future[Any]] = set()
        self._bootstrap = bootstrap_servers
        self._fetch_wait_ms = fetch_wait_ms
        self._commit_every = commit_every
        self._max_records = max_records
        self._stop_timeout = stop_timeout
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._halted = False
        """The read loop's stop flag."""
        self._revoked = False
        """Set by a revoke's :meth:`halt`, cleared by the next assignment's :meth:`allow`:
        no start in between."""
        self._fetching = False
        # Batches in the order read, each with the next offset of its partitions: offsets
        # become committable only in that order, once the batch's outputs are acknowledged.
        self._pending: collections.deque[tuple[asyncio.Future[Any], dict[Any, int]]] = (
            collections.deque()
        )
        self._done: dict[Any, int] = {}
        self._faust_tp: dict[tuple[str, int], Any] = {}
        self._last_commit = time.monotonic()
        self._lock = asyncio.Lock()
        self.committed: dict[Any, int] = {}
        """The last offsets this reader committed, by Faust topic-partition."""

    async def start(self, positions: Mapping[Any, int]) -> None:
        """Read the partitions in ``positions`` (Faust TPs) from those offsets."""
        async with self._lock:
            # Not expected (each revoke stops the reader); if one is left, its uncommitted
            # batches are read again from the positions given here.
            await self._stop(commit=False)
            if self._revoked or not positions:
                # Halted since the assignment these positions belong to: a revoke (or a
                # shutdown) began while its recovery was finishing. Not ours to read.
                return
            self.committed = dict(positions)
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                client_id="outage-sms-inbound",
                enable_auto_commit=False,
                fetch_max_wait_ms=self._fetch_wait_ms,
                # As Faust's consumer: an offset the broker no longer has (retention)
                # restarts at the oldest record kept, never at the end.
                auto_offset_reset="earliest",
            )
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            if self._revoked:  # a revoke began meanwhile
                await consumer.stop()
                return
            self._halted = False
            self._faust_tp = {(tp.topic, tp.partition): tp for tp in positions}
            consumer.assign([TopicPartition(tp.topic, tp.partition) for tp in positions])
            for tp, offset in positions.items():
                consumer.seek(TopicPartition(tp.topic, tp.partition), offset)
            self._consumer = consumer
            self._last_commit = time.monotonic()
            self._task = asyncio.ensure_future(self._read(consumer))
            log.info(
                "reading %s directly: partitions %s",
                ", ".join(sorted(self.topics)),
                sorted(tp.partition for tp in positions),
            )

    def allow(self) -> None:
        """A new assignment: the next :meth:`start` may read (Faust's assign step)."""
        self._revoked = False

    def halt(self) -> None:
        """No new batch from now on, and no start until the next assignment :meth:`allow`
        s it (synchronous: Faust's first step of a revoke or a shutdown)."""
        self._revoked = True
        self._stop_reading()

    def _stop_reading(self) -> None:
        self._halted = True
        if self._fetching and self._task is not None:
            self._task.cancel()  # only ever cancelled while waiting for records

    async def stop(self, commit: bool = True) -> None:
        """Finish the batch in hand, wait for its outputs, commit, close the consumer."""
        async with self._lock:
            await self._stop(commit)

    def lag(self) -> dict[Any, int]:
        """Records not yet committed, by Faust topic-partition (for the metrics)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out = {}
        for (topic, partition), tp in self._faust_tp.items():
            high = consumer.highwater(TopicPartition(topic, partition))
            if high is not None:
                out[tp] = max(0, high - self.committed.get(tp, 0))
        return out

    async def _stop(self, commit: bool) -> None:
        task, consumer = self._task, self._consumer
        if task is None or consumer is None:
            return
        self._stop_reading()  # not halt(): a start after this stop may still be allowed
        # Each wait is bounded: with the broker gone, a batch's outputs or the commit could
        # wait for as long as it is gone, and a revoke or a shutdown must not.
        await asyncio.wait({task}, timeout=self._stop_timeout)
        if not task.done():
            log.warning("stopping the inbound reader: its batch did not finish; cancelled")
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.debug("inbound reader ended with %r", task.exception())
        self._task = self._consumer = None
        pending = [f for f, _ in self._pending]
        if pending:
            done, _ = await asyncio.wait(pending, timeout=self._stop_timeout)
            if len(done) < len(pending):
                log.warning(
                    "stopping the inbound reader: %d batches not acknowledged within %.0fs "
                    "(they are read again after the rebalance)",
                    len(pending) - len(done),
                    self._stop_timeout,
                )
        self._collect()
        if commit:
            committing = asyncio.ensure_future(self._commit())
            await asyncio.wait({committing}, timeout=self._stop_timeout)
            if not committing.done():
                log.warning("stopping the inbound reader: the final commit did not return")
        self._pending.clear()
        self._done.clear()
        await consumer.stop()

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await self._read_batches(consumer)
        except Exception as exc:
            # A reader that merely ended would leave its partitions unread while the worker
            # looked healthy: stop the worker; its replacement reads from the last commit.
            log.critical("stopping the worker: the inbound reader failed: %r", exc)
            await self._crash(exc)
            raise

    async def _read_batches(self, consumer: AIOKafkaConsumer) -> None:
        decide = self._replies.decide
        while not self._halted:
            self._fetching = True
            try:
                fetched = await consumer.getmany(
                    timeout_ms=self._fetch_wait_ms, max_records=self._max_records
                )
            finally:
                self._fetching = False
            if self._halted:
                # Fetched after the revoke began: not decided, not committed, read again
                # by whoever owns the partition next.
                return
            batch: list[_Event] = []
            offsets: dict[Any, int] = {}
            for tp, records in fetched.items():
                for r in records:
                    ts = r.timestamp / 1000 if r.timestamp is not None else None
                    message = _Message(r.topic, r.partition, r.offset, ts)
                    batch.append(_Event(r.key, r.value, message))
                offsets[self._faust_tp[(tp.topic, tp.partition)]] = records[-1].offset + 1
            if batch:
                acked = await decide(batch)
                self._pending.append((acked, offsets))
                acked.add_done_callback(self._on_acked)
                self._replies.texts += len(batch)
                self._replies.batches += 1
                # Back-pressure on what the broker has not acknowledged yet (acknowledged
                # batches may wait in the queue behind an older one).
                while len(waiting := self._unacknowledged()) > self.MAX_INFLIGHT:
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if self._done and time.monotonic() - self._last_commit >= self._commit_every:
                await self._commit()

    def _unacknowledged(self) -> list[asyncio.Future[Any]]:
        return [f for f, _ in self._pending if not f.done()]

    def _on_acked(self, acked: asyncio.Future[Any]) -> None:
        if acked.cancelled() or acked.exception() is not None:
            exc = None if acked.cancelled() else acked.exception()
            # Never committed: the batch is read and decided again after the restart.
            log.critical("stopping the worker: a reply output was not written: %r", exc)
            task = asyncio.ensure_future(self._crash(exc or RuntimeError("send cancelled")))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._collect()

    def _collect(self) -> None:
        """Offsets of the acknowledged batches at the head of the queue, in order."""
        pending = self._pending
        while pending and pending[0][0].done():
            acked, offsets = pending[0]
            if acked.cancelled() or acked.exception() is not None:
                return  # never past a failed batch
            pending.popleft()
            self._done.update(offsets)

    async def _commit(self) -> None:
        self._last_commit = time.monotonic()
        if not self._done:
            return
        offsets, self._done = self._done, {}
        app = self._app
        # Faust's commit leaves out partitions no longer assigned: so does the record.
        assigned = app.consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        # Dead letters go through Faust's producer: on the broker before their offsets
        # are committed, as Faust's own commit does.
        await app.producer.flush()
        if await app.consumer._commit(offsets):
            self.committed.update(offsets)
            # Faust's bookkeeping, which the lag metric and its commit logs read.
            app.consumer._committed_offset.update(offsets)
