"""Test helpers that talk to a real broker: produce, read back, run a worker process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from outage_sms.brokers import terminate
from topology.settings import Settings

Record = tuple[bytes | None, bytes | None]


async def produce(bootstrap: str, topic: str, records: Iterable[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> end offset (the next offset to be written) of ``topic``."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        await c._client.force_metadata_update()  # noqa: SLF001
        parts = c.partitions_for_topic(topic)
        if not parts:
            raise AssertionError(f"topic {topic} has no partitions")
        ends = await c.end_offsets([TopicPartition(topic, p) for p in sorted(parts)])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await c.stop()


async def committed_offsets(
    bootstrap: str, group: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> offset committed by consumer group ``group`` (-1: none).

    Names the partitions: Tansu answers the "all partitions" form of OffsetFetch with a
    response aiokafka cannot decode."""
    tps = [TopicPartition(t, p) for t, p in partitions]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}


async def await_committed(
    bootstrap: str, group: str, topics: Iterable[str], timeout: float = 60.0
) -> dict[tuple[str, int], int]:
    """Await the group committing everything written so far to ``topics``: every non-empty
    partition committed at its end offset. Returns the committed offsets."""
    want = {(t, p): end for t in topics for p, end in (await end_offsets(bootstrap, t)).items()}
    want = {tp: end for tp, end in want.items() if end > 0}
    deadline = time.monotonic() + timeout
    while True:
        have = await committed_offsets(bootstrap, group, want)
        behind = {tp: (have.get(tp), end) for tp, end in want.items() if have.get(tp, -1) < end}
        if not behind:
            return have
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group} did not commit in {timeout}s: {behind}")
        await asyncio.sleep(0.2)


@dataclass
class TopicReader:
    """Reads a whole topic from the start without a consumer group, and keeps reading."""

    bootstrap: str
    topic: str
    records: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    """Partition of each record in ``records``."""
    isolation_level: str = "read_uncommitted"
    """``read_committed`` sees only committed transactions (and stops at the last stable
    offset); the default also sees records of open and aborted ones."""
    _consumer: AIOKafkaConsumer | None = None

    async def _ensure(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            c = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level=self.isolation_level,
                # Tansu holds an empty fetch its full time, records arriving or not
                # (topology/fetch_wait.py): a short wait sees them sooner.
                fetch_max_wait_ms=50,
            )
            await c.start()
            parts = c.partitions_for_topic(self.topic)
            deadline = time.monotonic() + 30
            while not parts and time.monotonic() < deadline:
                await c._client.force_metadata_update()  # noqa: SLF001
                parts = c.partitions_for_topic(self.topic)
                await asyncio.sleep(0.2)
            if not parts:
                await c.stop()
                raise AssertionError(f"topic {self.topic} has no partitions after 30s")
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            self._consumer = c
        return self._consumer

    async def poll(self) -> None:
        c = await self._ensure()
        batch = await c.getmany(timeout_ms=200)
        for msgs in batch.values():
            self.records.extend((m.key, m.value) for m in msgs)
            self.partitions.extend(m.partition for m in msgs)

    async def catch_up(self, timeout: float = 30.0) -> TopicReader:
        """Read everything written so far (up to the end offsets as of now)."""
        c = await self._ensure()
        tps = list(c.assignment())
        ends = await c.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while [tp for tp, end in ends.items() if await c.position(tp) < end]:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not catch up with {self.topic} in {timeout}s")
            await self.poll()
        return self

    async def until(
        self,
        predicate: Callable[[TopicReader], bool],
        timeout: float = 60.0,
        what: str = "condition",
    ) -> TopicReader:
        deadline = time.monotonic() + timeout
        while True:
            await self.poll()
            if predicate(self):
                return self
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what} on {self.topic}; "
                    f"read {len(self.records)} records"
                )

    def json_values(self) -> list[Any]:
        return [orjson.loads(v) for _, v in self.records if v is not None]

    def table(self) -> dict[Any, Any]:
        """Fold a Faust changelog (JSON keys and values) into its latest state."""
        state: dict[Any, Any] = {}
        for k, v in self.records:
            key = orjson.loads(k) if k is not None else None
            if v is None:
                state.pop(key, None)
            else:
                state[key] = orjson.loads(v)
        return state

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


_PASSED_THROUGH = ("OUTAGE_SMS_REPLIES_BATCH",)
"""Switches a developer may run the whole suite under (e.g. the per-event replies path:
``OUTAGE_SMS_REPLIES_BATCH=false ./dev test``); every other OUTAGE_SMS_ variable of the
shell stays out of the workers, whose settings the tests choose."""


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a worker process see these settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OUTAGE_SMS_") or k in _PASSED_THROUGH
    }
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
            "OUTAGE_SMS_BROKER_KIND": settings.broker_kind,
            "OUTAGE_SMS_APP_ID": settings.app_id,
            "OUTAGE_SMS_TOPIC_PREFIX": settings.topic_prefix,
            "OUTAGE_SMS_PARTITIONS": str(settings.partitions),
            "OUTAGE_SMS_STORE": settings.store,
            "OUTAGE_SMS_DATA_DIR": str(settings.data_dir),
            "OUTAGE_SMS_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@dataclass
