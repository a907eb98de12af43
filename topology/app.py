"""``create_app(settings)``: builds the Faust app, its topics, tables and agents.

Nothing is built at import time, so tests and tools build as many apps as they need, each
with its own settings (topic prefix, store, partitions).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import EventT, TableT

from schemas import AuditRecord, DeadLetter, RejectReason
from streams.customers import apply_phone_change, decode_phone_change, rekey_customer
from streams.intake import (
    Rejected,
    Tombstone,
    dead_letter,
    decode_customer,
    decode_inbound,
    decode_outage,
)
from streams.masking import mask_phone
from streams.retry import RetryPolicy

from .guard import RetriesExhausted, process_guarded
from .settings import Settings
from .topics import Role, TopicRegistry

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
        web_enabled=s.web_enabled,
        web_port=s.web_port,
        consumer_auto_offset_reset="earliest",
    )
    built = OutageSmsApp(settings=s, registry=registry, faust_app=app)

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

    by_phone = built.topics[Role.CUSTOMERS_BY_PHONE]
    audit = built.topics[Role.AUDIT]

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

    policy = RetryPolicy()

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
            customer_id, customer = decode_phone_change(event.value)
            state = apply_phone_change(subscribers.get(phone), customer_id, customer)
            if state is not None:
                subscribers[phone] = state
            elif phone in subscribers:
                del subscribers[phone]

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
            known = outages.get(ev.outage_id)
            if known is not None and known["version"] >= ev.version:
                log.info(
                    "outage %s v%d ignored: v%d already seen",
                    ev.outage_id,
                    ev.version,
                    known["version"],
                )
                return
            outages[ev.outage_id] = ev.model_dump(mode="json")

        await guarded(stream, Role.OUTAGE_EVENTS_DLQ, handle)

    # Keyed by the customer's phone: beside their subscriber and opt-out state.
    @app.agent(built.topics[Role.INBOUND], name="inbound")
    async def inbound(stream: faust.StreamT[bytes]) -> None:
        async def handle(event: EventT[Any]) -> None:
            decoded = decode_inbound(event.key, event.value, s.max_record_bytes)
            if isinstance(decoded, Rejected):
                await reject(event, decoded, Role.INBOUND_DLQ)
                return
            sms = decoded.record
            log.debug("inbound %s from %s", sms.message_id, mask_phone(sms.from_))
            record = AuditRecord(
                audit_id=f"inbound:{sms.message_id}",
                decision="inbound_received",
                phone=sms.from_,
                message_id=sms.message_id,
                facts={"to": sms.to, "chars": len(sms.body)},
                at=sms.received_at,
            )
            await audit.send(key=sms.from_.encode(), value=record.to_bytes())

        await guarded(stream, Role.INBOUND_DLQ, handle)

    return built
