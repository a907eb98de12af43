"""The inbound-replies path a batch at a time (issue 4's throughput).

Why: per text, Faust's per-event path cost several times the decision itself. Every table
write went through the changelog topic's ``send_soon`` (a few thousand a second here), and
every output through ``producer.send()`` with its own future; the worker managed 11-18% of
a plain Faust agent over the same topic. Here the agent takes its events a batch at a time
(``Stream.noack_take``: nothing is acked by Faust), decides each text with the same pure
function (``streams.replies.handle_inbound``), and hands every output to its own
:class:`~topology.emitter.BatchEmitter` (aiokafka's batch API), the table changelog records
included. Only when the broker has acknowledged all of a batch's outputs are its input
events acked, so an offset is never committed before what it caused is on the broker.

Guarantees kept, and how:

- **State survives restart and rebalance.** ``optouts`` and ``reply_guard`` stay Faust
  tables; this module writes their store directly and their changelog records itself, in
  the bytes Faust would write (JSON key and value), so Faust's recovery restores them as
  before (and the dispatcher's ``ChangelogView`` reads the same records).
- **A STOP is honoured at once**: the fan-out's local view (``views.on_optout``) is updated
  while the text is handled, and the changelog record goes out with the batch (a lone STOP
  is a batch of one, sent at once).
- **Bad input is dead-lettered** record for record, through the same ``process_guarded``
  policy as every agent: transient failures retried, permanent ones dead-lettered.
- **Texts on the wrong partition** are re-keyed to their number's partition, as before.
- **Input during table recovery** is still Faust's consumer and flow control, so the
  fixes in ``topology.faust_patches`` (faust#596: ``SafeRecovery``, and fetches that
  keep the partitions active when they began) apply unchanged.
- **Input after recovery**: ``sms.inbound`` itself is read by
  :class:`topology.inbound_reader.InboundReader` (``OUTAGE_SMS_INBOUND_DIRECT``, on by
  default), a plain aiokafka consumer on the partitions Faust assigned, from the offsets
  Faust's seek left them at, committing through Faust's consumer; Faust's stream cost
  more than the decisions. Texts re-keyed to ``outage-sms-inbound-by-phone`` (rare) keep
  Faust's stream.
- **Order of changelog records**: both inbound agents (direct and re-keyed) share one
  emitter and one lock, so the records of one number's state reach its changelog partition
  in the order they were decided.

Exactly-once mode keeps the per-event path (``topic.send`` joins Faust's transaction), and
so does Tansu: its ListOffsets answer is the last batch's base offset + 1, so Faust's
table recovery would stop short of a multi-record changelog batch written here.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import orjson
from faust.stores.base import SerializedStore
from faust.streams import Stream, _current_event
from faust.types import EventT, StreamT, TableT

from schemas import RejectReason
from streams.fanout import subscriber_from_state
from streams.intake import Rejected, decode_inbound
from streams.masking import mask_phone
from streams.replies import ReplyRules, handle_inbound
from streams.reply_texts import ReplyTexts
from streams.retry import RetryPolicy

from .emitter import BatchEmitter
from .guard import process_guarded
from .topics import Role, TopicRegistry
from .views import AreaViews, LocalViews, phone_partition

__all__ = ["RepliesBatch", "StoreIO", "misplaced", "table_key"]

log = logging.getLogger(__name__)

Reject = Callable[[EventT[Any], Rejected, Role], Awaitable[None]]


def misplaced(message_id: str, key: bytes, message: Any, partitions: int) -> int | None:
    """The partition a text belongs on, when it arrived on another one (logged).

    Written by a producer with another partitioner (librdkafka's default is CRC32), a
    text must be moved to the partition that holds its number's state: handled where it
    landed, a STOP would sit beside nobody's state and the fan-out would miss it.
    """
    home = phone_partition(key, partitions)
    if message.partition == home:
        return None
    log.warning(
        "inbound %s on partition %d, its number's state is on %d: re-keyed; "
        "producers of %s should use Kafka's default (murmur2) partitioner",
        message_id,
        message.partition,
        home,
        message.topic,
    )
    return home


def table_key(key: str) -> bytes:
    """A table key as Faust encodes it (the ``json`` key serializer): a phone number is
    ASCII, so these are Faust's exact bytes, which a RocksDB look-up needs."""
    return orjson.dumps(key)


class StoreIO:
    """One table's local store, read and written for the current event's partition.

    Why not the table: ``table.get(k)`` looks a key up twice in RocksDB (``in``, then
    ``[]``), JSON-encodes the key each time and raises KeyError for a missing key; and
    ``table[k] = v`` also sends a changelog record through ``send_soon``, which this path
    writes itself through the batch producer. Values are the JSON Faust stores (orjson
    here: the same JSON), so Faust's recovery and ``table.get`` read them unchanged.
    """

    def __init__(self, table: TableT[Any, Any]) -> None:
        self._store: Any = table.data
        # RocksDB: bytes per partition database; memory: the Python objects themselves.
        self._serialized = isinstance(self._store, SerializedStore)

    def get(self, key: str, encoded_key: bytes) -> Any:
        if self._serialized:
            raw = self._store._get(encoded_key)
            return None if raw is None else orjson.loads(raw)
        return self._store.data.get(key)

    def put(self, key: str, encoded_key: bytes, value: Any, encoded_value: bytes) -> None:
        if self._serialized:
            self._store._set(encoded_key, encoded_value)
        else:
            self._store.data[key] = value


@dataclass(frozen=True, slots=True)
class _Names:
    commands: str
    audit: str
    by_phone: str
    optouts_changelog: str
    guard_changelog: str


class RepliesBatch:
    """Handles inbound texts a batch at a time; one instance serves both inbound agents."""

    MAX_INFLIGHT = 4

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        registry: TopicRegistry,
        partitions: int,
        max_record_bytes: int,
        tables: dict[str, TableT[Any, Any]],
        views: LocalViews,
        areas: AreaViews,
        texts: ReplyTexts,
        rules: ReplyRules,
        reject: Reject,
        count: Callable[[str], None],
        crash: Callable[[BaseException], Awaitable[None]],
        policy: RetryPolicy,
        max_batch: int = 1000,
        within: float = 0.05,
    ) -> None:
        self.emitter = BatchEmitter(bootstrap_servers, client_id="outage-sms-replies")
        self._names = _Names(
            commands=registry[Role.SEND_COMMANDS].name,
            audit=registry[Role.AUDIT].name,
            by_phone=registry[Role.INBOUND_BY_PHONE].name,
            optouts_changelog=registry[Role.OPTOUTS_CHANGELOG].name,
            guard_changelog=registry[Role.REPLY_GUARD_CHANGELOG].name,
        )
        self._partitions = partitions
        self._max_bytes = max_record_bytes
        self._subscribers = StoreIO(tables["subscribers"])
        self._optouts = StoreIO(tables["optouts"])
        self._guard = StoreIO(tables["reply_guard"])
        self._area_outages = tables["area_outages"]
        self._views = views
        self._areas = areas
        self._texts = texts
        self._rules = rules
        self._reject = reject
        self._count = count
        self._crash = crash
        self._policy = policy
        self.max_batch = max_batch
        # How long a batch gathers texts: a lone STOP waits at most this long (the target
        # is p99 < 1 s); in a burst, Faust's consumer fills the batch meanwhile, so fewer
        # rounds pay the per-batch costs (the flush, a log line, Faust's waits).
        self._within = within
        self._lock = asyncio.Lock()
        self._inflight: set[asyncio.Future[Any]] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        self.batches = 0
        self.texts = 0

    async def run(self, stream: StreamT[Any]) -> None:
        """The agent body: batches in, each acked only after its outputs are acknowledged.

        The broker acknowledges a batch while the next one is decided (waiting for each
        ack in turn made the path latency-bound: a few dozen texts per round trip).
        Events are acked from the acknowledgement's callback, so an idle stream's last
        batch is committed too; Faust commits per partition only up to the first
        unacked offset, so acking batches in any order is safe.
        """
        # ``noack_take`` is on the concrete Stream only (StreamT does not declare it).
        take = cast(Stream[Any], stream).noack_take
        async for events in take(self.max_batch, within=self._within):
            batch: Sequence[EventT[Any]] = events  # noack_take yields events, not values
            acked = await self.decide(batch)
            self._inflight.add(acked)
            acked.add_done_callback(partial(self._on_acked, stream, batch))
            if len(self._inflight) > self.MAX_INFLIGHT:
                # Back-pressure: never more than a few batches' outputs unacknowledged.
                await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)

    async def decide(self, batch: Sequence[Any]) -> asyncio.Future[Any]:
        """Decide a batch and hand all its outputs to the producer; the future is the
        broker's acknowledgement of them, before which no input offset may be committed.

        ``batch``: Faust events, or anything with their ``key``, ``value`` and
        ``message`` (topic, partition, offset, timestamp in seconds):
        :class:`topology.inbound_reader.InboundReader` reads without Faust's stream."""
        async with self._lock:
            try:
                await self._handle(batch)
                return await self.emitter.send_open()
            except Exception as exc:
                # Retries exhausted, or the producer refused the batch: stop the worker
                # with the batch uncommitted, so it is decided again after the restart. A
                # reader that merely raised would stall while the worker stayed up.
                log.critical("stopping the worker: %r", exc)
                await self._crash(exc)
                raise

    def _on_acked(
        self, stream: StreamT[Any], batch: Sequence[EventT[Any]], acked: asyncio.Future[Any]
    ) -> None:
        self._inflight.discard(acked)
        exc = None if acked.cancelled() else acked.exception()
        if exc is not None or acked.cancelled():
            # Never acked: the batch is read and decided again after the restart.
            log.critical("stopping the worker: a reply output was not written: %r", exc)
            task = asyncio.ensure_future(self._crash(exc or RuntimeError("send cancelled")))
        else:
            self.batches += 1
            self.texts += len(batch)
            task = asyncio.ensure_future(_ack_all(stream, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, events: Sequence[EventT[Any]]) -> None:
        changes: list[str] = []

        async def each() -> AsyncIterator[EventT[Any]]:
            for event in events:
                yield event

        async def one(event: EventT[Any]) -> None:
            # Faust's stores find a key's partition (rocksdb: its database) through the
            # current event, which Faust sets per event only in its own iteration.
            _current_event.set(weakref.ref(event))
            await self._one(event, changes)

        async def letter(event: EventT[Any], exc: BaseException) -> None:
            rejected = Rejected(RejectReason.PROCESSING_ERROR, repr(exc))
            await self._reject(event, rejected, Role.INBOUND_DLQ)

        try:
            await process_guarded(each(), one, letter, self._policy)
        finally:
            _current_event.set(None)
            if changes:
                # One line per batch, not per text: the per-text line was 7% of the CPU.
                # Every change is also in the audit with its time, message id and words.
                log.info("opt-out changes: %s", ", ".join(changes))

    async def _one(self, event: EventT[Any], changes: list[str]) -> None:
        decoded = decode_inbound(event.key, event.value, self._max_bytes)
        if isinstance(decoded, Rejected):
            await self._reject(event, decoded, Role.INBOUND_DLQ)
            return
        sms = decoded.record
        phone = sms.from_
        key = phone.encode()
        partition = event.message.partition
        home = misplaced(sms.message_id, key, event.message, self._partitions)
        if home is not None:
            await self.emitter.add(self._names.by_phone, home, [(key, event.value)])
            return
        if not self._areas.built:
            self._areas.build(self._area_outages.items())
        encoded = table_key(phone)  # the same bytes in every table and changelog
        state = self._subscribers.get(phone, encoded)
        out = handle_inbound(
            sms,
            partition,
            self._optouts.get(phone, encoded),
            self._guard.get(phone, encoded),
            subscriber_from_state(phone, state) if state else None,
            self._areas.outages_for(partition),
            self._texts,
            self._rules,
        )
        # Outputs first, state after: a transient failure part way through is retried
        # from the same state (a duplicate output at worst, never a lost one).
        add = self.emitter.add
        if out.command is not None:
            await add(self._names.commands, partition, [(key, out.command[1])])
        await add(self._names.audit, partition, _audits(key, out.audits))
        optout = orjson.dumps(out.optout) if out.optout_changed else b""
        if out.optout_changed:
            await add(self._names.optouts_changelog, partition, [(encoded, optout)])
        guard = orjson.dumps(out.guard)
        await add(self._names.guard_changelog, partition, [(encoded, guard)])
        if out.optout_changed:
            self._optouts.put(phone, encoded, out.optout, optout)
            self._views.on_optout(partition, phone, out.optout)
            changes.append(f"{out.intent.intent.value} {mask_phone(phone)} ({sms.message_id})")
        self._guard.put(phone, encoded, out.guard, guard)
        self._count(out.intent.intent.value)


async def _ack_all(stream: StreamT[Any], batch: Sequence[EventT[Any]]) -> None:
    for event in batch:
        await stream.ack(event)


def _audits(key: bytes, records: Iterable[Any]) -> list[tuple[bytes, bytes]]:
    return [(key, r.to_bytes()) for r in records]
