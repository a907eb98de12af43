"""``create_app(settings)``: builds the Faust app, its topics, tables and agents.

Nothing is built at import time, so tests and tools build as many apps as they need, each
with its own settings (topic prefix, store, partitions).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
from faust.types import EventT, TableT

from schemas import DeadLetter, OutageEvent, RejectReason, format_utc
from streams.content import ContentPolicy
from streams.customers import apply_subscriber_change, decode_phone_change, rekey_customer
from streams.fanout import (
    FanoutSummary,
    outage_phase,
    subscriber_from_state,
    summary_record,
)
from streams.intake import (
    Rejected,
    Tombstone,
    dead_letter,
    decode_customer,
    decode_inbound,
    decode_outage,
)
from streams.masking import mask_phone
from streams.replies import area_outage_from_state, handle_inbound
from streams.reply_texts import ReplyTexts
from streams.retry import RetryPolicy

from .emitter import BatchEmitter
from .faust_patches import SafeTableManager, add_direct_reader, on_worker_ready
from .fetch_wait import fast_fetch_when_ready
from .gc_passes import fewer_gc_passes
from .guard import RetriesExhausted, process_guarded
from .inbound_reader import InboundReader
from .replies_batch import RepliesBatch, misplaced
from .rules import fanout_planner, reply_rules
from .settings import Settings
from .topics import Role, TopicRegistry
from .views import AreaViews, LocalViews, area_key, memory_key
from .web import register_web

__all__ = ["OutageSmsApp", "create_app", "faust_broker_url"]

log = logging.getLogger(__name__)


def faust_broker_url(bootstrap: str) -> str:
    """``h1:9092,h2:9092`` -> Faust's ``kafka://h1:9092;kafka://h2:9092``."""
    hosts = [h.strip() for h in bootstrap.split(",") if h.strip()]
    return ";".join(h if "://" in h else f"kafka://{h}" for h in hosts)


