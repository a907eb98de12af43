"""Replies benchmark (issue 4): inbound replies/s on one worker beside a plain Faust agent
over the same topic, and STOP-to-effective latency.

Both sides get the same burst of inbound texts (one per customer: status questions, HELP
and STOP, each answered by exactly one command) once they are running and warmed up, timed
from the first record of the burst handled to the last.

Why a burst to a running worker and not a backlog waiting at start-up: with a backlog
present while the worker recovers its tables, faust-streaming 0.15.3 resumed stream flow
before recovery finished and then lost or stalled records (see the issue notes of
2026-11-24); that is a fault to pin in the fault tests, not a throughput figure.

"Effective" for a STOP is the opt-out on the broker in the ``optouts`` changelog, which is
what a dispatcher on another worker reads; on its own worker the fan-out sees it at once
(same call).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from outage_sms.admin import ensure_topics
from outage_sms.brokers import terminate
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

from .ceilings import Measurement
from .fanout import Offsets, bench_settings, partition_of, phone, preload, spawn, spawn_worker

__all__ = ["RepliesResult", "render_replies", "replies_bench"]

BODIES = ("when will it be fixed?", "STATUS", "is the power back?", "HELP", "STOP")


@dataclass
class RepliesResult:
    broker: str
    texts: int
    worker: Measurement | None = None
    plain: Measurement | None = None
    stop_ms: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    worker_cpu: float = 0.0
    """CPU seconds the worker process used from producing the burst to its last reply."""
    plain_cpu: float = 0.0
    """The same for the plain agent's process and its burst."""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process, all threads (Linux ``/proc``).

    Why: other agents load this 2-core machine, so the wall-clock rates of the worker and
    of the plain agent, measured a minute apart, see different loads. CPU per text does
    not depend on how much of a core the process got.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # After the command name: state is field 3, utime 14 and stime 15 (man 5 proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def inbound(
    i: int, body: str, at: str = "2026-11-24T20:00:00Z", message_id: str | None = None
) -> tuple[bytes, bytes]:
    number = phone(i)
    value = {
        "schema_version": 1,
        "message_id": message_id or f"bench-{i}-{body[:4]}",
        "from": number,
        "to": "87654",
        "body": body,
        "received_at": at,
    }
    return number.encode(), orjson.dumps(value)


async def _produce_all(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=k) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _stop_latency(
    s: Settings, inbound_topic: str, samples: int, result: RepliesResult
) -> None:
    """STOP from numbers that are subscribed and not opted out, one at a time, idle."""
    changelog = TopicRegistry(s)[Role.OPTOUTS_CHANGELOG].name
    # A short fetch wait: Tansu holds a fetch for the whole wait even when data is there.
    tail = AIOKafkaConsumer(
        bootstrap_servers=s.bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=5
    )
    await tail.start()
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers)
    await producer.start()
    try:
        tps = [TopicPartition(changelog, p) for p in range(s.partitions)]
        tail.assign(tps)
        await tail.seek_to_end(*tps)
        for i in range(samples):
            # Numbers that asked for STATUS in the backlog (i % 5 == 0): now they opt out.
            key, value = inbound(i * 5, "STOP", at="2026-11-24T21:00:00Z")
            want = orjson.dumps(key.decode())
            t0 = time.perf_counter()
            await producer.send_and_wait(inbound_topic, value, key=key)
            seen = False
            deadline = time.monotonic() + 30
            while not seen:
                batch = await tail.getmany(timeout_ms=50)
                seen = any(m.key == want for msgs in batch.values() for m in msgs)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"STOP {i}: no opt-out in the changelog after 30 s")
            result.stop_ms.append((time.perf_counter() - t0) * 1000)
    finally:
        await producer.stop()
        await tail.stop()


async def _plain_agent(s: Settings, n: int, workdir: Path) -> tuple[Measurement, float]:
    """A plain agent on a fresh topic: warm-up record, then the same burst of ``n``."""
    topic = f"{s.topic_prefix}plain-ceiling"
    marks_path = workdir / "plain.marks"
    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, s.partitions, 1)])
    finally:
        await admin.close()

    def read_marks() -> dict[int, float]:
        if not marks_path.exists():
            return {}
        lines = marks_path.read_text().splitlines()
        return {int(m["n"]): float(m["t"]) for m in map(orjson.loads, lines)}

    with (workdir / "plain.log").open("wb") as log:
        proc = spawn("bench.plain_agent", [topic, str(n + 1), str(marks_path)], s, log)
        try:

            async def until(mark: int) -> dict[int, float]:
                deadline = time.monotonic() + 600
                while mark not in (marks := read_marks()):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        tail = (workdir / "plain.log").read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"plain agent did not reach {mark}: {tail}")
                    await asyncio.sleep(0.05)
                return marks

            await _produce_all(s.bootstrap_servers or "", topic, [inbound(n + 1, "warm-up")])
            await until(1)
            cpu = cpu_seconds(proc.pid)
            await _produce_all(s.bootstrap_servers or "", topic, _burst(n))
            marks = await until(n + 1)
            cpu = cpu_seconds(proc.pid) - cpu
        finally:
            terminate(proc, grace=15)
    return Measurement("plain Faust agent, same records", n - 1, marks[n + 1] - marks[2]), cpu


