"""Settings from the environment and the topic registry."""

from __future__ import annotations

import pytest

from streams.masking import mask_phone
from topology.app import faust_broker_url
from topology.settings import Settings
from topology.topics import Role, TopicRegistry


def test_env_overrides_topic_names_and_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("OUTAGE_SMS_TOPIC_OUTAGE_EVENTS", "noc.outages")
    monkeypatch.setenv("OUTAGE_SMS_TOPIC_PREFIX", "prod.")
    monkeypatch.setenv("OUTAGE_SMS_PARTITIONS", "12")
    s = Settings()
    reg = TopicRegistry(s)
    assert s.bootstrap_servers == "k1:9092,k2:9092"
    assert reg[Role.OUTAGE_EVENTS].name == "prod.noc.outages"
    assert reg[Role.OUTAGE_EVENTS_DLQ].name == "prod.noc.outages.dlq"
    assert reg[Role.SUBSCRIBERS_CHANGELOG].name == "prod.outage-sms-subscribers-changelog"
    assert {t.partitions for t in reg.co_partitioned()} == {12}


def test_app_version_renames_changelogs_like_faust_does() -> None:
    s = Settings(app_version=3)
    assert TopicRegistry(s)[Role.OUTAGES_CHANGELOG].name == "outage-sms-v3-outages-changelog"


def test_compacted_and_retained_topics() -> None:
    reg = TopicRegistry(Settings())
    assert reg[Role.CUSTOMER_REGIONS].configs() == {"cleanup.policy": "compact"}
    assert reg[Role.INBOUND].configs()["cleanup.policy"] == "delete"
    assert int(reg[Role.AUDIT].configs()["retention.ms"]) >= 365 * 86_400_000
    names = [t.name for t in reg]
    assert len(names) == len(set(names)) == len(Role)


def test_phone_keyed_topics_are_all_co_partitioned() -> None:
    reg = TopicRegistry(Settings())
    co = {t.role for t in reg.co_partitioned()}
    assert {
        Role.INBOUND,
        Role.SEND_COMMANDS,
        Role.CUSTOMERS_BY_PHONE,
        Role.SUBSCRIBERS_CHANGELOG,
    } <= co


def test_broker_url_for_faust() -> None:
    assert faust_broker_url("a:1, b:2") == "kafka://a:1;kafka://b:2"


@pytest.mark.parametrize(
    ("phone", "masked"), [("+14155550123", "+1415*****23"), (None, "<none>"), ("+123", "****")]
)
def test_phone_numbers_are_masked_for_logs(phone: str | None, masked: str) -> None:
    assert mask_phone(phone) == masked
