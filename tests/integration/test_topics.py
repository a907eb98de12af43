"""`topics create` against a real broker: partitions, policies, mismatches."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from outage_sms.admin import ConfigurationError, ensure_topics
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

pytestmark = pytest.mark.integration


async def test_topics_create_makes_every_topic_with_its_partitions(settings: Settings) -> None:
    report = await ensure_topics(settings)
    reg = TopicRegistry(settings)
    assert sorted(report.created) == sorted(t.name for t in reg)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        described = {
            d["topic"]: len(d["partitions"])
            for d in await admin.describe_topics([t.name for t in reg])
        }
        assert described == {t.name: t.partitions for t in reg}
        # Tansu reports the configs a topic was created with, which is what we give it.
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, reg[r].name)
            for r in (Role.CUSTOMER_REGIONS, Role.INBOUND, Role.SUBSCRIBERS_CHANGELOG)
        ]
        responses = await admin.describe_configs(resources)
        configs = {
            res[3]: {c[0]: c[1] for c in res[4]} for resp in responses for res in resp.resources
        }
        assert configs[reg[Role.CUSTOMER_REGIONS].name]["cleanup.policy"] == "compact"
        assert configs[reg[Role.INBOUND].name]["cleanup.policy"] == "delete"
        assert configs[reg[Role.SUBSCRIBERS_CHANGELOG].name]["cleanup.policy"] == "compact"
    finally:
        await admin.close()
    again = await ensure_topics(settings)
    assert again.created == [] and len(again.existing) == len(reg.all())


async def test_partition_count_mismatch_is_refused_with_the_fix(settings: Settings) -> None:
    name = TopicRegistry(settings)[Role.INBOUND].name
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, settings.partitions + 2, 1)])
    finally:
        await admin.close()
    with pytest.raises(ConfigurationError, match="partition-count mismatch") as exc:
        await ensure_topics(settings)
    assert "OUTAGE_SMS_PARTITIONS" in str(exc.value)


async def _create(settings: Settings, role: Role, configs: dict[str, str] | None) -> str:
    name = TopicRegistry(settings)[role].name
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, settings.partitions, 1, topic_configs=configs)])
        # Apache Kafka lists a new topic a moment after creating it: until then the check
        # under test would see it missing, not mismatched.
        deadline = time.monotonic() + 30
        while name not in await admin.list_topics() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    return name


@pytest.mark.parametrize("role", [Role.CUSTOMER_REGIONS, Role.SUBSCRIBERS_CHANGELOG])
async def test_existing_compacted_topic_with_delete_policy_is_refused_with_the_fix(
    settings: Settings, role: Role
) -> None:
    # A changelog that is not compacted loses table state to retention.
    name = await _create(settings, role, {"cleanup.policy": "delete"})
    with pytest.raises(ConfigurationError, match="cleanup-policy mismatch") as exc:
        await ensure_topics(settings)
    message = str(exc.value)
    assert f"{name} is 'delete', needs 'compact'" in message
    assert f"--entity-name {name} --add-config cleanup.policy=compact" in message


async def test_existing_delete_topic_with_compact_policy_is_refused(settings: Settings) -> None:
    name = await _create(settings, Role.SEND_COMMANDS, {"cleanup.policy": "compact"})
    with pytest.raises(ConfigurationError, match=f"{name} is 'compact', needs 'delete'"):
        await ensure_topics(settings, create=False)


async def test_topic_created_without_a_policy(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Apache Kafka reports its default, delete: wrong for a compacted topic. Tansu reports
    # no policy at all for such a topic: the check is skipped and says so.
    name = await _create(settings, Role.CUSTOMER_REGIONS, None)
    if settings.broker_kind == "kafka":
        with pytest.raises(ConfigurationError, match=f"{name} is 'delete', needs 'compact'"):
            await ensure_topics(settings)
    else:
        with caplog.at_level(logging.WARNING, logger="outage_sms.admin"):
            report = await ensure_topics(settings)
        assert report.existing == [name]
        assert "cleanup.policy check skipped" in caplog.text and name in caplog.text
