"""The worker's consumer waits 50 ms for an empty fetch on Tansu, Faust's 1500 on Kafka."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from topology import fetch_wait
from topology.settings import Settings


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"broker_kind": "tansu"}, 50),
        ({"broker_kind": "kafka"}, None),
        ({"broker_kind": "kafka", "consumer_fetch_wait_ms": 200}, 200),
        ({"broker_kind": "tansu", "consumer_fetch_wait_ms": 1500}, 1500),
    ],
)
def test_the_fetch_wait_follows_the_broker_unless_configured(
    over: dict[str, Any], expected: int | None
) -> None:
    assert Settings(**over).fetch_wait_ms() == expected


def test_only_the_limited_app_consumer_waits_less(monkeypatch: pytest.MonkeyPatch) -> None:
    # Faust's own method builds the consumer with 1500 (it needs a running loop and app).
    monkeypatch.setattr(
        fetch_wait, "_original", lambda _self, _t: SimpleNamespace(_fetch_max_wait_ms=1500)
    )
    limited, plain = SimpleNamespace(), SimpleNamespace()
    fetch_wait.limit_fetch_wait(limited, 50)
    create = AIOKafkaConsumerThread._create_worker_consumer
    assert create(SimpleNamespace(app=limited), None)._fetch_max_wait_ms == 50  # type: ignore[arg-type]
    assert create(SimpleNamespace(app=plain), None)._fetch_max_wait_ms == 1500  # type: ignore[arg-type]