class WorkerProcess:
    """``outage-sms worker`` as a user runs it, in its own process."""

    settings: Settings
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment, e.g. ``OUTAGE_SMS_QUIET_HOURS``."""

    def start(self) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "outage_sms", "worker"],
            env={**settings_env(self.settings), **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        return self

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = terminate(self.proc, grace=30)
        self._log.close()
        return code

    def stop_cleanly(self) -> None:
        """Stop with SIGTERM and insist on a clean shutdown.

        The worker must still be running when asked to stop (one that exited on its own,
        even with 0, failed the test), and must exit 0. -15 is NOT clean: it means SIGTERM
        killed the process before Faust's handler was installed or after it was removed,
        i.e. no orderly shutdown and no final commit; -9 means it hung past the grace period.
        """
        if self.proc is None:
            return
        early = self.proc.poll()
        code = self.stop()
        if early is not None:
            raise AssertionError(
                f"worker exited by itself ({early}) before the test stopped it:\n{self.log_tail()}"
            )
        if code != 0:
            raise AssertionError(f"worker exited with {code} on SIGTERM:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit, no producer flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc is not None:
            self._log.close()

    def freeze(self) -> None:
        """SIGSTOP: the worker stops where it is, mid-whatever, until :meth:`kill`."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    async def log_contains(self, text: str, count: int = 1, timeout: float = 90.0) -> None:
        """Await ``count`` log lines containing ``text`` (needs OUTAGE_SMS_LOG_LEVEL=INFO)."""
        deadline = time.monotonic() + timeout
        while self.log_path.read_text(errors="replace").count(text) < count:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count}x {text!r} in {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)

    def log_tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def free_port() -> int:
    """A TCP port nobody listens on right now (for a worker's web server)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def preload_partitions(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[int, bytes, bytes]],
    *,
    one_per_batch: bool = False,
) -> int:
    """Write ``(partition, key, value)`` records straight to ``topic`` in big batches (a
    table's changelog, say, to give a worker state to recover). Returns how many.

    ``one_per_batch`` for Tansu: its end offsets are only right for one record per batch,
    and Faust's recovery trusts them (the worker writes its own changelogs that way there).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    n = 0
    try:
        batches: dict[int, Any] = {}
        pending: list[Any] = []
        for partition, key, value in records:
            batch = batches.get(partition) or batches.setdefault(partition, producer.create_batch())
            full = one_per_batch and batch.record_count()
            if full or batch.append(key=key, value=value, timestamp=None) is None:
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            n += 1
        for partition, batch in batches.items():
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return n


@dataclass
class SteadyProducer:
    """Produces ``make(i)`` records to ``topic`` at about ``rate`` a second, each awaited,
    from ``start()`` to ``stop()``: input that keeps arriving whatever a worker is doing.
    ``sent_at`` holds the monotonic time each record was acknowledged."""

    bootstrap: str
    topic: str
    make: Callable[[int], Record]
    rate: float = 200.0
    sent: list[Record] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False

    def start(self) -> SteadyProducer:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await producer.start()
        try:
            started = time.monotonic()
            while not self._stopping:
                record = self.make(len(self.sent))
                await producer.send_and_wait(self.topic, record[1], key=record[0])
                self.sent.append(record)
                self.sent_at.append(time.monotonic())
                ahead = started + len(self.sent) / self.rate - time.monotonic()
                await asyncio.sleep(max(ahead, 0))
        finally:
            await producer.stop()

    async def stop(self) -> list[Record]:
        """Stop producing (re-raising what failed it); the records sent. Idempotent."""
        self._stopping = True
        if self._task is not None:
            await self._task
        return self.sent

    def done(self) -> bool:
        """Whether it stopped (asked to, or failed)."""
        return self._task is not None and self._task.done()

    def sent_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.sent_at if start <= t < end)


SUBSCRIBER_FACTS = {
    "line": "fixed_line_or_mobile",
    "textable": True,
    "country": "US",
    "timezone": None,
}
"""What the customers agent stores about a valid US mobile number."""


def nanp_phone(i: int) -> str:
    """The i-th of a million valid NANP numbers: exchanges 200-299 of area code 415."""
    return f"+1415{200 + i // 10_000:03d}{i % 10_000:04d}"


def subscriber_state(
    numbers: Iterable[tuple[int, str]],
    partitions: int,
    *,
    consent: Callable[[int], bool] = lambda i: True,
    regions: tuple[str, ...] = ("R1",),
) -> Iterable[tuple[int, bytes, bytes]]:
    """``subscribers`` changelog records, one customer ``C<i>`` per ``(i, number)``: the
    table state a worker recovers, written without the customers agent (for
    :func:`preload_partitions`)."""
    from topology.views import phone_partition

    for i, number in numbers:
        p = phone_partition(number.encode(), partitions)
        cid = f"C{i:07d}"
        customer = {
            "customer_id": cid,
            "phone": number,
            "regions": list(regions),
            "sms_consent": consent(i),
            "language": "en",
        }
        value = {"p": p, "facts": SUBSCRIBER_FACTS, "customers": {cid: customer}}
        yield p, orjson.dumps(number), orjson.dumps(value)


class EndOffsets:
    """How many records a topic holds (sum of end offsets on Apache Kafka), from one
    long-lived client: cheap enough to poll while a worker races through a fan-out."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)

    async def __aenter__(self) -> EndOffsets:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def total(self) -> int:
        ends = await self._consumer.end_offsets(self.tps)
        return int(sum(ends.values()))
