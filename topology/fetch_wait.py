"""How long the worker's Kafka consumer lets the broker hold an empty fetch.

Faust creates its consumer with ``fetch_max_wait_ms=1500``, fixed. Apache Kafka answers a
waiting fetch as soon as a record arrives, so there the wait costs nothing but idle
polls. Tansu does not: a fetch waits its full time however soon a record arrives, so every
Faust hop took up to 1.5 s (750 ms on average: the outage-to-command p50 of about 1.5 s
on Tansu in ``bench/results``, two hops). Measured with a bare aiokafka consumer on Tansu,
one record at a time at random moments: 14-1,428 ms with 1,500 ms, 5-36 ms with 50 ms.
The price on Tansu: an idle worker polls 20 times a second, about 7% of a core instead
of 1% (measured over 20 s).

:func:`limit_fetch_wait` makes Faust's consumer of one app wait at most ``ms`` instead:
Faust builds the consumer in ``AIOKafkaConsumerThread._create_worker_consumer`` and
aiokafka's fetcher reads the value when the consumer starts, so it is set in between.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

__all__ = ["limit_fetch_wait"]

_ATTR = "_outage_sms_fetch_max_wait_ms"
_original = AIOKafkaConsumerThread._create_worker_consumer


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _original(self, transport)
    wait = getattr(self.app, _ATTR, None)
    if wait is not None:
        consumer._fetch_max_wait_ms = wait
    return consumer


def limit_fetch_wait(app: Any, ms: int) -> None:
    """Faust's consumer of ``app`` lets the broker hold an empty fetch ``ms`` at most."""
    setattr(app, _ATTR, ms)
    if AIOKafkaConsumerThread._create_worker_consumer is not _create_worker_consumer:
        AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
