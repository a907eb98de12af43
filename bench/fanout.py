"""Fan-out benchmark: one outage to N customers in one region, on one worker process.

Measured in one run, beside the ceiling of the same records through aiokafka's batch API:
commands/s from the outage event to the last command on the topic, outage-to-first-command
latency at idle, the worker's memory, and the time a restarted worker takes to process
again with N customers in its tables.

The customer table is preloaded straight into its changelog (the state a worker recovers
from), so the run measures the fan-out and the recovery, not the CRM import.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from outage_sms.admin import ensure_topics
from outage_sms.brokers import terminate
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

from .ceilings import Measurement, producer_batch

__all__ = ["LATE_OUTAGE_AFTER_S", "FanoutResult", "fanout_bench"]

FACTS = {"line": "fixed_line_or_mobile", "textable": True, "country": "US", "timezone": None}


@dataclass
class FanoutResult:
    broker: str
    customers: int
    fanout: Measurement | None = None
    ceiling: Measurement | None = None
    first_command_s: float | None = None
    idle_latency_ms: list[float] = field(default_factory=list)
    idle: list[Hops] = field(default_factory=list)
    idle_warmup_ms: list[float] = field(default_factory=list)
    """The samples taken first and left out of the percentiles (see ``IDLE_WARMUP``)."""
    load: tuple[float, float, float] | None = None
    restart_s: float | None = None
    warm_restart_s: float | None = None
    """Restarted over its data dir: start to "Worker ready"."""
    late_outage_ms: float | None = None
    """Restarted: an outage ``LATE_OUTAGE_AFTER_S`` after "Worker ready", to its first command."""
    rss_mib: float | None = None
    hwm_mib: float | None = None
    notes: list[str] = field(default_factory=list)


def phone(i: int) -> str:
    """Valid NANP numbers: exchanges 200-299 of area code 415, 10,000 lines each."""
    return f"+1415{200 + i // 10_000:03d}{i % 10_000:04d}"


def partition_of(number: str, partitions: int) -> int:
    """Where the by-phone topic puts a number (aiokafka's default partitioner)."""
    return (murmur2(number.encode()) & 0x7FFFFFFF) % partitions


def outage(oid: str, version: int, regions: list[str]) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "outage_id": oid,
            "version": version,
            "status": "detected",
            "severity": "service",
            "regions": regions,
            "summary": "Storm damage to lines; crews are on the way",
            "eta": "2026-11-22T23:00:00Z",
            "status_url": "https://status.citypower.example/o/1",
            "occurred_at": "2026-11-22T20:00:00Z",
        }
    )


async def preload(settings: Settings, n: int, progress: Any) -> None:
    """N subscribers in region R1 (the first also in WARM), written as table state.

    On Tansu one record per batch: its end offsets are only right for those, and Faust's
    recovery trusts them (the worker does the same for its own table writes there).
    """
    one_per_batch = settings.broker_kind == "tansu"
    topic = TopicRegistry(settings)[Role.SUBSCRIBERS_CHANGELOG].name
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        batches: dict[int, Any] = {}
        pending = []
        for i in range(n):
            number = phone(i)
            p = partition_of(number, settings.partitions)
            value = orjson.dumps(
                {
                    "p": p,
                    "facts": FACTS,
                    "customers": {
                        f"C{i:07d}": {
                            "customer_id": f"C{i:07d}",
                            "phone": number,
                            "regions": ["R1", "WARM"] if i == 0 else ["R1"],
                            "sms_consent": True,
                            "language": "en",
                            "timezone": "America/Los_Angeles",
                        }
                    },
                }
            )
            batch = batches.get(p) or batches.setdefault(p, producer.create_batch())
            if one_per_batch and batch.record_count():
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[p] = producer.create_batch()
            if batch.append(key=orjson.dumps(number), value=value, timestamp=None) is None:
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[p] = producer.create_batch()
                batch.append(key=orjson.dumps(number), value=value, timestamp=None)
            if i and i % 250_000 == 0:
                progress(f"    preloaded {i:,} customers")
        for p, batch in batches.items():
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTAGE_SMS_")}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers or "",
        OUTAGE_SMS_BROKER_KIND=settings.broker_kind,
        OUTAGE_SMS_TOPIC_PREFIX=settings.topic_prefix,
        OUTAGE_SMS_PARTITIONS=str(settings.partitions),
        OUTAGE_SMS_STORE=settings.store,
        OUTAGE_SMS_DATA_DIR=str(settings.data_dir),
        OUTAGE_SMS_LOG_LEVEL="INFO",
        OUTAGE_SMS_EVENT_LOOP=settings.event_loop,
        OUTAGE_SMS_FANOUT_CONNECTIONS=str(settings.fanout_connections),
        PYTHONUNBUFFERED="1",
    )
    return env