def _burst(n: int) -> list[tuple[bytes, bytes]]:
    return [inbound(i, BODIES[i % len(BODIES)]) for i in range(n)]


async def replies_bench(
    bootstrap: str, kind: str, n: int, partitions: int, progress: Any, stop_samples: int = 50
) -> RepliesResult:
    result = RepliesResult(kind, n)
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="outage-sms-bench-") as tmp:
        s = bench_settings(bootstrap, kind, f"r{run}.", partitions, "rocksdb://", tmp)
        reg = TopicRegistry(s)
        await ensure_topics(s)
        progress(f"  preloading {n:,} customers ...")
        await preload(s, n + 1, progress)
        topic = reg[Role.INBOUND].name
        by_partition = [0] * partitions
        for i in range(n):
            by_partition[partition_of(phone(i), partitions)] += 1
        result.notes.append(f"texts per partition: {by_partition}")

        log = Path(tmp) / "worker.log"
        with log.open("wb") as out:
            proc = spawn_worker(s, out)
            try:
                commands = reg[Role.SEND_COMMANDS].name
                async with Offsets(bootstrap, commands, partitions, count=kind == "tansu") as off:
                    progress("  worker starting; warm-up text ...")
                    # Sent again until answered: a text that arrives while the worker
                    # recovers can be lost (see the module docstring). Only the first
                    # gets the menu; the others are "menu_recently_sent", no command.
                    for attempt in range(60):
                        warm = inbound(n, "warm-up", message_id=f"warm-{attempt}")
                        await _produce_all(bootstrap, topic, [warm])
                        with contextlib.suppress(TimeoutError):
                            await off.wait_for(1, timeout=10, poll=0.01)
                            break
                    base = await off.total()
                    progress(f"  a burst of {n:,} texts ...")
                    cpu = cpu_seconds(proc.pid)
                    await _produce_all(bootstrap, topic, _burst(n))
                    first = await off.wait_for(base + 1, timeout=600, poll=0.001)
                    last = await off.wait_for(base + n, timeout=1800, poll=0.01)
                    result.worker_cpu = cpu_seconds(proc.pid) - cpu
                    result.worker = Measurement(
                        "replies agent (outage-sms worker)", n - 1, last - first
                    )
                    progress(f"  {result.worker.rate:,.0f} texts/s; STOP latency ...")
                    await _stop_latency(s, topic, stop_samples, result)
            finally:
                code = terminate(proc, grace=30)
                if code not in (0, -15):
                    result.notes.append(f"worker exit {code}: {log.read_text()[-2000:]}")

        progress("  ceiling: a plain Faust agent given the same burst ...")
        result.plain, result.plain_cpu = await _plain_agent(s, n, Path(tmp))
        progress(f"  {result.plain.rate:,.0f} records/s")
    return result


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def render_replies(runs: list[RepliesResult]) -> list[str]:
    if not runs:
        return []
    lines = [
        "",
        "## Inbound replies (issue 4): one worker, a burst of texts",
        "",
        "Texts/s from the first reply command of a burst to the last, on a running worker, "
        "beside a plain Faust agent (`async for` and nothing else) given the same burst in "
        "the same run. STOP to "
        "effective: from producing a STOP to its opt-out record on the `optouts` changelog, "
        "one at a time at idle. Targets: >= 80% of the plain agent; STOP p99 < 1 s. "
        "CPU: each process's own CPU time (all threads) from producing its burst to its "
        "last record, per text; the share by CPU is the throughput ratio each would reach "
        "on a core of its own, which the wall-clock share on a loaded machine is not.",
        "",
        "| broker | texts | worker texts/s | plain agent/s | share | worker CPU/text "
        "| plain CPU/text | share by CPU | STOP p50 / p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        w = r.worker.rate if r.worker else 0.0
        p = r.plain.rate if r.plain else 0.0
        wc, pc = r.worker_cpu / r.texts * 1e6, r.plain_cpu / r.texts * 1e6
        lines.append(
            f"| {r.broker} | {r.texts:,} | {w:,.0f} | {p:,.0f} | {w / p if p else 0:.0%} "
            f"| {wc:,.0f} µs | {pc:,.0f} µs | {pc / wc if wc else 0:.0%} "
            f"| {statistics.median(r.stop_ms) if r.stop_ms else 0:,.0f} / "
            f"{_pct(r.stop_ms, 0.99):,.0f} ms |"
        )
    notes = [f"- {r.broker}: {n}" for r in runs for n in r.notes]
    if notes:
        lines += ["", *notes]
    return lines
