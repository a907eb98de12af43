"""Shared fixtures. Integration tests get a real broker: KAFKA_BOOTSTRAP_SERVERS when set,
otherwise one this session starts (OUTAGE_SMS_TEST_BROKER=tansu|kafka|container,
default tansu). Every test gets its own topic prefix and consumer group."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from outage_sms.brokers import RunningBroker, start_broker
from tests.kafka_helpers import TopicReader
from topology.settings import Settings
from topology.topics import Role, TopicRegistry


@pytest.fixture(scope="session")
def broker() -> Iterator[RunningBroker]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    kind = os.environ.get("OUTAGE_SMS_TEST_BROKER", "kafka" if external else "tansu")
    if external:  # an external broker is Apache Kafka unless OUTAGE_SMS_TEST_BROKER=tansu
        yield RunningBroker("kafka" if kind != "tansu" else "tansu", external)
        return
    if kind not in ("tansu", "kafka", "container"):
        raise pytest.UsageError(f"OUTAGE_SMS_TEST_BROKER={kind!r}: use tansu, kafka or container")
    running = start_broker(kind)  # type: ignore[arg-type]
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def settings(broker: RunningBroker, tmp_path: Path) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    return Settings(
        bootstrap_servers=broker.bootstrap,
        broker_kind="tansu" if broker.kind == "tansu" else "kafka",
        topic_prefix=prefix,
        app_id="outage-sms",
        partitions=4,
        store="memory://",
        data_dir=tmp_path / "data",
    )


def _test_broker_kind() -> str:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    return os.environ.get("OUTAGE_SMS_TEST_BROKER", "kafka" if external else "tansu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_tansu = _test_broker_kind() == "tansu"
    skip = pytest.mark.skip(reason="needs Apache Kafka: runs in the Kafka half of ./dev test")
    for item in items:
        if "/integration/" in str(item.fspath) or "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
        if on_tansu and item.get_closest_marker("kafka_only"):
            item.add_marker(skip)


@pytest.fixture
async def read(settings: Settings) -> AsyncIterator[Callable[[Role], TopicReader]]:
    """``read(Role.X)``: a reader of that topic, closed at teardown even if the test fails."""
    made: list[TopicReader] = []

    def make(role: Role) -> TopicReader:
        r = TopicReader(settings.bootstrap_servers or "", TopicRegistry(settings)[role].name)
        made.append(r)
        return r

    yield make
    for r in made:
        await r.close()
