"""Fault scenario at full size: SIGKILL the worker in the middle of a 1,000,000-customer
fan-out, restart it, and count at the command level.

``tests/integration/test_crash_faults.py`` proves the same crash end to end (fake provider,
dispatcher, delivery statuses) with thousands of customers; a million texts cannot go
through a provider on this machine in a CI-sized time, so here the guarantee is checked
where the fan-out's part of it lives: on ``sms.send-commands``, every customer has exactly
one command id (re-emitted records of a command repeat its id, which the dispatcher's
ledger turns into a single send, as the test shows), and none is missing.

    python -m bench.faults [--customers 1000000] [--partitions 8] [--kill-at 0.3]

Apache Kafka only (started here unless KAFKA_BOOTSTRAP_SERVERS is set); the result goes to
``bench/results/faults.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from outage_sms.admin import ensure_topics
from outage_sms.brokers import start_broker, terminate
from topology.settings import Settings
from topology.topics import Role, TopicRegistry

from .fanout import Offsets, bench_settings, outage, preload, spawn

__all__ = ["KillResult", "kill_mid_fanout"]

RESULTS = Path(__file__).parent / "results" / "faults.md"


@dataclass
class KillResult:
    customers: int
    partitions: int
    store: str
    commands_at_kill: int = 0
    kill_after_s: float = 0.0
    restart_to_ready_s: float = 0.0
    restart_to_done_s: float = 0.0
    records: int = 0
    command_ids: int = 0
    recipients: int = 0
    ids_per_recipient_max: int = 0
    missing: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def re_emitted(self) -> int:
        return self.records - self.command_ids

    @property
    def ok(self) -> bool:
        return (
            self.command_ids == self.customers
            and self.recipients == self.customers
            and self.ids_per_recipient_max == 1
            and self.missing == 0
            and 0 < self.commands_at_kill < self.customers
        )


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def _await_log(path: Path, text: str, count: int, proc: Any, timeout: float) -> float:
    """Await ``count`` lines with ``text`` in ``path``; the time it took."""
    started = time.monotonic()
    while path.read_text(errors="replace").count(text) < count:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited ({proc.returncode}); see {path}")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"no {count}x {text!r} in {path} after {timeout:.0f}s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def _await_fanouts_committed(s: Settings, proc: Any, timeout: float) -> None:
    """Await the worker group committing every fan-out record: each partition's fan-out is
    done (by the first worker, if it finished that partition before the kill, or the
    second). Log lines would miss partitions the first worker finished and committed."""
    topic = TopicRegistry(s)[Role.OUTAGE_FANOUT].name
    tps = [TopicPartition(topic, p) for p in range(s.partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
    await admin.start()
    try:
        started = time.monotonic()
        while True:
            offsets = await admin.list_consumer_group_offsets(s.faust_id, partitions=tps)
            if all(offsets[tp].offset >= 1 for tp in tps):
                return
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited ({proc.returncode})")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"fan-outs not all committed after {timeout:.0f}s")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def _count_commands(s: Settings) -> tuple[int, Counter[str], int]:
    """Every record on sms.send-commands: (records, command ids per recipient, ids)."""
    topic = TopicRegistry(s)[Role.SEND_COMMANDS].name
    c = AIOKafkaConsumer(
        bootstrap_servers=s.bootstrap_servers,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await c.start()
    records = 0
    recipient: dict[str, str] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(s.partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        while [tp for tp, end in ends.items() if await c.position(tp) < end]:
            batch = await c.getmany(timeout_ms=1000, max_records=50_000)
            for msgs in batch.values():
                for m in msgs:
                    records += 1
                    cmd = orjson.loads(m.value or b"{}")
                    recipient[cmd["command_id"]] = cmd["to"]
    finally:
        await c.stop()
    return records, Counter(recipient.values()), len(recipient)


async def kill_mid_fanout(
    bootstrap: str, n: int, partitions: int, store: str, kill_at: float
) -> KillResult:
    result = KillResult(n, partitions, store)
    with tempfile.TemporaryDirectory(prefix="outage-sms-faults-") as tmp:
        s = bench_settings(bootstrap, "kafka", f"f{uuid.uuid4().hex[:8]}.", partitions, store, tmp)
        await ensure_topics(s)
        reg = TopicRegistry(s)
        progress(f"  preloading {n:,} customers")
        await preload(s, n, progress)
        logs = [Path(tmp) / "worker-1.log", Path(tmp) / "worker-2.log"]
        with logs[0].open("ab") as out:
            first = spawn("outage_sms", ["worker"], s, out)
        second = None
        try:
            progress("  worker 1 recovering its tables")
            await _await_log(logs[0], "Worker ready", 1, first, 1800)
            async with Offsets(bootstrap, reg[Role.SEND_COMMANDS].name, partitions, False) as cmds:
                producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
                await producer.start()
                try:
                    await producer.send_and_wait(
                        reg[Role.OUTAGE_EVENTS].name, outage("BIG", 1, ["R1"]), key=b"BIG"
                    )
                finally:
                    await producer.stop()
                sent = time.monotonic()
                while await cmds.total() < kill_at * n:
                    if time.monotonic() - sent > 600:
                        raise TimeoutError("the fan-out did not get going in 600 s")
                    await asyncio.sleep(0.01)
                os.kill(first.pid, signal.SIGKILL)
                first.wait(timeout=30)
                result.kill_after_s = time.monotonic() - sent
                result.commands_at_kill = await cmds.total()
            progress(f"  SIGKILL after {result.commands_at_kill:,} commands; restarting")
            restarted = time.monotonic()
            with logs[1].open("ab") as out:
                second = spawn("outage_sms", ["worker"], s, out)
            await _await_log(logs[1], "Worker ready", 1, second, 1800)
            result.restart_to_ready_s = time.monotonic() - restarted
            progress("  worker 2 ready; awaiting the fan-out of every partition")
            await _await_fanouts_committed(s, second, 1800)
            result.restart_to_done_s = time.monotonic() - restarted
        finally:
            for proc in (first, second):
                if proc is not None:
                    terminate(proc, grace=30)
        progress("  counting commands")
        records, per_recipient, ids = await _count_commands(s)
        result.records = records
        result.command_ids = ids
        result.recipients = len(per_recipient)
        result.ids_per_recipient_max = max(per_recipient.values(), default=0)
        result.missing = n - len(per_recipient)
    return result


def render(r: KillResult, broker: str) -> str:
    verdict = "PASS" if r.ok else "FAIL"
    return "\n".join(
        [
            "# Fault benchmark: worker SIGKILLed mid fan-out",
            "",
            f"`python -m bench.faults` on {broker}, 2 cores shared with other agents' work; "
            f"{r.customers:,} consenting customers in one region, {r.partitions} partitions, "
            f"store {r.store}.",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| commands on the topic when killed | {r.commands_at_kill:,} "
            f"({r.commands_at_kill / r.customers:.0%}), {r.kill_after_s:.1f} s after the event |",
            f"| restart to `Worker ready` (incl. the dead member's session) | "
            f"{r.restart_to_ready_s:.0f} s |",
            f"| restart to every partition's fan-out done | {r.restart_to_done_s:.0f} s |",
            f"| command records on sms.send-commands | {r.records:,} |",
            f"| distinct command ids | {r.command_ids:,} |",
            f"| re-emitted records (same id again) | {r.re_emitted:,} |",
            f"| customers with a command | {r.recipients:,} (missing {r.missing:,}) |",
            f"| most command ids for one customer | {r.ids_per_recipient_max} |",
            f"| **every customer exactly one command id** | **{verdict}** |",
            "",
            "Re-emitted records repeat an id the dispatcher's ledger already holds: it sends "
            "one text per id (tests/integration/test_crash_faults.py counts that at the fake "
            "provider).",
            *r.notes,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--store", default="rocksdb://")
    ap.add_argument("--kill-at", type=float, default=0.3, help="share of commands emitted")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if external else start_broker("kafka", progress=progress)
    try:
        bootstrap = external or (broker.bootstrap if broker else "")
        r = asyncio.run(
            kill_mid_fanout(bootstrap, args.customers, args.partitions, args.store, args.kill_at)
        )
    finally:
        if broker is not None:
            broker.stop()
    text = render(r, "Apache Kafka")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
