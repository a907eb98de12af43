"""Creating and checking the registry's topics on a broker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError

from streams.errors import ConfigurationError
from topology.settings import Settings
from topology.topics import TopicRegistry, TopicSpec

__all__ = ["ConfigurationError", "TopicReport", "end_offsets", "ensure_topics"]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class TopicReport:
    created: list[str]
    existing: list[str]


async def end_offsets(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], timeout: float = 5.0
) -> dict[TopicPartition, int]:
    """Each partition's end offset as of now, right on Tansu too.

    Tansu answers ListOffsets(latest) with its last batch's base offset + 1, so a reader
    that stops there misses the rest of a last batch of several records (the fan-out, the
    replies and the dispatcher all write batches). The high watermark in a fetch answer is
    right: one fetch at the listed end corrects it. ``tps`` must be assigned to
    ``consumer``; the caller seeks where it wants to read afterwards.
    """
    ends: dict[TopicPartition, int] = dict(await consumer.end_offsets(list(tps)))
    pending = {tp for tp in tps if ends[tp] > 0}
    for tp in pending:
        consumer.seek(tp, ends[tp] - 1)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        await consumer.getmany(*pending, timeout_ms=100, max_records=1)
        for tp in list(pending):
            high = consumer.highwater(tp)
            if high is not None:
                ends[tp] = max(ends[tp], high)
                pending.discard(tp)
    return ends


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
    except KafkaConnectionError:
        await admin.close()
        raise ConfigurationError(
            f"cannot reach the Kafka broker at {bootstrap}: check KAFKA_BOOTSTRAP_SERVERS "
            "(host:port of a listener this machine can reach, comma-separated), or, for the "
            "worker alone, unset it to use the embedded broker"
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
    """Create missing topics; fail clearly when an existing one has the wrong partitions
    or the wrong cleanup policy.

    Co-partitioned topics (keyed by phone, and table changelogs) must have exactly
    ``settings.partitions``: Faust would otherwise read the wrong shard or refuse to start.
    Where the broker does not report a topic's cleanup policy (Tansu, for a topic created
    without one), that check is skipped with a warning.
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
        _check_policies(existing, await _cleanup_policies(admin, existing), settings)
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
            raced = {err[0] for err in response.topic_errors if err[1] == _TOPIC_ALREADY_EXISTS}
            theirs = [s for s in missing if s.name in raced]
            if theirs:  # created by someone else meanwhile: with which policy?
                _check_policies(theirs, await _cleanup_policies(admin, theirs), settings)
        return TopicReport([s.name for s in missing], [s.name for s in existing])
    finally:
        await admin.close()


async def _cleanup_policies(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec]
) -> dict[str, str | None]:
    """``cleanup.policy`` of each topic as the broker reports it; None where it reports none.

    Asks for every config of the topics rather than naming ``cleanup.policy``: Tansu closes
    the connection on a filtered DescribeConfigs. Tansu reports only the configs a topic was
    created with, so a topic created there without one has no answer (None).
    """
    if not specs:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
    try:
        responses = await admin.describe_configs(resources)
    except (KafkaError, ValueError) as exc:  # ValueError: a response aiokafka cannot decode
        log.warning("cleanup.policy check skipped: the broker cannot describe configs (%r)", exc)
        return {s.name: None for s in specs}
    found: dict[str, str | None] = {s.name: None for s in specs}
    for response in responses:
        for error_code, error_message, _type, name, entries in response.resources:
            if error_code:
                log.warning("cleanup.policy of %s unknown: %s", name, error_message or error_code)
                continue
            for entry in entries:  # (name, value, ...) in every DescribeConfigs version
                if entry[0] == "cleanup.policy" and name in found:
                    found[name] = entry[1]
    return found


def _policy(value: str) -> frozenset[str]:
    return frozenset(p.strip() for p in value.split(",") if p.strip())


def _check_policies(
    existing: list[TopicSpec], policies: dict[str, str | None], settings: Settings
) -> None:
    """Fail when an existing topic's cleanup policy differs from the registry's.

    A table changelog that is not compacted loses table state to retention; a compacted
    input topic keeps only the latest record per key. Neither is fixed silently: switching
    a policy on a topic that holds data is a decision for whoever owns that data.
    """
    unknown = [s.name for s in existing if policies.get(s.name) is None]
    if unknown:
        log.warning(
            "cleanup.policy check skipped for %d topic(s): the broker reports none "
            "(Tansu keeps only configs given at creation): %s",
            len(unknown),
            ", ".join(unknown),
        )
    wrong = [
        (s.name, policy, s.configs()["cleanup.policy"])
        for s in existing
        if (policy := policies.get(s.name)) is not None
        and _policy(policy) != _policy(s.configs()["cleanup.policy"])
    ]
    if wrong:
        detail = "; ".join(f"{n} is {have!r}, needs {want!r}" for n, have, want in wrong)
        bootstrap = settings.bootstrap_servers
        fixes = "; ".join(
            f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
            f"--entity-name {n} --add-config cleanup.policy={want}"
            for n, _, want in wrong
        )
        raise ConfigurationError(
            f"cleanup-policy mismatch: {detail}. Change the policy ({fixes}), or delete the "
            "topic and run `outage-sms topics create`"
        )


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
