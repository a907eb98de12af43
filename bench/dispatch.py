"""Dispatcher throughput against the fake Genesys: achieved vs configured rate.

20 senders at 100 msg/s each (2,000 msg/s configured), a backlog of ``--seconds`` worth of
commands already queued, the fake provider and each dispatcher in their own processes.
Reports the aggregate rate between 10% and 90% of the backlog (the steady state), the
fake's rate-violation count, and the CPU each dispatcher process used.

    python -m bench.dispatch --broker tansu --dispatchers 1 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from outage_sms.admin import ensure_topics
from outage_sms.brokers import start_broker, terminate
from outage_sms.fastloop import run_fast
from streams.genesys import GenesysClient, GenesysConfig, make_http_client
from streams.provider import Accepted, OutboundMessage
from topology.emitter import BatchEmitter
from topology.settings import Settings
from topology.topics import Role, TopicRegistry
from topology.views import phone_partition

from .fanout import bench_settings, preload, spawn, worker_env

RESULTS = Path(__file__).parent / "results"


@dataclass
class LatencyResult:
    broker: str
    outages: int
    customers: int
    first_request: list[float]
    """Seconds from producing the outage event to the fake's first request for it."""


@dataclass
class DispatchResult:
    broker: str
    dispatchers: int
    senders: int
    rate: float
    commands: int
    achieved: float
    violations: int
    cpu_cores: list[float]
    seconds: float
    ceiling: float
    """Requests/s one process gets through GenesysClient to the same fake, no Kafka."""
    fake_cores: float = 0.0
    """CPU the fake provider used over the same steady state, in cores."""
    broker_cores: float = 0.0
    """CPU the broker used over the same steady state (0: not measured)."""

    @property
    def share(self) -> float:
        return self.achieved / (self.senders * self.rate)


def _sender(i: int) -> str:
    return f"+1415700{i:04d}"


def _commands(n: int, senders: int) -> list[tuple[str, bytes]]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        to = f"+1415{5000000 + i:07d}"
        out.append(
            (
                to,
                orjson.dumps(
                    {
                        "schema_version": 1,
                        "command_id": f"bench:{i}",
                        "kind": "alert",
                        "from": _sender(i % senders),
                        "to": to,
                        "body": "Outage Alerts: power out near you, ETA 3:30 PM. "
                        "Reply STOP to opt out",
                        "encoding": "gsm7",
                        "segments": 1,
                        "created_at": now.isoformat(),
                        "expires_at": (now + timedelta(hours=1)).isoformat(),
                    }
                ),
            )
        )
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(pid: int | None) -> float:
    """CPU of ``pid`` and its descendants (the broker may run under a launcher)."""
    if pid is None:
        return 0.0
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        one = todo.pop()
        try:
            total += _cpu_seconds(one)
        except OSError:
            continue
        todo += children.get(one, [])
    return total