def bench_settings(
    bootstrap: str, kind: str, prefix: str, partitions: int, store: str, tmp: str
) -> Settings:
    """Settings of one benchmark run: its own topic prefix and a throw-away data dir."""
    return Settings(
        bootstrap_servers=bootstrap,
        broker_kind=kind,  # type: ignore[arg-type]
        topic_prefix=prefix,
        partitions=partitions,
        store=store,
        data_dir=Path(tmp) / "data",
    )


def spawn_worker(s: Settings, out: Any) -> subprocess.Popen[bytes]:
    """``outage-sms worker``, on the event loop ``s`` names (OUTAGE_SMS_EVENT_LOOP)."""
    return spawn("outage_sms", ["worker"], s, out)


def spawn(module: str, args: list[str], s: Settings, out: Any) -> subprocess.Popen[bytes]:
    """``python -m module args`` with the environment that makes it see ``s``."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env=worker_env(s),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


class Offsets:
    """How many records a topic holds.

    On Apache Kafka: the sum of end offsets, without consuming (the bench must not steal
    the worker's CPU). On Tansu end offsets are wrong (the last batch's base offset + 1),
    so records are counted by reading them, which costs some CPU and is reported as such.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, count: bool) -> None:
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        self.count = count
        self.seen = 0

    async def __aenter__(self) -> Offsets:
        await self.consumer.start()
        if self.count:
            self.consumer.assign(self.tps)
            await self.consumer.seek_to_beginning(*self.tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def total(self) -> int:
        if self.count:
            batch = await self.consumer.getmany(timeout_ms=5, max_records=100_000)
            self.seen += sum(len(msgs) for msgs in batch.values())
            return self.seen
        ends = await self.consumer.end_offsets(self.tps)
        return sum(ends.values())

    async def quiet_total(self) -> int:
        """The total once nothing more arrives (counting: read until a fetch comes back
        empty), for a base taken while no worker writes."""
        if not self.count:
            return await self.total()
        while batch := await self.consumer.getmany(timeout_ms=500, max_records=100_000):
            self.seen += sum(len(msgs) for msgs in batch.values())
        return self.seen

    async def wait_for(self, target: int, timeout: float, poll: float = 0.005) -> float:
        deadline = time.monotonic() + timeout
        while await self.total() < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {await self.total():,} of {target:,} commands")
            await asyncio.sleep(poll)
        return time.perf_counter()


@dataclass(frozen=True)
class Hops:
    """One idle outage's path, from broker timestamps (one clock: this machine's).

    event: the outage record's timestamp; copy: the worker's first copy of it on the
    fan-out topic (outage agent done); command: the first command's timestamp (fan-out
    agent planned it); arrival: when a consumer here saw it (acknowledged and fetchable).
    """

    event: float
    copy: float
    command: float
    arrival: float

    @property
    def total_ms(self) -> float:
        return (self.arrival - self.event) * 1000

    @property
    def parts_ms(self) -> tuple[float, float, float]:
        return (
            (self.copy - self.event) * 1000,
            (self.command - self.copy) * 1000,
            (self.arrival - self.command) * 1000,
        )


IDLE_WARMUP = 20
"""Idle samples taken and left out before the measured ones. Right after a new worker's
recovery of a million customers and its view build, two early idle outages (the 12th
and 13th, about 2 s after the build, in each of five probe runs on Kafka) took 240-600
ms; the acknowledgement of their copies alone took 366 and 467 ms in the two runs that
timed it. Meanwhile the worker's event loops and its consumer thread were idle (stack
sampling), and the broker's JVM was compiling (C2) with busy request handlers (jstack
CPU times). The later samples stayed under
200 ms. The cause inside the broker is not pinned down: the discarded samples are
reported beside the rest, so the tail stays visible."""


async def idle_latency(
    bootstrap: str, kind: str, reg: TopicRegistry, samples: int, prefix: str = "LAT"
) -> list[Hops]:
    """Outage event to first command, one outage at a time to one customer (region WARM).

    Watched with a consumer, not by polling end offsets: a poll every millisecond is a
    thousand ListOffsets requests a second to the broker that the worker shares 2 cores
    with, and it hid where the time goes. Tansu holds a fetch for its whole max wait even
    when data is there, so the watcher polls it with a short wait instead.
    """
    commands, copies = reg[Role.SEND_COMMANDS], reg[Role.OUTAGE_FANOUT]
    watch = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=5 if kind == "tansu" else 200,
    )
    sender = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await watch.start()
    await sender.start()
    out: list[Hops] = []
    try:
        tps = [TopicPartition(t.name, p) for t in (commands, copies) for p in range(t.partitions)]
        watch.assign(tps)
        await watch.seek_to_end(*tps)
        for i in range(samples):
            oid = f"{prefix}{i}"
            sent = await sender.send_and_wait(
                reg[Role.OUTAGE_EVENTS].name, outage(oid, 1, ["WARM"]), key=oid.encode()
            )
            marker = f'"outage_id":"{oid}"'.encode()
            copy: float | None = None
            deadline = time.monotonic() + 60
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no command for idle outage {oid} in 60 s")
                batch = await watch.getmany(timeout_ms=1000)
                seen = time.time()
                command = None
                for tp, msgs in batch.items():
                    for m in msgs:
                        if tp.topic == copies.name and m.key == oid.encode():
                            copy = m.timestamp / 1000 if copy is None else copy
                        elif tp.topic == commands.name and marker in (m.value or b""):
                            command = m.timestamp / 1000
                if command is not None:
                    out.append(Hops(sent.timestamp / 1000, copy or command, command, seen))
                    break
            await asyncio.sleep(0.02)  # idle: the worker has caught up between samples
    finally:
        await sender.stop()
        await watch.stop()
    return out


