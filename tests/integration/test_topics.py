"""`topics create` against a real broker: partitions, policies, mismatches."""

from __future__ import annotations

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
        if settings.broker_kind == "kafka":  # Tansu does not keep topic configs
            resources = [
                ConfigResource(ConfigResourceType.TOPIC, reg[r].name)
                for r in (Role.CUSTOMER_REGIONS, Role.INBOUND)
            ]
            responses = await admin.describe_configs(resources)
            configs = {
                res[3]: {c[0]: c[1] for c in res[4]} for resp in responses for res in resp.resources
            }
            assert configs[reg[Role.CUSTOMER_REGIONS].name]["cleanup.policy"] == "compact"
            assert configs[reg[Role.INBOUND].name]["cleanup.policy"] == "delete"
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
