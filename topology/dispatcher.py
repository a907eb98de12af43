"""The dispatcher: send commands out through the provider, each sender at its own rate.

Plain aiokafka, not a Faust agent, for three reasons the issue's guarantees force:

- The rate limit belongs to the sender number and must hold across processes. A router
  re-keys ``sms.send-commands`` (keyed by recipient) into the internal dispatch topic keyed
  by sender, and a consumer group over that topic gives every sender exactly one owner.
- One partition interleaves fast and slow senders, so records finish out of offset order
  (``streams.dispatch_queue``); Faust commits whatever the agent has iterated past.
- Deferred commands and retries wait in memory for minutes or hours, and the ledger is
  written from send tasks, outside any stream event, where Faust tables refuse writes.

At most once per ``command_id``: before each request the ledger (a compacted topic,
partition for partition beside the dispatch topic) records ``sending`` and the broker
acknowledges it; the outcome replaces it. An owner that finds ``sending`` after a crash
does not send again: the command ends ``failed: outcome_unknown``. A sender's next few
intents are written ahead, as many as it sends in twice the broker's ack time (at most
``intent_horizon``), so that one ack round trip per command does not cap its rate; a
crash fails those few as ``outcome_unknown`` too. Offsets are committed up to the lowest
command without an acknowledged terminal outcome.

At send time the dispatcher reads two replicated views, each a plain consumer of a Faust
table's changelog: opt-outs (a STOP that arrived after the fan-out still stops the text)
and outages (a resolved or superseded outage makes queued texts stale).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from schemas import AuditRecord, DeliveryOutcome, SendCommand
from streams.dispatch import (
    Attempts,
    Defer,
    DispatchRules,
    Reason,
    Retry,
    SendPolicy,
    Terminal,
    after_result,
    decide,
    message_from_command,
    status_record,
)
from streams.dispatch_queue import (
    DONE,
    OUTCOME,
    RETRY,
    SENDING,
    Duplicate,
    Fresh,
    Interrupted,
    Item,
    OffsetTracker,
    Republish,
    SenderQueue,
    ledger_entry,
    ledger_verdict,
)
from streams.errors import ConfigurationError
from streams.first_contact import carries_footer, settle, unalerted, with_owed_footer
from streams.intake import Rejected, dead_letter, decode_command
from streams.masking import mask_phone
from streams.provider import Provider, ProviderResult, Transient
from streams.ratelimit import ClientLimit, RateLimiter, SenderLimit
from streams.senders import parse_pool

from .emitter import BatchEmitter
from .rules import dispatch_rules
from .settings import Settings
from .topics import Role, TopicRegistry
from .views import phone_partition

__all__ = ["ChangelogView", "Dispatcher", "sender_of"]

log = logging.getLogger(__name__)

#: Ledger keys of per-sender limiter state; command ids never start with a NUL.
_LIMITER_KEY = "\x00limiter\x00"

#: Records decoded or re-keyed between yields to the event loop. A fetched batch of
#: thousands (tens of microseconds each) would otherwise hold the loop for a fraction of a
#: second, and pacing at burst 1 never wins back the time a due sender waited.
_YIELD_EVERY = 200


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def sender_of(value: bytes | None) -> str:
    """The command's sender, for routing; anything unreadable goes to partition of ''."""
    if not value:
        return ""
    try:
        sender = orjson.loads(value).get("from")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return sender if isinstance(sender, str) else ""


def _changelog_key(key: bytes | None) -> str | None:
    if key is None:
        return None
    # Faust writes str keys raw; tolerate a JSON-quoted key as well.
    if key[:1] == b'"':
        with contextlib.suppress(orjson.JSONDecodeError):
            value = orjson.loads(key)
            return value if isinstance(value, str) else None
    return key.decode("utf-8", "replace")


class ChangelogView:
    """A whole Faust table, replicated into a dict by reading its changelog.

    Faust's GlobalTable has an open bug where other instances miss updates; a plain
    consumer of the compacted changelog, assigned every partition, does not, and follows
    the writer within milliseconds (``delays`` keeps the latest samples: record time to
    applied here).
    """

    def __init__(self, bootstrap: str, topic: str, name: str) -> None:
        self.topic = topic
        self.name = name
        self.data: dict[str, Any] = {}
        self.delays: deque[float] = deque(maxlen=10_000)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            client_id=f"outage-sms-view-{name}",
        )
        self._end: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def get(self, key: str) -> Any:
        return self.data.get(key)

    async def start(self) -> None:
        await self._consumer.start()
        parts = await _partitions(self._consumer, self.topic)
        if not parts:
            await self._consumer.stop()
            raise ConfigurationError(
                f"changelog {self.topic} does not exist: run `outage-sms topics create` "
                "(or start the worker once) before the dispatcher"
            )
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._end = await self._consumer.end_offsets(tps)
        self._task = asyncio.create_task(self._run(), name=f"view-{self.name}")

    async def caught_up(self) -> None:
        """Returns once everything written before ``start()`` has been applied."""
        await self._ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=10_000)
            now_ms = time.time() * 1000
            for records in batches.values():
                for r in records:
                    key = _changelog_key(r.key)
                    if key is None:
                        continue
                    if r.value is None:
                        self.data.pop(key, None)
                    else:
                        try:
                            self.data[key] = orjson.loads(r.value)
                        except orjson.JSONDecodeError:
                            log.error("%s: unreadable changelog value at %d", self.name, r.offset)
                            continue
                    if self._ready.is_set():
                        self.delays.append(max(0.0, now_ms - r.timestamp) / 1000)
            if not self._ready.is_set() and all(
                await asyncio.gather(
                    *(self._position_at_end(tp, end) for tp, end in self._end.items())
                )
            ):
                log.info("%s view caught up: %d keys", self.name, len(self.data))
                self._ready.set()

    async def _position_at_end(self, tp: TopicPartition, end: int) -> bool:
        position: int = await self._consumer.position(tp)
        return position >= end