@dataclass
class OutageSmsApp:
    """The built topology: the Faust app plus handles tests and tools need."""

    settings: Settings
    registry: TopicRegistry
    faust_app: faust.App
    topics: dict[Role, faust.TopicT] = field(default_factory=dict)
    tables: dict[str, TableT[Any, Any]] = field(default_factory=dict)
    emitter: BatchEmitter | None = None
    views: LocalViews | None = None
    areas: AreaViews | None = None
    replies: RepliesBatch | None = None
    inbound_reader: InboundReader | None = None
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(metric, label name, label value) -> total, for ``/metrics`` (topology.web)."""


def create_app(settings: Settings | None = None) -> OutageSmsApp:
    s = settings or Settings()
    if not s.bootstrap_servers:
        raise ValueError(
            "no broker configured: set KAFKA_BOOTSTRAP_SERVERS, or run `outage-sms worker` "
            "which starts the embedded broker for you"
        )
    registry = TopicRegistry(s)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    session, heartbeat, rebalance = s.group_timeouts()
    guarantee = "at_least_once" if s.broker_kind == "tansu" else s.processing_guarantee
    app = faust.App(
        s.faust_id,
        version=s.app_version,
        broker=faust_broker_url(s.bootstrap_servers),
        store=s.store,
        datadir=str(s.data_dir),
        autodiscover=False,
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        table_standby_replicas=0,
        processing_guarantee=guarantee,
        broker_session_timeout=session,
        broker_heartbeat_interval=heartbeat,
        broker_rebalance_timeout=rebalance,
        broker_commit_interval=s.commit_interval_seconds,
        web_enabled=s.web_enabled,
        web_port=s.web_port,
        consumer_auto_offset_reset="earliest",
        # Tansu answers ListOffsets(latest) with the LAST BATCH's base offset + 1, so Faust's
        # table recovery stops short of the rest of that batch. One record per batch keeps
        # its answer right (tables are low-rate; the fan-out's bulk output is not a table).
        producer_max_batch_size=1 if s.broker_kind == "tansu" else 16384,
        # Faust 0.15.3 drops input that arrives during table recovery (faust issue #596):
        # this one resumes the input partitions only after the seek to committed offsets.
        TableManager=SafeTableManager,
    )
    built = OutageSmsApp(settings=s, registry=registry, faust_app=app)
    wait = s.fetch_wait_ms()
    if wait is not None:
        fast_fetch_when_ready(app, wait)

    def topic(role: Role) -> faust.TopicT:
        spec = registry[role]
        t = app.topic(
            spec.name,
            key_serializer="raw",
            value_serializer="raw",
            partitions=spec.partitions,
            internal=False,
        )
        built.topics[role] = t
        return t

    for role in Role:
        if not role.value.endswith("_changelog"):
            topic(role)

    def table(name: str, **kwargs: Any) -> TableT[Any, Any]:
        options = None
        if s.store.startswith("rocksdb"):
            # A fresh dict per table: Faust's store pops keys out of the one it is given.
            options = {
                "driver": "rocksdict",
                "block_cache_size": s.rocksdb_block_cache_mb * 1024 * 1024,
                "block_cache_compressed_size": s.rocksdb_block_cache_mb * 1024 * 1024 // 4,
            }
        t = app.Table(name, partitions=s.partitions, options=options, **kwargs)
        built.tables[name] = t
        return t

    # customer_id -> E.164 phone the customer had last, to retract it when it changes.
    customer_phone = table("customer_phone", key_type=str, value_type=str, default=None)
    # E.164 phone -> {customer_id: customer record as JSON object}; several accounts may
    # share one number, and each keeps its own regions and consent.
    subscribers = table("subscribers", key_type=str, default=None)
    # outage_id -> latest OutageEvent as JSON object (highest version seen).
    outages = table("outages", key_type=str, default=None)
    # "<outage>|<partition>|<version>|<first phone>" -> who in that chunk was told what;
    # written after the chunk's commands are acknowledged (see streams.fanout).
    fanout_memory = table("fanout_memory", key_type=str, default=None)
    # E.164 phone -> {"p", "all", "senders", ...}: opt-out state, written by the replies
    # agent, read by the fan-out (and the dispatcher at send time).
    optouts = table("optouts", key_type=str, default=None)
    # E.164 phone -> loop-protection windows (streams.loops.GuardState), replies agent only.
    reply_guard = table("reply_guard", key_type=str, default=None)
    # "<outage>|<partition>" -> the latest version of every outage, one copy per partition,
    # written by the fan-out agent: the status bot's view, local to the asking number.
    area_outages = table("area_outages", key_type=str, default=None)
    # E.164 phone -> provider message id -> our command (topology.web): links carrier
    # receipts to commands, fed from sms.delivery-status (keyed by recipient phone).
    table("receipt_links", key_type=str, default=None)

    planner = fanout_planner(s)
    pool = planner.pool
    content = ContentPolicy(s.forbidden_words, s.url_shorteners)
    emitter = BatchEmitter(s.bootstrap_servers, connections=s.fanout_connections)
    views = LocalViews()
    areas = AreaViews()
    built.emitter = emitter
    built.views = views
    built.areas = areas
    reply_texts = ReplyTexts(s.program_name, s.support_contact)
    rules = reply_rules(s)

    def view_sources() -> tuple[
        Iterable[tuple[str, Any]], Iterable[tuple[str, Any]], Iterable[tuple[str, Any]]
    ]:
        return subscribers.items(), optouts.items(), fanout_memory.items()

    # From "Worker ready", not at the first outage: a million numbers take about 30 s.
    on_worker_ready(app, lambda: views.start_building(view_sources))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's stub is narrower
    async def _forget_views(sender: Any, *args: Any, **kwargs: Any) -> None:
        # The inbound reader's batch in hand first: deciding it after the clear would
        # rebuild the status bot's outage view from partitions about to move.
        if built.inbound_reader is not None:
            await built.inbound_reader.stop(commit=True)
        views.clear()
        areas.clear()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _stop_emitter(sender: Any, *args: Any, **kwargs: Any) -> None:
        views.clear()  # a background build stops at its next step
        await emitter.stop()

    by_phone = built.topics[Role.CUSTOMERS_BY_PHONE]
    fanout_topic = built.topics[Role.OUTAGE_FANOUT]
    commands_name = registry[Role.SEND_COMMANDS].name
    audit_name = registry[Role.AUDIT].name

    async def reject(event: EventT[Any], rejected: Rejected, dlq_role: Role) -> None:
        msg = event.message
        letter: DeadLetter = dead_letter(
            rejected,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            timestamp=datetime.fromtimestamp(msg.timestamp, UTC) if msg.timestamp else None,
            key=event.key,
            value=event.value,
            now=datetime.now(UTC),
        )
        log.warning(
            "rejected %s[%d]@%d to %s: %s",
            msg.topic,
            msg.partition,
            msg.offset,
            dlq_role.value,
            rejected.reason.value,
        )
        await built.topics[dlq_role].send(key=event.key, value=letter.to_bytes())
        built.counts["dead_letters", "reason", rejected.reason.value] += 1

    policy = RetryPolicy()
    transactional = guarantee == "exactly_once"

    def _on_emitted(fut: asyncio.Future[Any]) -> None:
        # Faust flushes its producer before committing but does not look at the results:
        # a record the broker refused (after aiokafka's own retries) stops the worker,
        # loudly, rather than vanish; its input is redone after the restart unless that
        # offset was committed in the same instant (the log line then names the loss).
        exc = None if fut.cancelled() else fut.exception()
        if exc is None:
            return
        log.critical("stopping the worker: an output record was not written: %r", exc)
        asyncio.ensure_future(app.crash(exc))  # noqa: RUF006  (the app owns its shutdown)

    async def emit(role: Role, key: bytes, value: bytes, partition: int) -> None:
        """Low-rate outputs of an agent, partition for partition beside its input.

        At least once: through Faust's producer directly, which Faust flushes before every
        offset commit (so the record is on the broker before its input counts as done) at
        the raw aiokafka rate, not ``topic.send()``'s few thousand per second. Exactly
        once: ``topic.send()``, which joins the partition's transaction.
        """
        if transactional:
            await built.topics[role].send(key=key, value=value, partition=partition)
        else:
            fut: asyncio.Future[Any] = await app.producer.send(  # type: ignore[assignment]
                registry[role].name, key, value, partition, None, None
            )
            fut.add_done_callback(_on_emitted)

    async def guarded(
        stream: faust.StreamT[bytes],
        dlq_role: Role,
        handle: Callable[[EventT[Any]], Awaitable[None]],
    ) -> None:
        """Retry transient failures; dead-letter records that fail for good; never stall."""

        async def letter(event: EventT[Any], exc: BaseException) -> None:
            await reject(event, Rejected(RejectReason.PROCESSING_ERROR, repr(exc)), dlq_role)

        try:
            await process_guarded(stream.events(), handle, letter, policy)
        except RetriesExhausted as exc:
            # Stop the worker without committing this record: it is processed again after
            # the restart instead of being skipped.
            log.critical("stopping the worker: %s", exc)
            await app.crash(exc)
            raise

    # Keyed by customer_id (the CRM's key); re-keys each customer by phone.
    @app.agent(built.topics[Role.CUSTOMER_REGIONS], name="customers")
    async def customers(stream: faust.StreamT[bytes]) -> None:
        async def handle(event: EventT[Any]) -> None:
            decoded = decode_customer(event.key, event.value, s.max_record_bytes)
            if isinstance(decoded, Rejected):
                await reject(event, decoded, Role.CUSTOMER_REGIONS_DLQ)
                return
            if isinstance(decoded, Tombstone):
                customer_id, record = decoded.key, None
            else:
                customer_id, record = decoded.record.customer_id, decoded.record
            phone, changes = rekey_customer(customer_phone.get(customer_id), customer_id, record)
            for key, envelope in changes:
                await by_phone.send(key=key.encode(), value=envelope)
            if phone is not None:
                customer_phone[customer_id] = phone
            elif customer_id in customer_phone:
                del customer_phone[customer_id]

        await guarded(stream, Role.CUSTOMER_REGIONS_DLQ, handle)

    # Keyed by phone: co-partitioned with sms.inbound, send commands and opt-out state.
    @app.agent(by_phone, name="subscribers")
    async def subscriber_index(stream: faust.StreamT[bytes]) -> None:
        async def handle(event: EventT[Any]) -> None:
            phone = bytes(event.key or b"").decode()
            partition = event.message.partition
            customer_id, customer = decode_phone_change(event.value)
            state = apply_subscriber_change(
                subscribers.get(phone), phone, partition, customer_id, customer
            )
            if state is not None:
                subscribers[phone] = state
            elif phone in subscribers:
                del subscribers[phone]
            views.on_subscriber(partition, phone, state)

        await guarded(stream, Role.CUSTOMER_REGIONS_DLQ, handle)

    # Keyed by outage_id; keeps the highest version of each outage.
    @app.agent(built.topics[Role.OUTAGE_EVENTS], name="outages")
    async def outage_state(stream: faust.StreamT[bytes]) -> None:
        async def handle(event: EventT[Any]) -> None:
            decoded = decode_outage(event.key, event.value, s.max_record_bytes)
            if isinstance(decoded, Rejected):
                await reject(event, decoded, Role.OUTAGE_EVENTS_DLQ)
                return
            ev = decoded.record
            violation = content.violation(ev.summary, ev.status_url)
            if violation is not None:
                rejected = Rejected(RejectReason.FORBIDDEN_CONTENT, violation)
                await reject(event, rejected, Role.OUTAGE_EVENTS_DLQ)
                return
            known = outages.get(ev.outage_id)
            if known is not None and known["version"] >= ev.version:
                log.info(
                    "outage %s v%d ignored: v%d already seen",
                    ev.outage_id,
                    ev.version,
                    known["version"],
                )
                return
            # Copy to every partition first and wait for the broker: if the worker dies
            # before the table write, the replay sees an unknown version and copies again
            # (the fan-out skips numbers already told), rather than never.
            copy = ev.to_bytes()
            sent = [
                await fanout_topic.send(key=ev.outage_id.encode(), value=copy, partition=p)
                for p in range(s.partitions)
            ]
            await asyncio.gather(*sent)
            outages[ev.outage_id] = ev.model_dump(mode="json")

        await guarded(stream, Role.OUTAGE_EVENTS_DLQ, handle)

    # Partition p holds a copy of every outage version; it fans out to the subscribers
    # of partition p only (keyed like the phone-keyed tables, partition for partition).
    @app.agent(fanout_topic, name="fanout")
    async def fanout(stream: faust.StreamT[bytes]) -> None:
        async def handle(event: EventT[Any]) -> None:
            partition = event.message.partition
            outage = OutageEvent.from_bytes(event.value)
            # The status bot's copy first: a customer asking during a long fan-out already
            # gets this version's ETA.
            copy_key = area_key(outage.outage_id, partition)
            known = area_outages.get(copy_key)
            if known is None or known["version"] < outage.version:
                state = {**outage.model_dump(mode="json", by_alias=True), "p": partition}
                area_outages[copy_key] = state
                if areas.built:
                    areas.put(partition, area_outage_from_state(state))
            if not views.built:
                await views.ensure_built(view_sources)
            await run_fanout(outage, partition)

        await guarded(stream, Role.OUTAGE_EVENTS_DLQ, handle)

    async def run_fanout(outage: OutageEvent, partition: int) -> None:
        with fewer_gc_passes():
            await _run_fanout(outage, partition)

    async def _run_fanout(outage: OutageEvent, partition: int) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        memory = views.memory_for(partition)
        summary = FanoutSummary()
        unsaved: list[tuple[str, list[tuple[str, str]]]] = []
        # (acknowledgement, chunks it covers): planning goes on while the broker acks.
        acking: deque[tuple[asyncio.Future[Any], list[tuple[str, list[tuple[str, str]]]]]]
        acking = deque()

        async def checkpoint(wait: bool) -> None:
            """Hand what is planned to the broker; remember chunks once acknowledged."""
            acking.append((await emitter.send_open(), list(unsaved)))
            unsaved.clear()
            while acking and (wait or acking[0][0].done() or len(acking) > 2):
                acked, chunks = acking.popleft()
                await acked
                remember(chunks)

        def remember(chunks: list[tuple[str, list[tuple[str, str]]]]) -> None:
            # Only what the broker has acknowledged counts as told.
            for first, told in chunks:
                planner.remember(memory, outage, told)
                # Into views built since this fan-out began, too (defensive: see on_told).
                fold = partial(planner.remember, outage=outage, told=told)
                views.on_told(partition, memory, fold)
                key = memory_key(outage.outage_id, partition, outage.version, first)
                fanout_memory[key] = {
                    "o": outage.outage_id,
                    "p": partition,
                    "v": outage.version,
                    "s": outage_phase(outage),
                    "e": format_utc(outage.eta) if outage.eta else None,
                    "sent": told,
                }

        planned = False
        for chunk in planner.plan(
            outage,
            partition,
            views.index_for(partition),
            memory,
            views.optouts_for(partition),
            summary,
        ):
            planned = True
            await emitter.add(commands_name, partition, chunk.commands)
            await emitter.add(audit_name, partition, ((k.encode(), v) for k, v in chunk.audits))
            if chunk.told:
                unsaved.append((chunk.told[0][0], chunk.told))
            if len(unsaved) >= 50:
                await checkpoint(wait=False)
        record, projection = summary_record(
            outage, partition, summary, pool, s.partitions, s.fanout_warn_hours
        )
        late = bool(record.facts["exceeds_limit"])
        summary_key = outage.outage_id.encode()
        if planned:
            # The summary in a batch of its own, once every chunk is acknowledged (batches
            # go out over several connections and may land in any order). Alone and last,
            # because Tansu answers ListOffsets(latest) with the last batch's base offset
            # + 1: readers that stop at the end offset (audit replay, report) would miss
            # every record after the first of a last batch that holds several.
            await checkpoint(wait=True)
            await emitter.add(audit_name, partition, [(summary_key, record.to_bytes())])
            await checkpoint(wait=True)
        else:
            # Nobody on this partition to tell (most partitions of a small outage): no
            # broker round trip here, or the copies queued behind this one (one agent
            # serves every partition in turn) each wait for it. Faust flushes its producer
            # before committing this input's offset, so the summary is still never lost.
            await emit(Role.AUDIT, summary_key, record.to_bytes(), partition)
        for decision, n in summary.counts.items():
            built.counts["fanout_decisions", "decision", decision] += n
        targeted = sum(n for k, n in summary.counts.items() if k.startswith("targeted:"))
        log.log(
            logging.WARNING if late else logging.INFO,
            "fan-out %s v%d p%d: %d targeted, %s; projected completion %s%s (%.2fs, cpu %.2fs)",
            outage.outage_id,
            outage.version,
            partition,
            targeted,
            ", ".join(
                f"{k}={n}"
                for k, n in sorted(summary.counts.items())
                if not k.startswith("targeted:")
            )
            or "nothing suppressed",
            projection.describe() if projection else "0m00s",
            f" EXCEEDS {s.fanout_warn_hours:g}h: add senders or raise their rates" if late else "",
            time.perf_counter() - started,
            # The event loop's CPU time: well under the wall time means it waited (for the
            # broker's acks, or for the CPU the broker took).
            time.thread_time() - cpu,
        )

    async def handle_text(event: EventT[Any]) -> None:
        """One text, per event: the exactly-once path (see ``RepliesBatch`` for the other)."""
        decoded = decode_inbound(event.key, event.value, s.max_record_bytes)
        if isinstance(decoded, Rejected):
            await reject(event, decoded, Role.INBOUND_DLQ)
            return
        sms = decoded.record
        phone = sms.from_
        key = phone.encode()
        partition = event.message.partition
        home = misplaced(sms.message_id, key, event.message, s.partitions)
        if home is not None:
            await emit(Role.INBOUND_BY_PHONE, key, event.value, home)
            return
        if not areas.built:
            areas.build(area_outages.items())
        state = subscribers.get(phone)
        out = handle_inbound(
            sms,
            partition,
            optouts.get(phone),
            reply_guard.get(phone),
            subscriber_from_state(phone, state) if state else None,
            areas.outages_for(partition),
            reply_texts,
            rules,
        )
        if out.optout_changed:
            optouts[phone] = out.optout
            views.on_optout(partition, phone, out.optout)
            log.info(
                "%s from %s (message %s)",
                out.intent.intent.value,
                mask_phone(phone),
                sms.message_id,
            )
        reply_guard[phone] = out.guard
        built.counts["inbound_texts", "intent", out.intent.intent.value] += 1
        if out.command is not None:
            await emit(Role.SEND_COMMANDS, key, out.command[1], partition)
        for record in out.audits:
            await emit(Role.AUDIT, key, record.to_bytes(), partition)

    def count_text(intent: str) -> None:
        built.counts["inbound_texts", "intent", intent] += 1

    # At least once: a batch at a time, outputs and changelog records through the batch
    # producer (topology.replies_batch: why, and how every guarantee is kept). Exactly
    # once: per event, every output joining Faust's transaction. Tansu: per event too, as
    # its ListOffsets answer (the last batch's base offset + 1) would stop Faust's table
    # recovery short of a multi-record changelog batch, forgetting a STOP; Faust's own
    # producer writes one record per batch there (producer_max_batch_size above).
    # OUTAGE_SMS_REPLIES_BATCH=false forces the per-event path everywhere.
    replies = None
    if s.replies_batch and not transactional and s.broker_kind != "tansu":
        replies = RepliesBatch(
            bootstrap_servers=s.bootstrap_servers,
            registry=registry,
            partitions=s.partitions,
            max_record_bytes=s.max_record_bytes,
            tables=built.tables,
            views=views,
            areas=areas,
            texts=reply_texts,
            rules=rules,
            reject=reject,
            count=count_text,
            crash=app.crash,
            policy=policy,
        )
        built.replies = replies
        if s.inbound_direct:
            built.inbound_reader = InboundReader(
                app,
                replies,
                frozenset({registry[Role.INBOUND].name}),
                crash=app.crash,
                bootstrap_servers=s.bootstrap_servers or "",
                fetch_wait_ms=wait or 500,
                commit_every=s.commit_interval_seconds,
                max_records=replies.max_batch,
            )
            add_direct_reader(app, built.inbound_reader)

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def _stop_replies(sender: Any, *args: Any, **kwargs: Any) -> None:
            await replies.emitter.stop()

    # Keyed by the customer's phone: beside their subscriber, opt-out and loop state, and the
    # partition's copy of every outage (area_outages).
    @app.agent(built.topics[Role.INBOUND], name="inbound")
    async def inbound(stream: faust.StreamT[bytes]) -> None:
        if replies is not None:
            await replies.run(stream)
        else:
            await guarded(stream, Role.INBOUND_DLQ, handle_text)

    # Texts that arrived on a partition other than their number's, re-keyed by us.
    @app.agent(built.topics[Role.INBOUND_BY_PHONE], name="inbound_rekeyed")
    async def inbound_rekeyed(stream: faust.StreamT[bytes]) -> None:
        if replies is not None:
            await replies.run(stream)
        else:
            await guarded(stream, Role.INBOUND_DLQ, handle_text)

    register_web(built, reply_texts, rules)
    return built