async def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def _rss(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        fields[name] = rest.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def fanout_bench(
    bootstrap: str,
    kind: str,
    n: int,
    partitions: int,
    store: str,
    progress: Any,
    idle_samples: int = 100,
) -> FanoutResult:
    result = FanoutResult(kind, n)
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="outage-sms-bench-") as tmp:
        s = bench_settings(bootstrap, kind, f"b{run}.", partitions, store, tmp)
        reg = TopicRegistry(s)
        await ensure_topics(s)
        progress(f"  preloading {n:,} customers into the subscriber table's changelog ...")
        await preload(s, n, progress)
        commands = reg[Role.SEND_COMMANDS].name
        events = reg[Role.OUTAGE_EVENTS].name
        log = Path(tmp) / "worker.log"
        with log.open("wb") as out:
            started = time.perf_counter()
            proc = spawn_worker(s, out)
            try:
                counting = Offsets(bootstrap, commands, partitions, count=kind == "tansu")
                async with counting as offsets:
                    progress("  worker recovering; warm-up outage to one customer ...")
                    await _produce(bootstrap, events, b"WARM", outage("WARM", 1, ["WARM"]))
                    await offsets.wait_for(1, timeout=900, poll=0.05)
                    result.restart_s = time.perf_counter() - started
                    progress(f"  processing {result.restart_s:.1f}s after start")

                    progress(
                        f"  idle latency, {IDLE_WARMUP} + {idle_samples} outages one at a time ..."
                    )
                    warm = await idle_latency(bootstrap, kind, reg, IDLE_WARMUP, prefix="WU")
                    result.idle_warmup_ms = [h.total_ms for h in warm]
                    result.idle = await idle_latency(bootstrap, kind, reg, idle_samples)
                    result.idle_latency_ms = [h.total_ms for h in result.idle]
                    result.load = os.getloadavg()

                    progress(f"  the outage: {n:,} customers in one region ...")
                    base = await offsets.total()
                    t0 = time.perf_counter()
                    await _produce(bootstrap, events, b"BIG", outage("BIG", 1, ["R1"]))
                    first = await offsets.wait_for(base + 1, timeout=120, poll=0.001)
                    result.first_command_s = first - t0
                    last = await offsets.wait_for(base + n, timeout=1800, poll=0.02)
                    result.fanout = Measurement("fan-out, outage to last command", n, last - t0)
                    result.rss_mib, result.hwm_mib = _rss(proc.pid)
                    progress(f"  {result.fanout.rate:,.0f} commands/s")
            finally:
                code = terminate(proc, grace=30)
                if code not in (0, -15):
                    result.notes.append(f"worker exit {code}: {log.read_text()[-2000:]}")
        for line in log.read_text(errors="replace").splitlines():
            if "fan-out BIG" in line or "views rebuilt" in line:
                result.notes.append(line.split("] ", 1)[-1][:200])
        if result.fanout is not None:
            progress(
                "  warm restart: the same worker again, its RocksDB kept, and an outage "
                f"{LATE_OUTAGE_AFTER_S:.0f}s after it is ready ..."
            )
            warm = await _warm_restart(s, bootstrap, partitions, Path(tmp))
            if warm is not None:
                result.warm_restart_s, result.late_outage_ms = warm
                progress(
                    f"  ready {result.warm_restart_s:.1f}s after start; an outage "
                    f"{LATE_OUTAGE_AFTER_S:.0f}s later: first command in "
                    f"{result.late_outage_ms:,.0f} ms"
                )

        progress("  ceiling: the same commands through aiokafka's batch API ...")
        records = await _read_commands(bootstrap, commands, partitions, "BIG", n)
        result.ceiling = await producer_batch(bootstrap, f"b{run}.ceiling", records, partitions)
    return result


