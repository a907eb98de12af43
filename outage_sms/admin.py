"""Creating and checking the registry's topics on a broker."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from streams.errors import ConfigurationError
from topology.settings import Settings
from topology.topics import TopicRegistry, TopicSpec

__all__ = ["ConfigurationError", "TopicReport", "ensure_topics"]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class TopicReport:
    created: list[str]
    existing: list[str]


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
    except KafkaConnectionError:
        await admin.close()
        raise ConfigurationError(
            f"cannot reach the Kafka broker at {bootstrap}: check KAFKA_BOOTSTRAP_SERVERS, "
            "or unset it to use the embedded broker"
        ) from None
    return admin


async def _partition_counts(
    admin: AIOKafkaAdminClient, names: list[str], timeout: float = 15.0
) -> dict[str, int]:
    """Partition count per topic, waiting out metadata lag after a creation (Kafka
    answers LEADER_NOT_AVAILABLE or UNKNOWN_TOPIC for a moment)."""
    counts: dict[str, int] = {}
    pending = list(names)
    deadline = asyncio.get_running_loop().time() + timeout
    while pending:
        described = await admin.describe_topics(pending)
        for d in described:
            if d["error_code"] == 0 and d["partitions"]:
                counts[d["topic"]] = len(d["partitions"])
        pending = [n for n in pending if n not in counts]
        if pending and asyncio.get_running_loop().time() > deadline:
            raise ConfigurationError(f"topics not visible in metadata: {', '.join(pending)}")
        if pending:
            await asyncio.sleep(0.2)
    return counts


async def ensure_topics(settings: Settings, *, create: bool = True) -> TopicReport:
    """Create missing topics; fail clearly when an existing one has the wrong partitions.

    Co-partitioned topics (keyed by phone, and table changelogs) must have exactly
    ``settings.partitions``: Faust would otherwise read the wrong shard or refuse to start.
    """
    if not settings.bootstrap_servers:
        raise ConfigurationError("KAFKA_BOOTSTRAP_SERVERS is not set")
    registry = TopicRegistry(settings)
    admin = await _admin(settings.bootstrap_servers)
    try:
        present = set(await admin.list_topics())
        specs = registry.all()
        existing = [s for s in specs if s.name in present]
        missing = [s for s in specs if s.name not in present]
        counts = await _partition_counts(admin, [s.name for s in existing])
        _check_counts(existing, counts, registry)
        if missing and not create:
            names = ", ".join(s.name for s in missing)
            raise ConfigurationError(f"missing topics: {names}; run `outage-sms topics create`")
        if missing:
            new = [
                NewTopic(
                    s.name, s.partitions, settings.replication_factor, topic_configs=s.configs()
                )
                for s in missing
            ]
            try:
                response = await admin.create_topics(new)
            except KafkaError as exc:
                raise ConfigurationError(f"could not create topics: {exc}") from exc
            # aiokafka does not raise for per-topic errors: read them. Another worker
            # creating the same topic at the same moment is fine; we re-check counts below.
            failed = [
                f"{err[0]}: {err[2] or err[1]}"
                for err in response.topic_errors
                if err[1] not in (0, _TOPIC_ALREADY_EXISTS)
            ]
            if failed:
                raise ConfigurationError(f"could not create topics: {'; '.join(failed)}")
            log.info("created topics: %s", ", ".join(s.name for s in missing))
            counts = await _partition_counts(admin, [s.name for s in missing])
            _check_counts(missing, counts, registry)
        return TopicReport([s.name for s in missing], [s.name for s in existing])
    finally:
        await admin.close()


def _check_counts(existing: list[TopicSpec], counts: dict[str, int], reg: TopicRegistry) -> None:
    co = {s.name for s in reg.co_partitioned()}
    wrong = [
        (s.name, counts[s.name], s.partitions)
        for s in existing
        if s.name in co and s.name in counts and counts[s.name] != s.partitions
    ]
    if wrong:
        detail = "; ".join(f"{n} has {have}, needs {want}" for n, have, want in wrong)
        raise ConfigurationError(
            f"partition-count mismatch: {detail}. Co-partitioned topics must all have "
            "OUTAGE_SMS_PARTITIONS partitions: set it to the existing count, or recreate them"
        )
