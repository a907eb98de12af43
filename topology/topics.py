"""The one registry of topics: name, key, model, partitions and cleanup policy.

No topic-name string appears anywhere else. ``outage-sms topics create`` creates exactly
what is listed here (Tansu auto-creates unknown topics with 4 partitions, so workers must
never be the ones to create them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from schemas import (
    AuditRecord,
    CustomerRecord,
    DeadLetter,
    DeliveryStatus,
    InboundSms,
    OutageEvent,
    Record,
    SendCommand,
)

from .settings import Settings

__all__ = ["Role", "TopicSpec", "TopicRegistry"]

DAY_MS = 24 * 3600 * 1000


class Role(StrEnum):
    OUTAGE_EVENTS = "outage_events"
    CUSTOMER_REGIONS = "customer_regions"
    INBOUND = "inbound"
    SEND_COMMANDS = "send_commands"
    DELIVERY_STATUS = "delivery_status"
    AUDIT = "audit"
    OUTAGE_EVENTS_DLQ = "outage_events_dlq"
    CUSTOMER_REGIONS_DLQ = "customer_regions_dlq"
    INBOUND_DLQ = "inbound_dlq"
    SEND_COMMANDS_DLQ = "send_commands_dlq"
    # Internal: customers re-keyed by phone, and the table changelogs.
    CUSTOMERS_BY_PHONE = "customers_by_phone"
    OUTAGE_FANOUT = "outage_fanout"
    INBOUND_BY_PHONE = "inbound_by_phone"
    # Internal to the dispatcher: commands re-keyed by sender, and its ledger of outcomes.
    DISPATCH = "dispatch"
    DISPATCH_LEDGER = "dispatch_ledger"
    CUSTOMER_PHONE_CHANGELOG = "customer_phone_changelog"
    SUBSCRIBERS_CHANGELOG = "subscribers_changelog"
    OUTAGES_CHANGELOG = "outages_changelog"
    FANOUT_MEMORY_CHANGELOG = "fanout_memory_changelog"
    OPTOUTS_CHANGELOG = "optouts_changelog"
    REPLY_GUARD_CHANGELOG = "reply_guard_changelog"
    AREA_OUTAGES_CHANGELOG = "area_outages_changelog"
    RECEIPT_LINKS_CHANGELOG = "receipt_links_changelog"


#: Faust table name -> the changelog role; Faust names it ``<app_id>-<table>-changelog``.
TABLES: dict[str, Role] = {
    "customer_phone": Role.CUSTOMER_PHONE_CHANGELOG,
    "subscribers": Role.SUBSCRIBERS_CHANGELOG,
    "outages": Role.OUTAGES_CHANGELOG,
    "fanout_memory": Role.FANOUT_MEMORY_CHANGELOG,
    "optouts": Role.OPTOUTS_CHANGELOG,
    "reply_guard": Role.REPLY_GUARD_CHANGELOG,
    "area_outages": Role.AREA_OUTAGES_CHANGELOG,
    "receipt_links": Role.RECEIPT_LINKS_CHANGELOG,
}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    role: Role
    name: str
    key: str
    model: type[Record] | None
    partitions: int
    compacted: bool
    retention_ms: int | None
    internal: bool = False

    def configs(self) -> dict[str, str]:
        if self.compacted:
            return {"cleanup.policy": "compact"}
        if self.retention_ms is None:
            return {"cleanup.policy": "delete"}
        return {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms)}


class TopicRegistry:
    """Every topic the app reads or writes, resolved against the settings."""

    def __init__(self, settings: Settings) -> None:
        s = settings
        p = s.partitions
        keep = s.retention_days * DAY_MS
        dlq = 30 * DAY_MS  # dead letters wait for a human: keep them longer

        def t(base: str) -> str:
            return s.topic_name(base)

        def changelog(table: str) -> str:
            return f"{s.changelog_prefix}-{table}-changelog"

        specs = [
            TopicSpec(
                Role.OUTAGE_EVENTS,
                t(s.topic_outage_events),
                "outage_id",
                OutageEvent,
                p,
                False,
                90 * DAY_MS,
            ),
            TopicSpec(
                Role.CUSTOMER_REGIONS,
                t(s.topic_customer_regions),
                "customer_id",
                CustomerRecord,
                p,
                True,
                None,
            ),
            TopicSpec(Role.INBOUND, t(s.topic_inbound), "phone", InboundSms, p, False, keep),
            TopicSpec(
                Role.SEND_COMMANDS, t(s.topic_send_commands), "phone", SendCommand, p, False, keep
            ),
            TopicSpec(
                Role.DELIVERY_STATUS,
                t(s.topic_delivery_status),
                "phone",
                DeliveryStatus,
                p,
                False,
                keep,
            ),
            TopicSpec(Role.AUDIT, t(s.topic_audit), "phone", AuditRecord, p, False, 400 * DAY_MS),
            TopicSpec(
                Role.OUTAGE_EVENTS_DLQ,
                t(s.topic_outage_events + s.dlq_suffix),
                "source key",
                DeadLetter,
                1,
                False,
                dlq,
            ),
            TopicSpec(
                Role.CUSTOMER_REGIONS_DLQ,
                t(s.topic_customer_regions + s.dlq_suffix),
                "source key",
                DeadLetter,
                1,
                False,
                dlq,
            ),
            TopicSpec(
                Role.INBOUND_DLQ,
                t(s.topic_inbound + s.dlq_suffix),
                "source key",
                DeadLetter,
                1,
                False,
                dlq,
            ),
            TopicSpec(
                Role.SEND_COMMANDS_DLQ,
                t(s.topic_send_commands + s.dlq_suffix),
                "source key",
                DeadLetter,
                1,
                False,
                dlq,
            ),
            # Not compacted: it is keyed by phone but carries one record per (phone,
            # customer), and compaction would keep only one customer of a shared number.
            # The table's own changelog is the durable state; this is only the repartition.
            TopicSpec(
                Role.CUSTOMERS_BY_PHONE,
                f"{s.faust_id}-customers-by-phone",
                "phone",
                None,
                p,
                False,
                keep,
                internal=True,
            ),
            # Every outage version copied to every partition, so each partition fans out to
            # its own subscribers: a huge region is spread over all workers.
            TopicSpec(
                Role.OUTAGE_FANOUT,
                f"{s.faust_id}-outage-fanout",
                "outage_id, copied to every partition",
                None,
                p,
                False,
                90 * DAY_MS,
                internal=True,
            ),
            # Inbound texts a producer put on another partition than Kafka's default
            # partitioner would (librdkafka's CRC32), moved beside their number's state.
            TopicSpec(
                Role.INBOUND_BY_PHONE,
                f"{s.faust_id}-inbound-by-phone",
                "phone",
                None,
                p,
                False,
                keep,
                internal=True,
            ),
            # Send commands re-keyed by sender number: one dispatcher owns each sender, so
            # its rate limit is global however many dispatchers run.
            TopicSpec(
                Role.DISPATCH,
                f"{s.faust_id}-dispatch",
                "sender",
                None,
                p,
                False,
                keep,
                internal=True,
            ),
            # command_id -> intent / terminal outcome, partition for partition beside the
            # dispatch topic: what makes "sent at most once" survive restarts and replays.
            TopicSpec(
                Role.DISPATCH_LEDGER,
                f"{s.faust_id}-dispatch-ledger",
                "command_id",
                None,
                p,
                True,
                None,
                internal=True,
            ),
        ]
        specs += [
            TopicSpec(role, changelog(table), "table key", None, p, True, None, internal=True)
            for table, role in TABLES.items()
        ]
        self._by_role = {spec.role: spec for spec in specs}

    def __getitem__(self, role: Role) -> TopicSpec:
        return self._by_role[role]

    def __iter__(self) -> Iterator[TopicSpec]:
        return iter(self._by_role.values())

    def all(self) -> list[TopicSpec]:
        return list(self._by_role.values())

    def co_partitioned(self) -> list[TopicSpec]:
        """Topics whose partition counts must match (``PartitionsMismatch`` otherwise)."""
        # Faust raises PartitionsMismatch for table sources; the fan-out copy is read beside
        # the phone-keyed tables, partition for partition.
        feeds_table = (Role.CUSTOMER_REGIONS, Role.OUTAGE_EVENTS, Role.OUTAGE_FANOUT)
        return [
            s
            for s in self._by_role.values()
            if s.key in ("phone", "table key") or s.role in feeds_table
        ]