async def _partitions(consumer: AIOKafkaConsumer, topic: str, wait: float = 30.0) -> set[int]:
    """The topic's partitions; a topic created a moment ago may take a few metadata
    refreshes to appear (Apache Kafka answers LEADER_NOT_AVAILABLE meanwhile)."""
    deadline = time.monotonic() + wait
    while True:
        parts: set[int] = set(consumer.partitions_for_topic(topic) or ())
        if parts or time.monotonic() > deadline:
            return parts
        # aiokafka has no public way to refresh the metadata partitions_for_topic reads.
        await consumer._client.force_metadata_update()  # noqa: SLF001
        await asyncio.sleep(0.2)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._d = dispatcher

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._d.release(sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._d.adopt(sorted(tp.partition for tp in assigned))


class Dispatcher:
    """One dispatcher process: router, per-sender schedulers, sends, ledger, status."""

    def __init__(
        self,
        settings: Settings,
        provider: Provider,
        *,
        clock: Callable[[], float] = time.time,
        policy: SendPolicy | None = None,
        rules: DispatchRules | None = None,
        intent_horizon: float = 0.25,
    ) -> None:
        """``intent_horizon``: at most this many seconds of a sender's sends have their
        ``sending`` intent written ahead (see ``_write_intents``)."""
        s = settings
        if not s.bootstrap_servers:
            raise ConfigurationError("the dispatcher needs KAFKA_BOOTSTRAP_SERVERS")
        self.settings = s
        self.registry = TopicRegistry(s)
        self.provider = provider
        self._clock = clock
        self._policy = policy or SendPolicy()
        self._rules = rules or dispatch_rules(s)
        self._pool = parse_pool(s.senders)
        self._usable = {sender.id for sender in self._pool.senders if sender.usable}
        self._warned_senders: set[str] = set()
        self.limiter = RateLimiter(
            [
                replace(
                    SenderLimit.from_sender(sender, s.sender_burst),
                    rate=sender.rate * s.sender_rate_share,
                )
                for sender in self._pool.senders
            ],
            ClientLimit(
                s.client_requests_per_minute,
                60.0,
                min(10.0, s.client_requests_per_minute / 2),
            ),
        )
        self._n = s.partitions
        self._topic = {role: self.registry[role].name for role in Role}
        self.optouts = ChangelogView(
            s.bootstrap_servers, self._topic[Role.OPTOUTS_CHANGELOG], "optouts"
        )
        self.outages = ChangelogView(
            s.bootstrap_servers, self._topic[Role.OUTAGES_CHANGELOG], "outages"
        )
        self._producer: AIOKafkaProducer | None = None
        self._router_emitter = BatchEmitter(s.bootstrap_servers, client_id="outage-sms-router")
        self._router: AIOKafkaConsumer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._tracker = OffsetTracker()
        self._queues: dict[str, SenderQueue] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._sender_tasks: dict[str, asyncio.Task[None]] = {}
        self._sending: dict[int, set[asyncio.Task[None]]] = {}
        self._pending_writes: set[asyncio.Future[Any]] = set()
        self._ledger: dict[int, dict[str, Any]] = {}
        self._inflight: set[str] = set()
        self._intent_acks: dict[str, asyncio.Future[Any]] = {}
        """command id -> the broker's ack of its ``sending`` intent, written ahead."""
        self._intent_horizon = intent_horizon
        self._ack_latency = 0.005
        """Moving average of an intent's ack time, seconds: how far ahead to write."""
        self._active: dict[str, int] = {}
        """Command ids queued, waiting or in flight here -> their partition."""
        self._owned: set[int] = set()
        self._releases = 0
        """Counts releases: a batch being read stops at one (the partition may be gone)."""
        self._pending_footers: dict[int, dict[str, int]] = {}
        """partition -> number -> its queued texts that carry the opt-out footer."""
        self._releasing: set[int] = set()
        """Partitions being released: nothing read from them is queued any more (a sender
        task started for one meanwhile would outlive the release and send for a partition
        another dispatcher owns)."""
        self._paused: set[int] = set()
        self._committed: dict[int, int] = {}
        self._slots = asyncio.Semaphore(s.dispatch_concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: BaseException | None = None
        self._stopped = asyncio.Event()
        self.counts: Counter[str] = Counter()
        """outcome[:reason] -> commands; plus ``requests``, ``duplicates``, ``routed``."""
        self.rate_waits: defaultdict[str, float] = defaultdict(float)
        """sender -> seconds its queue head waited for the rate (the throughput wall)."""

    # ---- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers,
            client_id="outage-sms-dispatcher",
            acks="all",
            linger_ms=2,
        )
        await self._producer.start()
        await self.optouts.start()
        await self.outages.start()
        await asyncio.wait_for(
            asyncio.gather(self.optouts.caught_up(), self.outages.caught_up()), timeout=600
        )
        group = f"{s.faust_id}-dispatcher"
        self._router = AIOKafkaConsumer(
            self._topic[Role.SEND_COMMANDS],
            bootstrap_servers=s.bootstrap_servers,
            group_id=f"{group}-router",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            client_id="outage-sms-router",
            **self._group_timeouts(),
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            client_id="outage-sms-dispatcher",
            **self._group_timeouts(),
        )
        self._consumer.subscribe([self._topic[Role.DISPATCH]], listener=_Rebalance(self))
        await self._router.start()
        await self._consumer.start()
        self._tasks = [
            asyncio.create_task(self._guard(self._route()), name="dispatch-router"),
            asyncio.create_task(self._guard(self._fetch()), name="dispatch-fetch"),
            asyncio.create_task(self._guard(self._commit_loop()), name="dispatch-commit"),
        ]
        log.info(
            "dispatcher started: provider %s, %d senders, %d in flight at most",
            self.provider.name,
            len(self._usable),
            s.dispatch_concurrency,
        )

    def _group_timeouts(self) -> dict[str, int]:
        session, heartbeat, rebalance = self.settings.group_timeouts()
        return {
            "session_timeout_ms": int(session * 1000),
            "heartbeat_interval_ms": int(heartbeat * 1000),
            "rebalance_timeout_ms": int(rebalance * 1000),
        }

    async def wait_stopped(self) -> None:
        """Returns when ``stop()`` ran or a task failed (then raises its error)."""
        await self._stopped.wait()
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        """Finish what is in flight, publish its outcomes, commit, leave the groups."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._router is not None:
            await self._router.stop()
        await self._router_emitter.stop()
        if self._consumer is not None:
            await self.release(sorted(self._owned))
            await self._consumer.stop()
        await self.optouts.stop()
        await self.outages.stop()
        if self._producer is not None:
            await self._producer.stop()
        self._stopped.set()

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.critical("dispatcher stopping: %r", exc)
            self._failure = exc
            self._stopped.set()
            raise

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            log.critical("dispatcher stopping: %r", exc)
            self._failure = exc
        self._stopped.set()

    # ---- routing: recipient-keyed commands to sender-keyed dispatch partitions --------

    async def _route(self) -> None:
        assert self._router is not None  # noqa: S101 (start() built it)
        topic = self._topic[Role.DISPATCH]
        while True:
            batches = await self._router.getmany(timeout_ms=200, max_records=20_000)
            if not batches:
                continue
            n = 0
            for records in batches.values():
                for r in records:
                    sender = sender_of(r.value).encode()
                    partition = phone_partition(sender, self._n)
                    await self._router_emitter.add(topic, partition, [(sender, r.value or b"")])
                    n += 1
                    if n % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # let due senders go (see _YIELD_EVERY)
            await self._router_emitter.flush()
            with contextlib.suppress(CommitFailedError):
                await self._router.commit()
            self.counts["routed"] += n

    # ---- ownership ------------------------------------------------------------------

    async def adopt(self, partitions: list[int]) -> None:
        """New owner of these dispatch partitions: load their ledger, then start reading."""
        started = time.perf_counter()
        # aiokafka fetches while this listener runs: hold the partitions until the ledger
        # is loaded, or a command could be judged without its history.
        assert self._consumer is not None  # noqa: S101
        tps = [TopicPartition(self._topic[Role.DISPATCH], p) for p in partitions]
        self._consumer.pause(*tps)
        loaded = await self._load_ledger(partitions)
        now = self._clock()
        for sender in self._pool.senders:
            if phone_partition(sender.id.encode(), self._n) not in partitions:
                continue
            state = loaded.pop(sender.id, None)
            if state:
                self.limiter.restore(sender.id, state)
            # The last owner may have just spent the burst; start as if we had.
            limit = self.limiter.limits[sender.id]
            self.limiter.restore(sender.id, {"tat": now + limit.burst / limit.rate})
        self._owned.update(partitions)
        self._releasing.difference_update(partitions)
        self._consumer.resume(*tps)
        log.info(
            "dispatch partitions %s adopted: %d ledger entries in %.2fs",
            partitions,
            sum(len(self._ledger.get(p, {})) for p in partitions),
            time.perf_counter() - started,
        )

    async def release(self, partitions: list[int]) -> None:
        """Losing these partitions: finish their requests, publish, commit, forget."""
        owned = [p for p in partitions if p in self._owned]
        if not owned:
            return
        self._releasing.update(owned)
        self._releases += 1
        try:
            senders = [q.sender for q in self._queues.values() if q.partition in owned]
            for sender in senders:
                task = self._sender_tasks.pop(sender, None)
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            sending = [t for p in owned for t in self._sending.pop(p, set())]
            if sending:
                await asyncio.wait(sending, timeout=60)
            # A head of queue whose intent is written but whose request never left: say so, or
            # the next owner would count it as possibly sent and fail it as outcome unknown.
            for sender in senders:
                for item in self._queues[sender].items() if sender in self._queues else ():
                    if item.intent:
                        self._retract_intent(item)
            await self._drain_writes()
            self._persist_limits(senders)
            await self._commit(owned)
            for sender in senders:
                self._queues.pop(sender, None)
                self._wake.pop(sender, None)
            for cid in [cid for cid, p in self._active.items() if p in owned]:
                del self._active[cid]
            for p in owned:
                self._tracker.forget(p)
                self._ledger.pop(p, None)
                self._pending_footers.pop(p, None)
                self._committed.pop(p, None)
                self._paused.discard(p)
        finally:
            # Also if the release failed part way: a partition left "releasing" would drop
            # every record of it for good, should it come back to this dispatcher.
            self._owned.difference_update(owned)
            self._releasing.difference_update(owned)
            self._releases += 1
        log.info("dispatch partitions %s released", owned)

    async def _load_ledger(self, partitions: list[int]) -> dict[str, dict[str, Any]]:
        """Read each ledger partition to its end; returns the limiter states found."""
        topic = self._topic[Role.DISPATCH_LEDGER]
        tps = [TopicPartition(topic, p) for p in partitions]
        limits: dict[str, dict[str, Any]] = {}
        for p in partitions:
            self._ledger[p] = {}
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            client_id="outage-sms-ledger",
        )
        await reader.start()
        try:
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            end = await reader.end_offsets(tps)
            remaining = {tp for tp in tps if end[tp] > 0}
            while remaining:
                batches = await reader.getmany(*remaining, timeout_ms=500, max_records=50_000)
                for tp, records in batches.items():
                    book = self._ledger[tp.partition]
                    for r in records:
                        key = (r.key or b"").decode("utf-8", "replace")
                        value = orjson.loads(r.value) if r.value else None
                        if key.startswith(_LIMITER_KEY):
                            if value:
                                limits[key[len(_LIMITER_KEY) :]] = value
                        elif value is None:
                            book.pop(key, None)
                        else:
                            book[key] = value
                for tp in list(remaining):
                    if await reader.position(tp) >= end[tp]:
                        remaining.discard(tp)
        finally:
            await reader.stop()
        return limits

    # ---- reading commands -----------------------------------------------------------

    async def _fetch(self) -> None:
        assert self._consumer is not None  # noqa: S101
        limit = self.settings.dispatch_read_ahead
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5_000)
            # One epoch per fetched batch: after a release (eager rebalancing revokes every
            # partition) the rest of the batch is stale; positions restart at the commits.
            epoch = self._releases
            for tp, records in batches.items():
                if self._releases != epoch:
                    break
                if tp.partition in self._releasing:
                    continue  # its next owner reads it from the committed offset
                if tp.partition not in self._owned:
                    # Fetched in the instant before adopt() paused it: read it again later.
                    if records:
                        self._consumer.seek(tp, records[0].offset)
                    continue
                for i, r in enumerate(records, 1):
                    if i % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # let due senders go (see _YIELD_EVERY)
                    if self._releases != epoch:
                        break  # a release meanwhile: the owner re-reads from the commit
                    await self._accept(tp.partition, r.offset, r.key, r.value, r.timestamp)
            for p in list(self._owned):
                tp = TopicPartition(self._topic[Role.DISPATCH], p)
                held = self._tracker.open(p) - self._waiting(p)
                if held >= limit and p not in self._paused:
                    self._consumer.pause(tp)
                    self._paused.add(p)
                elif held < limit // 2 and p in self._paused:
                    self._consumer.resume(tp)
                    self._paused.discard(p)

    def _waiting(self, partition: int) -> int:
        return sum(q.waiting for q in self._queues.values() if q.partition == partition)

    async def _accept(
        self, p: int, offset: int, key: bytes | None, value: bytes | None, ts: int
    ) -> None:
        if p in self._releasing:
            return  # its next owner reads it from the committed offset
        self._tracker.seen(p, offset)
        decoded = decode_command(key, value, self.settings.max_record_bytes)
        if isinstance(decoded, Rejected):
            await self._dead_letter(p, offset, key, value, ts, decoded)
            return
        cmd = decoded.record
        item = Item(p, offset, cmd)
        if cmd.command_id in self._active:
            await self._duplicate(item, self._clock())
            return
        verdict = ledger_verdict(self._ledger.get(p, {}).get(cmd.command_id))
        now = self._clock()
        if isinstance(verdict, Duplicate):
            await self._duplicate(item, now)
        elif isinstance(verdict, Republish):
            entry = self._ledger[p][cmd.command_id]
            done = {**entry, "s": DONE}
            done.pop("status", None)
            self._ledger[p][cmd.command_id] = done
            publish = self._publish(p, cmd.command_id, cmd.to, verdict.status, None, done)
            self._write(p, offset, [asyncio.ensure_future(publish)])
        elif isinstance(verdict, Interrupted):
            await self._finish(
                item,
                Terminal(
                    DeliveryOutcome.FAILED,
                    Reason.OUTCOME_UNKNOWN,
                    "the dispatcher stopped while a request for it was in flight",
                    attempts=verdict.attempts,
                ),
                now,
            )
        else:
            assert isinstance(verdict, Fresh)  # noqa: S101
            item.attempts = verdict.attempts
            if carries_footer(cmd):
                item.introduces = True
                pending = self._pending_footers.setdefault(p, {})
                pending[cmd.to] = pending.get(cmd.to, 0) + 1
            self._queue(item)

    def _queue(self, item: Item) -> None:
        self._active[item.cmd.command_id] = item.partition
        sender = item.cmd.from_
        q = self._queues.get(sender)
        if q is None:
            q = self._queues[sender] = SenderQueue(sender, item.partition)
            self._wake[sender] = asyncio.Event()
        q.push(item)
        self._wake[sender].set()
        if sender not in self._sender_tasks:
            self._sender_tasks[sender] = asyncio.create_task(
                self._guard(self._run_sender(q)), name=f"sender-{sender}"
            )

    async def _dead_letter(
        self,
        p: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        ts: int,
        rejected: Rejected,
    ) -> None:
        assert self._producer is not None  # noqa: S101
        letter = dead_letter(
            rejected,
            topic=self._topic[Role.DISPATCH],
            partition=p,
            offset=offset,
            timestamp=_utc(ts / 1000) if ts and ts > 0 else None,
            key=key,
            value=value,
            now=_utc(self._clock()),
        )
        log.warning(
            "rejected %s[%d]@%d: %s", self._topic[Role.DISPATCH], p, offset, rejected.reason.value
        )
        self.counts[f"dead_letter:{rejected.reason.value}"] += 1
        fut = await self._producer.send(
            self._topic[Role.SEND_COMMANDS_DLQ], letter.to_bytes(), key=key, partition=0
        )
        self._write(p, offset, [fut])

    # ---- one sender's turn ----------------------------------------------------------

    async def _run_sender(self, q: SenderQueue) -> None:
        wake = self._wake[q.sender]
        while True:
            now = self._clock()
            item = q.peek(now)
            if item is None:
                due = q.next_due()
                wake.clear()
                timeout = None if due is None else max(0.0, due - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)
                continue
            await self._slots.acquire()
            try:
                turn = await self._turn(q, item)
            except BaseException:
                self._slots.release()
                raise
            if turn is True:
                continue  # the send task owns the slot now
            self._slots.release()
            if turn:
                await asyncio.sleep(turn)

    async def _turn(self, q: SenderQueue, item: Item) -> bool | float:
        """Decide and take the rate; True: a send task has it (and the slot), False:
        finished or moved, a number: seconds to wait for the sender's rate."""
        cmd = item.cmd
        now = self._clock()
        sender = cmd.from_
        if self._is_done(item):
            q.pop(item)
            self._settle_pending(item, Terminal(DeliveryOutcome.SUPPRESSED, Reason.DUPLICATE))
            await self._duplicate(item, now)
            return False
        if sender not in self.limiter.limits or sender not in self._usable:
            q.pop(item)
            why = "not in the sender pool" if sender not in self.limiter.limits else "not active"
            if sender not in self._warned_senders:
                # Once per sender: a pool that differs from the worker's is a configuration
                # error worth a log line, not only an audit record per command.
                self._warned_senders.add(sender)
                log.error(
                    "commands name sender %s, %s in this dispatcher's OUTAGE_SMS_SENDERS: they "
                    "fail as sender_unusable; give the dispatcher the worker's OUTAGE_SMS_SENDERS",
                    sender,
                    why,
                )
            await self._finish(item, Terminal(DeliveryOutcome.FAILED, "sender_unusable", why), now)
            return False
        book = self._ledger.setdefault(item.partition, {})
        decision = decide(
            cmd,
            self.optouts.get(cmd.to),
            self.outages.get(cmd.outage_id) if cmd.outage_id else None,
            False,
            _utc(now),
            self._rules,
            never_alerted=unalerted(cmd, book),
        )
        if isinstance(decision, Terminal):
            q.pop(item)
            await self._finish(item, decision, now)
            return False
        if isinstance(decision, Defer):
            q.pop(item)
            if item.intent:  # written ahead; it will not go now, so say so
                self._retract_intent(item)
            q.push_later(item, decision.until.timestamp())
            return False
        # A footer owed because the text that carried it was never sent rides on this one.
        item.cmd = cmd = with_owed_footer(cmd, book, self._pending_footers.get(item.partition))
        if not item.intent:
            await self._write_intents(q, item, now)
        ack = self._intent_acks.get(cmd.command_id)
        if ack is not None:
            # The intent is on the broker before the request leaves: at most once. Written
            # before the rate wait, so the request leaves the moment the rate allows and
            # the provider sees the pace the limiter keeps, not the broker's ack jitter.
            if not ack.done():
                await asyncio.wait([ack])  # not cancelled with this task: others wait on it
            # Popped, not deleted: a release meanwhile may have retracted it already.
            self._intent_acks.pop(cmd.command_id, None)
            if ack.cancelled() or ack.exception() is not None:
                item.intent = False
                log.warning(
                    "ledger write failed, waiting: %r", None if ack.cancelled() else ack.exception()
                )
                return 1.0
            now = self._clock()
        units = self.limiter.units(sender, cmd.segments)
        at = self.limiter.ready_at(sender, units, now)
        if math.isinf(at):
            q.pop(item)
            terminal = Terminal(DeliveryOutcome.FAILED, "exceeds_daily_cap", f"{units} units")
            await self._finish(item, terminal, now)
            return False
        if at > now:
            # Then decide again: a STOP may arrive meanwhile.
            wait = min(at - now, 1.0)
            self.rate_waits[sender] += wait
            return wait
        self.limiter.take(sender, units, now)
        q.pop(item)
        self._inflight.add(cmd.command_id)
        task = asyncio.create_task(self._send(q, item, decision.bypassed))
        self._sending.setdefault(item.partition, set()).add(task)
        task.add_done_callback(self._sending[item.partition].discard)
        return True

    async def _write_intents(self, q: SenderQueue, head: Item, now: float) -> None:
        """Write ``sending`` for ``head`` and, without waiting, for the commands after it
        that the sender will reach within the broker's ack time (twice the moving average,
        at most ``intent_horizon`` seconds of its rate). Awaiting one ack per command
        would cap each sender at one command per ack round trip, far below 100/s on a
        busy broker. The cost: a crash fails those few never-sent commands as
        ``outcome_unknown`` instead of one; a graceful stop or a quiet-hours deferral
        rewrites them as ``retry``."""
        assert self._producer is not None  # noqa: S101
        limit = self.limiter.limits.get(q.sender)
        rate = limit.rate if limit is not None else 1.0
        ahead = max(
            1,
            min(
                math.ceil(rate * self._intent_horizon),
                math.ceil(rate * 2 * self._ack_latency),
            ),
        )
        batch = [
            head,
            *(
                i
                for i in q.upcoming(now, ahead)
                if i is not head and not i.intent and not self._is_done(i)
            ),
        ]
        started = time.monotonic()
        topic = self._topic[Role.DISPATCH_LEDGER]
        for item in batch[:ahead]:
            self._put_ledger(item, SENDING)
            item.intent = True
            try:
                fut = await self._producer.send(
                    topic,
                    orjson.dumps(ledger_entry(SENDING, item.partition, item.offset, item.attempts)),
                    key=item.cmd.command_id.encode(),
                    partition=item.partition,
                )
            except KafkaError as exc:
                fut = asyncio.get_running_loop().create_future()
                fut.set_exception(exc)
            self._track(fut)
            self._intent_acks[item.cmd.command_id] = fut
        last = self._intent_acks[batch[min(ahead, len(batch)) - 1].cmd.command_id]
        last.add_done_callback(lambda _: self._ack_took(time.monotonic() - started))

    def _ack_took(self, seconds: float) -> None:
        self._ack_latency += 0.2 * (seconds - self._ack_latency)

    def _retract_intent(self, item: Item) -> None:
        """A ``sending`` written ahead for a command that is not going now: ``retry``."""
        item.intent = False
        self._intent_acks.pop(item.cmd.command_id, None)
        self._put_ledger(item, RETRY)
        entry = ledger_entry(RETRY, item.partition, item.offset, item.attempts)
        self._track(
            self._send_soon(
                Role.DISPATCH_LEDGER,
                item.cmd.command_id.encode(),
                orjson.dumps(entry),
                item.partition,
            )
        )

    def _is_done(self, item: Item) -> bool:
        entry = self._ledger.get(item.partition, {}).get(item.cmd.command_id)
        return isinstance(entry, dict) and entry.get("s") in (DONE, OUTCOME)

    async def _send(self, q: SenderQueue, item: Item, bypassed: tuple[str, ...]) -> None:
        assert self._producer is not None  # noqa: S101
        cmd = item.cmd
        result: ProviderResult
        try:
            self.counts["requests"] += 1
            result = await self.provider.send(message_from_command(cmd))
        except ConfigurationError as exc:
            self._fail(exc)
            return
        except Exception as exc:  # noqa: BLE001 (a provider bug must not strand the command)
            # Providers classify what they expect; anything else may have happened after
            # the request left, so it is an unknown outcome, never a silent retry.
            masked = cmd.command_id.replace(cmd.to, mask_phone(cmd.to))
            log.exception("provider %s raised for %s", self.provider.name, masked)
            result = Transient("provider_error", detail=repr(exc)[:500], ambiguous=True)
        finally:
            self._slots.release()
            self._inflight.discard(cmd.command_id)
        now = self._clock()
        step = after_result(cmd, result, item.attempts, _utc(now), self._policy)
        if isinstance(step, Retry):
            item.attempts = step.attempts
            item.intent = False
            if step.hold_client_until is not None:
                self.limiter.hold(step.hold_client_until.timestamp())
            self._put_ledger(item, RETRY)
            fut = await self._producer.send(
                self._topic[Role.DISPATCH_LEDGER],
                orjson.dumps(ledger_entry(RETRY, item.partition, item.offset, item.attempts)),
                key=cmd.command_id.encode(),
                partition=item.partition,
            )
            self._track(fut)
            q.push_later(item, step.at.timestamp())
            wake = self._wake.get(q.sender)
            if wake is not None:
                wake.set()
            return
        await self._finish(item, step, now, bypassed)

    async def _producer_send(self, role: Role, key: bytes, value: bytes, partition: int) -> None:
        assert self._producer is not None  # noqa: S101
        await self._producer.send_and_wait(self._topic[role], value, key=key, partition=partition)

    def _put_ledger(self, item: Item, state: str) -> None:
        self._ledger.setdefault(item.partition, {})[item.cmd.command_id] = ledger_entry(
            state, item.partition, item.offset, item.attempts
        )

    # ---- outcomes -------------------------------------------------------------------

    async def _finish(
        self, item: Item, terminal: Terminal, now: float, bypassed: tuple[str, ...] = ()
    ) -> None:
        """Publish the one terminal status; the offset counts as done once it is on disk."""
        assert self._producer is not None  # noqa: S101
        cmd, p = item.cmd, item.partition
        self._active.pop(cmd.command_id, None)
        self._intent_acks.pop(cmd.command_id, None)
        attempts = Attempts(terminal.attempts, item.attempts.transient, item.attempts.throttled)
        status = status_record(cmd, terminal, _utc(now), self.provider.name).to_bytes()
        outcome = ledger_entry(OUTCOME, p, item.offset, attempts, status, terminal.outcome.value)
        done = ledger_entry(DONE, p, item.offset, attempts, None, terminal.outcome.value)
        book = self._ledger.setdefault(p, {})
        book[cmd.command_id] = done
        # What the number is owed, on the broker before the outcome: once the outcome is
        # there, this command is not decided again after a crash, so neither is this.
        first: list[asyncio.Future[Any]] = []
        for key, value in settle(cmd, terminal.outcome, terminal.reason, book):
            if value is None:
                book.pop(key, None)
            else:
                book[key] = value
            first.append(
                self._send_soon(
                    Role.DISPATCH_LEDGER,
                    key.encode(),
                    None if value is None else orjson.dumps(value),
                    p,
                )
            )
        self._settle_pending(item, terminal)
        writes: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(
                self._publish(p, cmd.command_id, cmd.to, status, outcome, done, first)
            ),
            *first,
        ]
        audit = None
        if terminal.outcome is DeliveryOutcome.SUPPRESSED:
            audit = self._audit(item, "suppressed_at_send", terminal.reason, now, terminal.detail)
        elif bypassed:
            audit = self._audit(item, "life_safety_bypass", ",".join(bypassed), now, None)
        if audit is not None:
            writes.append(audit)
        self._write(p, item.offset, writes)
        label = terminal.outcome.value + (f":{terminal.reason}" if terminal.reason else "")
        self.counts[label] += 1
        if terminal.outcome is DeliveryOutcome.FAILED:
            log.warning(
                "command %s to %s failed: %s %s",
                cmd.command_id.replace(cmd.to, mask_phone(cmd.to)),
                mask_phone(cmd.to),
                terminal.reason,
                terminal.error_code or terminal.detail or "",
            )

    def _settle_pending(self, item: Item, terminal: Terminal) -> None:
        """A queued footer-carrying text is no longer pending; once a footer is sent,
        nothing queued for the number needs one."""
        pending = self._pending_footers.get(item.partition)
        if not pending:
            return
        to = item.cmd.to
        if terminal.outcome is DeliveryOutcome.SENT and carries_footer(item.cmd):
            pending.pop(to, None)
        elif item.introduces and to in pending:
            pending[to] -= 1
            if pending[to] <= 0:
                del pending[to]

    async def _duplicate(self, item: Item, now: float) -> None:
        """Another record of a command that has (or is getting) its status: audit only."""
        self.counts["duplicates"] += 1
        audit = self._audit(item, "suppressed_at_send", Reason.DUPLICATE.value, now, None)
        self._write(item.partition, item.offset, [audit])

    def _audit(
        self, item: Item, decision: str, reason: str | None, now: float, detail: str | None
    ) -> asyncio.Future[Any]:
        cmd = item.cmd
        record = AuditRecord(
            audit_id=f"{cmd.command_id}:dispatch:{reason}",
            decision=decision,
            reason=reason,
            phone=cmd.to,
            outage_id=cmd.outage_id,
            outage_version=cmd.outage_version,
            command_id=cmd.command_id,
            facts={
                "sender": cmd.from_,
                "kind": cmd.kind.value,
                "detail": detail,
                "dispatch_offset": [item.partition, item.offset],
            },
            at=_utc(now),
        )
        return self._send_soon(
            Role.AUDIT,
            cmd.to.encode(),
            record.to_bytes(),
            phone_partition(cmd.to.encode(), self._n),
        )

    async def _publish(
        self,
        p: int,
        command_id: str,
        phone: str,
        status: bytes,
        outcome: dict[str, object] | None,
        done: dict[str, object],
        first: list[asyncio.Future[Any]] | None = None,
    ) -> None:
        """Ledger ``outcome`` (with the status), the status, then ledger ``done``, each
        acknowledged before the next: after a crash ``outcome`` alone means "publish this
        status again" (a repeat, identical, only in the instant between the last two
        writes), and ``done`` means it is on the broker."""
        key = command_id.encode()
        if first:
            await asyncio.gather(*first)
        if outcome is not None:
            await self._producer_send(Role.DISPATCH_LEDGER, key, orjson.dumps(outcome), p)
        await self._status_write(phone, status)
        await self._producer_send(Role.DISPATCH_LEDGER, key, orjson.dumps(done), p)

    def _status_write(self, phone: str, status: bytes) -> asyncio.Future[Any]:
        key = phone.encode()
        return self._send_soon(Role.DELIVERY_STATUS, key, status, phone_partition(key, self._n))

    def _send_soon(
        self, role: Role, key: bytes, value: bytes | None, partition: int
    ) -> asyncio.Future[Any]:
        assert self._producer is not None  # noqa: S101
        fut: asyncio.Future[Any] = asyncio.ensure_future(
            self._producer.send_and_wait(self._topic[role], value, key=key, partition=partition)
        )
        return fut

    def _write(self, p: int, offset: int, writes: list[asyncio.Future[Any]]) -> None:
        """When every write is acknowledged, ``offset`` of partition ``p`` is done."""
        both = asyncio.gather(*writes)
        self._track(both)

        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is not None:
                self._fail(exc)
            else:
                self._tracker.done(p, offset)

        both.add_done_callback(done)

    def _track(self, fut: asyncio.Future[Any]) -> None:
        self._pending_writes.add(fut)
        fut.add_done_callback(self._pending_writes.discard)

    async def _drain_writes(self) -> None:
        if self._pending_writes:
            await asyncio.gather(*list(self._pending_writes), return_exceptions=True)

    # ---- commits and limiter hand-over ------------------------------------------------

    async def _commit(self, partitions: Iterable[int]) -> None:
        assert self._consumer is not None  # noqa: S101
        topic = self._topic[Role.DISPATCH]
        offsets = {}
        for p in partitions:
            at = self._tracker.committable(p)
            if at is not None and at != self._committed.get(p):
                offsets[TopicPartition(topic, p)] = OffsetAndMetadata(at, "")
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.info("dispatch commit skipped (%s); the next owner re-reads a little", exc)
            return
        for tp, meta in offsets.items():
            self._committed[tp.partition] = meta.offset

    def _persist_limits(self, senders: Iterable[str]) -> None:
        if self._producer is None:
            return
        for sender in senders:
            if sender not in self.limiter.limits:
                continue
            state = {k: v for k, v in self.limiter.state(sender).items() if math.isfinite(v)}
            self._track(
                self._send_soon(
                    Role.DISPATCH_LEDGER,
                    (_LIMITER_KEY + sender).encode(),
                    orjson.dumps(state),
                    phone_partition(sender.encode(), self._n),
                )
            )

    async def _commit_loop(self) -> None:
        last_report = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            await self._commit(list(self._owned))
            self._persist_limits([q.sender for q in self._queues.values()])
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                log.info("dispatch: %s", self.describe())

    @property
    def owned(self) -> set[int]:
        """Dispatch partitions this process owns now."""
        return set(self._owned)

    def queue_of(self, sender: str) -> list[SendCommand]:
        """What waits on ``sender`` here, next first (operators' and tests' view)."""
        q = self._queues.get(sender)
        return [item.cmd for item in q.items()] if q is not None else []

    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def metrics(self) -> str:
        """Prometheus text format: outcomes, queue depth and projected drain per sender,
        rate-limit waits, and how far behind the opt-out view runs."""
        lines = [
            "# HELP outage_sms_dispatch_commands_total Commands by terminal outcome and reason.",
            "# TYPE outage_sms_dispatch_commands_total counter",
        ]
        for label, n in sorted(self.counts.items()):
            outcome, _, reason = label.partition(":")
            if outcome in {o.value for o in DeliveryOutcome}:
                lines.append(
                    f'outage_sms_dispatch_commands_total{{outcome="{outcome}",'
                    f'reason="{reason}"}} {n}'
                )
        lines += [
            "# TYPE outage_sms_dispatch_requests_total counter",
            f"outage_sms_dispatch_requests_total {self.counts['requests']}",
            "# TYPE outage_sms_dispatch_duplicates_total counter",
            f"outage_sms_dispatch_duplicates_total {self.counts['duplicates']}",
            "# HELP outage_sms_dispatch_queue_depth Commands waiting per sender.",
            "# TYPE outage_sms_dispatch_queue_depth gauge",
            "# HELP outage_sms_dispatch_drain_seconds Queue depth over the sender's rate.",
            "# TYPE outage_sms_dispatch_drain_seconds gauge",
            "# TYPE outage_sms_dispatch_rate_wait_seconds_total counter",
        ]
        for sender, q in sorted(self._queues.items()):
            limit = self.limiter.limits.get(sender)
            drain = len(q) / limit.rate if limit else float("inf")
            lines += [
                f'outage_sms_dispatch_queue_depth{{sender="{sender}"}} {len(q)}',
                f'outage_sms_dispatch_drain_seconds{{sender="{sender}"}} {drain:.1f}',
                f'outage_sms_dispatch_rate_wait_seconds_total{{sender="{sender}"}} '
                f"{self.rate_waits[sender]:.3f}",
            ]
        lag = self.optouts.delays[-1] if self.optouts.delays else 0.0
        lines += [
            "# HELP outage_sms_optout_view_delay_seconds Last opt-out: written to applied here.",
            "# TYPE outage_sms_optout_view_delay_seconds gauge",
            f"outage_sms_optout_view_delay_seconds {lag:.3f}",
            "# TYPE outage_sms_dispatch_in_flight gauge",
            f"outage_sms_dispatch_in_flight {len(self._inflight)}",
        ]
        return "\n".join(lines) + "\n"

    def describe(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        return f"queued={self.queued()} in_flight={len(self._inflight)} {counts}"
