"""The hot-path producer: aiokafka's batch API, one open batch per (topic, partition).

A fan-out emits a million records; Faust's ``topic.send()`` manages a few thousand per
second here, aiokafka's batch API hundreds of thousands (bench/results/latest.md). Callers
add records, and ``flush()`` returns once every record so far is acknowledged by the
broker, which is the point after which it is safe to remember "sent" (see the fan-out).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer

__all__ = ["BatchEmitter"]

log = logging.getLogger(__name__)


class BatchEmitter:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        max_batch_bytes: int = 512 * 1024,
        linger_ms: int = 5,
        client_id: str = "outage-sms-emitter",
        stop_timeout: float = 10.0,
        connections: int = 1,
    ) -> None:
        """``connections`` > 1: full batches go out round-robin over that many producers.

        aiokafka keeps one request in flight per broker connection and takes a partition's
        next batch only once the previous one has left, so a writer of one partition waits
        a round trip per batch (a third of a fan-out's wall time on Kafka, measured). Over
        several connections the batches of one partition may land in any order: only for
        writers to which that does not matter (the fan-out writes one record per number,
        and its summary after a full flush).
        """
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "acks": "all",
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_bytes,
            "max_request_size": 4 * max_batch_bytes,
        }
        self._stop_timeout = stop_timeout
        self._producer: Any = None
        self._producers: list[Any] = []
        self._connections = connections
        self._turn = 0
        self._open: dict[tuple[str, int], Any] = {}
        self._inflight: list[asyncio.Future[Any]] = []
        self._started = False
        self._lock = asyncio.Lock()
        self.records = 0

    async def start(self) -> None:
        async with self._lock:
            if not self._started:
                # Built here, not in __init__: aiokafka binds to the running loop.
                self._producers = [
                    AIOKafkaProducer(**self._config) for _ in range(self._connections)
                ]
                await asyncio.gather(*(p.start() for p in self._producers))
                self._producer = self._producers[0]
                self._started = True

    async def stop(self) -> None:
        """Flush and close, each within ``stop_timeout``: with the broker gone, aiokafka
        would retry for as long as it is gone and the worker's shutdown would hang.

        Records left unacknowledged were never remembered as told (the fan-out remembers
        only after the ack), so whoever runs the fan-out next emits them again."""
        async with self._lock:
            if self._started:
                try:
                    await asyncio.wait_for(self.flush(), self._stop_timeout)
                except TimeoutError:
                    log.warning(
                        "emitter: records unacknowledged after %.0fs; stopping without them",
                        self._stop_timeout,
                    )
                finally:
                    self._started = False
                    try:
                        await asyncio.wait_for(
                            asyncio.gather(*(p.stop() for p in self._producers)),
                            self._stop_timeout,
                        )
                    except TimeoutError:
                        log.warning("emitter: producer did not close in %.0fs", self._stop_timeout)

    async def add(
        self, topic: str, partition: int, records: Iterable[tuple[bytes | None, bytes]]
    ) -> None:
        """Append records to ``topic[partition]``; full batches go out as they fill.

        Appends go straight to the batch's C record builder, doing the two things
        ``BatchBuilder.append`` does around it (count the offset, close when full): its
        Python wrapper (serialisers we do not use, a metadata object we drop) cost more
        than the C append itself, ~5% of a fan-out. Arguments by position: the C append
        parses keywords slower (0.49-0.62 against 0.65-0.66 µs a record, offline).
        tests/unit/test_emitter.py compares the batches with ``BatchBuilder.append``'s
        record for record.
        """
        if not self._started:
            await self.start()
        key = (topic, partition)
        batch = self._open.get(key)
        if batch is None or batch._closed:  # the wrapper's own check, once per call
            batch = self._open[key] = self._producer.create_batch()
        append = batch._builder.append
        offset = batch._relative_offset
        n = 0
        try:
            for k, v in records:
                if append(offset, None, k, v, _NO_HEADERS) is None:
                    batch._relative_offset = offset
                    await self._send(batch, topic, partition)
                    batch = self._open[key] = self._producer.create_batch()
                    append = batch._builder.append
                    offset = 0
                    if append(offset, None, k, v, _NO_HEADERS) is None:
                        raise ValueError(f"a record of {len(v)} bytes exceeds the batch size")
                offset += 1
                n += 1
        finally:
            batch._relative_offset = offset
            self.records += n

    async def _send(self, batch: Any, topic: str, partition: int) -> None:
        batch.close()
        producer = self._producers[self._turn % len(self._producers)]
        self._turn += 1
        self._inflight.append(await producer.send_batch(batch, topic, partition=partition))

    async def send_open(self) -> asyncio.Future[Any]:
        """Send what is open; the result completes when everything so far is acknowledged.

        For callers that keep producing meanwhile (the fan-out plans the next chunks while
        the broker acknowledges the last ones)."""
        for (topic, partition), batch in list(self._open.items()):
            if batch.record_count() and not batch.closed():  # closed: already sent
                await self._send(batch, topic, partition)
        self._open.clear()
        inflight, self._inflight = self._inflight, []
        return asyncio.gather(*inflight)

    async def flush(self) -> None:
        """Send what is open and wait until the broker acknowledged everything so far."""
        await (await self.send_open())


_NO_HEADERS: list[tuple[str, bytes]] = []
"""Never changed: aiokafka's record builder only reads it."""