#: How long after a restarted worker's "Worker ready" its first outage arrives: the usual
#: case (a deploy, then an outage some time later), long enough for the background view
#: build (about 30 s at a million customers here) to be over.
LATE_OUTAGE_AFTER_S = 60.0


async def _warm_restart(
    s: Settings, bootstrap: str, partitions: int, tmp: Path
) -> tuple[float, float] | None:
    """Start a worker over the data dir a stopped one left (RocksDB and its persisted
    changelog offsets intact), an ordinary restart (``restart_s`` is a new machine
    recovering every table from its changelog). Returns (seconds from start to "Worker
    ready", milliseconds from an outage produced ``LATE_OUTAGE_AFTER_S`` later to its
    first command). Before the views were built in the background, that outage waited
    for the whole build."""
    reg = TopicRegistry(s)
    log = tmp / "worker-warm.log"
    with log.open("wb") as out:
        async with Offsets(
            bootstrap, reg[Role.SEND_COMMANDS].name, partitions, count=s.broker_kind == "tansu"
        ) as offsets:
            base = await offsets.quiet_total()
            started = time.perf_counter()
            proc = spawn_worker(s, out)
            try:
                deadline = started + 900
                while b"Worker ready" not in log.read_bytes():
                    if time.perf_counter() > deadline or proc.poll() is not None:
                        return None
                    await asyncio.sleep(0.05)
                ready = time.perf_counter() - started
                await asyncio.sleep(LATE_OUTAGE_AFTER_S)
                events = reg[Role.OUTAGE_EVENTS].name
                t0 = time.perf_counter()
                await _produce(bootstrap, events, b"WARM2", outage("WARM2", 1, ["WARM"]))
                first = await offsets.wait_for(base + 1, timeout=900, poll=0.001)
                return ready, (first - t0) * 1000
            except TimeoutError:
                return None
            finally:
                terminate(proc, grace=30)


async def _read_commands(
    bootstrap: str, topic: str, partitions: int, outage_id: str, n: int
) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[tuple[bytes, bytes]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        marker = f'"outage_id":"{outage_id}"'.encode()
        while len(out) < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            if not batch:
                break
            for msgs in batch.values():
                out.extend(
                    (m.key or b"", m.value or b"") for m in msgs if marker in (m.value or b"")
                )
    finally:
        await consumer.stop()
    return out


def _p99(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def summarize(r: FanoutResult) -> dict[str, Any]:
    lat = sorted(r.idle_latency_ms)
    return {
        "broker": r.broker,
        "customers": r.customers,
        "commands_per_s": r.fanout.rate if r.fanout else None,
        "ceiling_per_s": r.ceiling.rate if r.ceiling else None,
        "share": (r.fanout.rate / r.ceiling.rate) if r.fanout and r.ceiling else None,
        "first_command_s": r.first_command_s,
        "idle_p50_ms": statistics.median(lat) if lat else None,
        "idle_p99_ms": _p99(lat) if lat else None,
        "idle_samples": len(lat),
        "idle_warmup_ms": list(r.idle_warmup_ms),
        "idle_hops_ms": {
            name: (statistics.median(v), _p99(v))
            for name, v in zip(
                ("event to copy", "copy to command", "command to consumer"),
                (sorted(x) for x in zip(*(h.parts_ms for h in r.idle), strict=True)),
                strict=False,
            )
        }
        if r.idle
        else {},
        "load": r.load,
        "restart_s": r.restart_s,
        "warm_restart_s": r.warm_restart_s,
        "late_outage_ms": r.late_outage_ms,
        "rss_mib": r.rss_mib,
        "hwm_mib": r.hwm_mib,
    }