async def run(
    bootstrap: str,
    kind: str,
    dispatchers: int,
    senders: int,
    rate: float,
    seconds: float,
    concurrency: int = 64,
    broker_pid: int | None = None,
) -> DispatchResult:
    tmp = tempfile.mkdtemp(prefix="bench-dispatch-")
    s: Settings = bench_settings(bootstrap, kind, f"b{uuid.uuid4().hex[:8]}.", 8, "memory://", tmp)
    pool = [
        {"id": _sender(i), "type": "short_code", "rate": rate, "countries": ["US"]}
        for i in range(senders)
    ]
    await ensure_topics(s)
    reg = TopicRegistry(s)
    n = int(senders * rate * seconds)
    emitter = BatchEmitter(bootstrap)
    for to, value in _commands(n, senders):
        await emitter.add(
            reg[Role.SEND_COMMANDS].name, phone_partition(to.encode(), 8), [(to.encode(), value)]
        )
    await emitter.stop()
    print(f"queued {n:,} commands for {senders} senders at {rate:g}/s", file=sys.stderr)

    fake_args = [sys.executable, "-m", "outage_sms.fake_provider", "--client-limit", "0"]
    for i in range(senders):
        fake_args += ["--sender", f"{_sender(i)}={rate}"]
    fake = subprocess.Popen(fake_args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert fake.stdout is not None  # noqa: S101
    url = fake.stdout.readline().decode().strip()
    top = await _ceiling(url, _sender(0), concurrency=concurrency)
    env = {
        **worker_env(s),
        "OUTAGE_SMS_SENDERS": orjson.dumps(pool).decode(),
        "OUTAGE_SMS_CLIENT_REQUESTS_PER_MINUTE": "10000000",
        "OUTAGE_SMS_DISPATCH_CONCURRENCY": str(concurrency),
        "OUTAGE_SMS_GENESYS_CLIENT_ID": "fake-client",
        "OUTAGE_SMS_GENESYS_CLIENT_SECRET": "fake-secret",
        "OUTAGE_SMS_GENESYS_API_URL": url,
    }
    logs = [Path(tmp) / f"dispatcher{i}.log" for i in range(dispatchers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "outage_sms", "dispatcher"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    samples: list[tuple[float, int]] = []
    cpu: dict[int, tuple[float, float]] = {}
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            # Stalled: no progress for two minutes (a shared machine may be slow, not stuck).
            deadline = time.monotonic() + 120
            while True:
                stats = (await client.get("/fake/stats")).json()
                now = time.monotonic()
                if not samples or stats["accepted"] > samples[-1][1]:
                    deadline = now + 120
                samples.append((now, stats["accepted"]))
                if stats["accepted"] >= 0.1 * n and not cpu:
                    cpu = {p.pid: (now, _cpu_seconds(p.pid)) for p in (*procs, fake)}
                    broker_at = _tree_cpu_seconds(broker_pid)
                if stats["accepted"] >= 0.9 * n and all(len(v) == 2 for v in cpu.values()):
                    used = [
                        (_cpu_seconds(p.pid) - cpu[p.pid][1]) / (now - cpu[p.pid][0]) for p in procs
                    ]
                    fake_used = (_cpu_seconds(fake.pid) - cpu[fake.pid][1]) / (
                        now - cpu[fake.pid][0]
                    )
                    broker_used = (_tree_cpu_seconds(broker_pid) - broker_at) / (
                        now - cpu[fake.pid][0]
                    )
                    break
                if now > deadline or any(p.poll() is not None for p in procs):
                    tails = "\n".join(log.read_text()[-2000:] for log in logs)
                    raise RuntimeError(f"dispatch bench stalled at {stats}:\n{tails}")
                await asyncio.sleep(0.25)
            violations = int(stats["violation_total"])
    finally:
        for p in procs:
            terminate(p, grace=30)
        terminate(fake, grace=5)
    start = next((t, a) for t, a in samples if a >= 0.1 * n)
    end = samples[-1]
    achieved = (end[1] - start[1]) / (end[0] - start[0])
    return DispatchResult(
        kind,
        dispatchers,
        senders,
        rate,
        n,
        achieved,
        violations,
        used,
        end[0] - start[0],
        top,
        fake_used,
        broker_used,
    )


def _genesys(url: str, pools: list[httpx.AsyncClient]) -> GenesysClient:
    config = GenesysConfig(
        client_id="fake-client",
        client_secret="fake-secret",  # noqa: S106 (the fake's test credential)
        api_base_url=url,
        login_base_url=url,
    )
    return GenesysClient(pools, config)


async def _ceiling(url: str, sender: str, n: int = 3000, concurrency: int = 64) -> float:
    """The HTTP path alone, as the dispatcher builds it (one pool, ``concurrency`` in
    flight)."""
    pools = [make_http_client(max_connections=concurrency)]
    try:
        client = _genesys(url, pools)
        msg = OutboundMessage("ceiling", sender, "+14155550100", "ceiling run")
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                assert isinstance(await client.send(msg), Accepted)  # noqa: S101

        await asyncio.gather(*(one() for _ in range(100)))
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        rate = n / (time.perf_counter() - started)
    finally:
        for pool in pools:
            await pool.aclose()
    async with httpx.AsyncClient(base_url=url) as control:
        await control.post("/fake/reset")  # the ceiling run broke the sender's rate
    return rate


def _outage_now(oid: str) -> bytes:
    now = datetime.now(UTC)
    return orjson.dumps(
        {
            "schema_version": 1,
            "outage_id": oid,
            "version": 1,
            "status": "detected",
            "severity": "service",
            "regions": ["R1"],
            "summary": "Storm damage to lines; crews are on the way",
            "eta": (now + timedelta(hours=3)).isoformat(),
            "status_url": "https://status.citypower.example/o/1",
            "occurred_at": now.isoformat(),
        }
    )


async def _log_line(path: Path, text: str, proc: subprocess.Popen[bytes], wait: float) -> None:
    deadline = time.monotonic() + wait
    while text not in path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no {text!r} in {path}:\n{path.read_text()[-3000:]}")
        await asyncio.sleep(0.05)


async def latency(bootstrap: str, kind: str, outages: int, customers: int) -> LatencyResult:
    """Outage event in, first provider request out: worker, dispatcher and fake running."""
    tmp = tempfile.mkdtemp(prefix="bench-latency-")
    s = bench_settings(bootstrap, kind, f"l{uuid.uuid4().hex[:8]}.", 8, "memory://", tmp)
    await ensure_topics(s)
    await preload(s, customers, lambda m: print(m, file=sys.stderr))
    fake = subprocess.Popen(
        [sys.executable, "-m", "outage_sms.fake_provider", "--client-limit", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert fake.stdout is not None  # noqa: S101
    url = fake.stdout.readline().decode().strip()
    worker_log, dispatcher_log = Path(tmp) / "worker.log", Path(tmp) / "dispatcher.log"
    worker = spawn("outage_sms", ["worker"], s, worker_log.open("wb"))
    dispatcher = subprocess.Popen(
        [sys.executable, "-m", "outage_sms", "dispatcher"],
        env={
            **worker_env(s),
            "OUTAGE_SMS_GENESYS_CLIENT_ID": "fake-client",
            "OUTAGE_SMS_GENESYS_CLIENT_SECRET": "fake-secret",
            "OUTAGE_SMS_GENESYS_API_URL": url,
            "OUTAGE_SMS_CLIENT_REQUESTS_PER_MINUTE": "1000000",
        },
        stdout=dispatcher_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    firsts: list[float] = []
    try:
        await _log_line(worker_log, "Worker ready", worker, 120)
        await _log_line(dispatcher_log, "dispatch partitions", dispatcher, 120)
        topic = TopicRegistry(s)[Role.OUTAGE_EVENTS].name
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            async with httpx.AsyncClient(base_url=url) as control:
                for i in range(outages):
                    before = (await control.get("/fake/stats")).json()["accepted"]
                    oid = f"LAT{i}"
                    started = time.monotonic()
                    await producer.send_and_wait(topic, _outage_now(oid), key=oid.encode())
                    deadline = started + 60
                    while (await control.get("/fake/stats")).json()["accepted"] <= before:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"no request for {oid} in 60s")
                        await asyncio.sleep(0.002)
                    firsts.append(time.monotonic() - started)
                    while (await control.get("/fake/stats")).json()[
                        "accepted"
                    ] < before + customers:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{oid} did not finish in 60s")
                        await asyncio.sleep(0.05)
        finally:
            await producer.stop()
    finally:
        terminate(dispatcher, grace=30)
        terminate(worker, grace=30)
        terminate(fake, grace=5)
    return LatencyResult(kind, outages, customers, firsts)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def render_latency(r: LatencyResult) -> list[str]:
    ms = [v * 1000 for v in r.first_request]
    return [
        "| broker | outages | customers each | first request p50 | p99 | max |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {r.broker} | {r.outages} | {r.customers} | {_pct(ms, 0.5):.0f} ms | "
        f"{_pct(ms, 0.99):.0f} ms | {max(ms):.0f} ms |",
    ]


def render(results: list[DispatchResult]) -> list[str]:
    lines = [
        "| broker | dispatchers | configured | achieved | share | violations "
        "| CPU per dispatcher | CPU per message: dispatchers / fake / broker "
        "| HTTP ceiling | of ceiling |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.broker} | {r.dispatchers} | {r.senders} x {r.rate:g}/s = "
            f"{r.senders * r.rate:,.0f}/s | {r.achieved:,.0f}/s | {r.share:.1%} | "
            f"{r.violations} | {', '.join(f'{c:.2f} cores' for c in r.cpu_cores)} | "
            f"{1000 * sum(r.cpu_cores) / r.achieved:.2f} / "
            f"{1000 * r.fake_cores / r.achieved:.2f} / "
            f"{1000 * r.broker_cores / r.achieved:.2f} ms | "
            f"{r.ceiling:,.0f}/s | {r.achieved / r.ceiling:.0%} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dispatch", description=__doc__)
    p.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    p.add_argument("--dispatchers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--senders", type=int, default=20)
    p.add_argument(
        "--rates", type=float, nargs="+", default=[100.0, 20.0], help="per sender, each a run"
    )
    p.add_argument("--seconds", type=float, default=20.0, help="backlog, in seconds of sending")
    p.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="provider requests in flight per dispatcher (OUTAGE_SMS_DISPATCH_CONCURRENCY), "
        "and in the HTTP ceiling run",
    )
    p.add_argument("--latency-outages", type=int, default=20, help="0 skips the latency run")
    p.add_argument("--out", type=Path, default=RESULTS / "dispatch.md")
    args = p.parse_args(argv)
    broker = start_broker(args.broker)
    results: list[DispatchResult] = []
    lat: LatencyResult | None = None
    try:
        for rate in args.rates:
            for d in args.dispatchers:
                r = run_fast(
                    run(
                        broker.bootstrap,
                        args.broker,
                        d,
                        args.senders,
                        rate,
                        args.seconds,
                        args.concurrency,
                        broker.process.pid if broker.process is not None else None,
                    )
                )
                print("\n".join(render([r])[2:]), file=sys.stderr)
                results.append(r)
        if args.latency_outages:
            lat = run_fast(latency(broker.bootstrap, args.broker, args.latency_outages, 50))
    finally:
        broker.stop()
    text = "\n".join(
        [
            "# Dispatcher: achieved vs configured rate (fake Genesys over loopback)",
            "",
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this machine (2 cores: the "
            "fake provider, the broker and the dispatchers share them). Steady state: "
            "between 10% and 90% of the backlog sent. HTTP ceiling: one process sending "
            "through the same GenesysClient to the same fake, without Kafka, in the same run. "
            f"{args.concurrency} provider requests in flight at most per dispatcher, and in "
            "the ceiling run. CPU per message: process CPU time over messages accepted by the "
            "fake in the steady state.",
            "",
            *render(results),
            "",
            "Outage event to the first provider request (worker, dispatcher and fake running; "
            "one short code at 100/s; each outage waits for the previous to finish):",
            "",
            *(render_latency(lat) if lat else ["(skipped)"]),
            "",
        ]
    )
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
